"""Evaluation on moral-foundations vignettes (tiny-mfv) and paired statistics."""

from .mfv import EvalResult, evaluate, prompt_baseline
from .stats import compare, format_comparison, paired_bootstrap
from .vignettes import FOUNDATIONS, Vignette, load_dataset

__all__ = ["FOUNDATIONS", "EvalResult", "Vignette", "compare", "evaluate", "format_comparison",
           "load_dataset", "paired_bootstrap", "prompt_baseline"]
