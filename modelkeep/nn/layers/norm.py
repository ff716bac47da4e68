"""Builders of batch norm (1-D, 2-D) and layer norm."""
from __future__ import annotations

import torch.nn as nn

from ...spec.kinds import Shape
from ...spec.layers.norm import BatchNorm1D, BatchNorm2D, LayerNorm
from ..layer_builders import register_builder


@register_builder("BatchNorm1D", "BatchNorm2D")
def build_batch_norm(kind: BatchNorm1D | BatchNorm2D, inputs: list[Shape]) -> nn.Module:
    f = kind.fields
    cls = nn.BatchNorm1d if kind.rank == 1 else nn.BatchNorm2d
    return cls(inputs[0][0], eps=f.epsilon, momentum=f.momentum, affine=f.affine,
               track_running_stats=f.track_running_stats)


@register_builder("LayerNorm")
def build_layer_norm(kind: LayerNorm, inputs: list[Shape]) -> nn.Module:
    f = kind.fields
    return nn.LayerNorm(inputs[0][-1], eps=f.epsilon, elementwise_affine=f.elementwise_affine, bias=f.use_bias)
