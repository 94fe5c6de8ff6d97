"""Typed configuration: every default lives in this package, every range is checked here.

Each stage takes one small frozen dataclass (`loop.py` for the steer-heal loop, `experiments.py`
for the related systems). `from_dict` rejects unknown keys so a typo in a config file is an
error, not a silently ignored setting.
"""

from .experiments import (
    CompareSettings,
    DiscoverConfig,
    IntrospectConfig,
    ResistConfig,
    ScoreConfig,
    WeightSteerConfig,
    WeightSteerRun,
)
from .loop import (
    CalibrateConfig,
    DoseConfig,
    EvalConfig,
    ExtractConfig,
    FilterConfig,
    GenerateConfig,
    HealConfig,
    RunConfig,
)
from .parse import ExtractMethod, Scope, from_dict

__all__ = [
    "CalibrateConfig",
    "CompareSettings",
    "DiscoverConfig",
    "DoseConfig",
    "EvalConfig",
    "ExtractConfig",
    "ExtractMethod",
    "FilterConfig",
    "GenerateConfig",
    "HealConfig",
    "IntrospectConfig",
    "ResistConfig",
    "RunConfig",
    "Scope",
    "ScoreConfig",
    "WeightSteerConfig",
    "WeightSteerRun",
    "from_dict",
]
