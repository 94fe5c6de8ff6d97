"""Sweeps: many steer-heal runs from one TOML file, executed as Ray tasks, compared in one table.

spec.py (the file format, expansion into runs), share.py (round-0 stage sharing between runs
that differ only in heal settings), runner.py (Ray execution, retry, resume), results.py (the
comparison table and plot).
"""

from .results import collect
from .runner import execute
from .spec import Sweep, SweepRun, load_sweep, parse_sweep

__all__ = ["Sweep", "SweepRun", "collect", "execute", "load_sweep", "parse_sweep"]
