"""Steering vectors: the type, how to extract one, how to apply it."""

from .extract import extract, read_activations
from .hooks import SteerSpec, steer, steering
from .layers import default_layers, parse_layers
from .vector import SteeringVector

__all__ = ["SteeringVector", "SteerSpec", "default_layers", "extract", "parse_layers",
           "read_activations", "steer", "steering"]
