"""steerheal: steer language models, then heal the steering into weights."""

from .config import CalibrateConfig, ExtractConfig, GenerateConfig
from .errors import SteerhealError
from .models import LoadedModel, load_model
from .steering import SteeringVector, SteerSpec, extract, steer, steering

__version__ = "0.1.0"

__all__ = ["CalibrateConfig", "ExtractConfig", "GenerateConfig", "LoadedModel", "SteerSpec",
           "SteeringVector", "SteerhealError", "extract", "load_model", "steer", "steering"]
