"""Builders of the activation kinds: ``Activation`` and the shorthands (``ReLU``, ``GELU``, ...)."""
from __future__ import annotations

import torch.nn as nn

from ...spec.kinds import Shape
from ...spec.layers.activation import SHORTHANDS, Activation, ActivationShorthand
from ..activations import activation_module
from ..layer_builders import register_builder


@register_builder("Activation")
def build_activation(kind: Activation, inputs: list[Shape]) -> nn.Module:
    args = {} if kind.fields.alpha is None else {"alpha": kind.fields.alpha}
    return activation_module(kind.fields.function, **args)


@register_builder(*(name for name, _function, _aliases in SHORTHANDS))
def build_shorthand(kind: ActivationShorthand, inputs: list[Shape]) -> nn.Module:
    return activation_module(kind.function)
