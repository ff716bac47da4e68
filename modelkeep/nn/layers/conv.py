"""Builders of ``Conv1D`` and ``Conv2D`` (``torch.nn.Conv1d``/``Conv2d``, then the optional activation)."""
from __future__ import annotations

import torch.nn as nn

from ...spec.kinds import Shape
from ...spec.layers.conv import Conv1D, Conv2D
from ..activations import with_activation
from ..layer_builders import register_builder


@register_builder("Conv1D", "Conv2D")
def build_conv(kind: Conv1D | Conv2D, inputs: list[Shape]) -> nn.Module:
    f = kind.fields
    cls = nn.Conv1d if kind.rank == 1 else nn.Conv2d
    layer = cls(
        inputs[0][0], f.filters, kind.per_axis("kernel_size"), stride=kind.per_axis("stride"),
        padding=kind.padding(), dilation=kind.per_axis("dilation"), groups=f.groups, bias=f.use_bias,
    )
    return with_activation(layer, f.activation)
