"""Builders of the layers that join branches: ``Add`` and ``Concatenate``."""
from __future__ import annotations

import torch.nn as nn

from ...spec.kinds import LayerKind, Shape
from ...spec.layers.merge import Concatenate
from ..layer_builders import register_builder
from ..modules import Add as AddModule
from ..modules import Concatenate as ConcatenateModule


@register_builder("Add")
def build_add(kind: LayerKind, inputs: list[Shape]) -> nn.Module:
    return AddModule()


@register_builder("Concatenate")
def build_concatenate(kind: Concatenate, inputs: list[Shape]) -> nn.Module:
    return ConcatenateModule(kind.axis(len(inputs[0])) + 1)  # + 1: the batch axis
