"""What a network is: layers as validated data, their shapes and their parameter counts."""
from .initializers import INITIALIZERS
from .kinds import ACTIVATIONS, LAYER_KINDS, LayerKind, ParameterGroup, activation_of, register_kind
from .model import Layer, ModelSpec, load_spec
from .params import LayerCount, ParameterReport, count_parameters

__all__ = [
    "ACTIVATIONS", "INITIALIZERS", "LAYER_KINDS", "Layer", "LayerCount", "LayerKind", "ModelSpec",
    "ParameterGroup", "ParameterReport", "activation_of", "count_parameters", "load_spec", "register_kind",
]
