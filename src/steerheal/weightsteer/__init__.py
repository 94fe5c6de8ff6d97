"""Weight steering (DESIGN.md section 9): dW = delta(theta+) - delta(theta-), applied as W + alpha * dW.

kinds     adapter types and their PEFT configs
train     persona samples -> two fine-tunes -> merged fp32 changes -> dW
delta     WeightDelta: storage (low-rank where exact), the in-place `applied` context manager
compare   base / prompt / activation vector / each dW at matched iso-KL, one table
pipeline  the train and compare jobs behind `steerheal weight-steer`
"""

from .delta import WeightDelta
from .kinds import KINDS, parse_kinds

__all__ = ["KINDS", "WeightDelta", "parse_kinds"]
