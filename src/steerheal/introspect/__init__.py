"""Gradient awareness (DESIGN.md section 9, seed 004): can a model report what it is being corrected on?

`topics` loads the project's topic set; `gradients` takes the activation gradient of a
correction loss and injects vectors per row; `projector` trains the optional map from
gradients to injections; `experiment` runs the trials and controls and writes the table.
"""

from .experiment import run_introspect
from .topics import load_topics

__all__ = ["load_topics", "run_introspect"]
