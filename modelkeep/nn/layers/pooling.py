"""Builders of max and average pooling (1-D, 2-D), adaptive average and global average and maximum pooling."""
from __future__ import annotations

import torch
import torch.nn as nn

from ...spec.kinds import Shape, as_tuple
from ...spec.layers.pooling import AdaptiveAvgPool2D, GlobalAvgPool, GlobalMaxPool, MaxPool2D
from ..layer_builders import register_builder
from ..modules import GlobalAvgPool as GlobalAvgPoolModule


@register_builder("MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D")
def build_pool(kind: MaxPool2D, inputs: list[Shape]) -> nn.Module:
    kernel, stride, padding = kind.geometry()
    cls = getattr(nn, f"{kind.mode}Pool{kind.rank}d")  # MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d
    if kind.mode == "Avg":
        return cls(kernel, stride=stride, padding=padding, ceil_mode=kind.fields.ceil_mode,
                   count_include_pad=kind.fields.count_include_pad)
    return cls(kernel, stride=stride, padding=padding, ceil_mode=kind.fields.ceil_mode)


@register_builder("AdaptiveAvgPool2D")
def build_adaptive_avg_pool(kind: AdaptiveAvgPool2D, inputs: list[Shape]) -> nn.Module:
    return nn.AdaptiveAvgPool2d(as_tuple(kind.fields.output_size, 2))


def _reduced_axes(kind: GlobalAvgPool, inputs: list[Shape]) -> tuple[int, ...]:
    rank = len(inputs[0])
    # axes of the batched tensor (axis 0 is the batch) to average over
    if kind.fields.data_format == "channels_first":
        dims = tuple(range(2, rank + 1))
    else:
        dims = tuple(range(1, rank))
    return dims


@register_builder("GlobalAvgPool")
def build_global_avg_pool(kind: GlobalAvgPool, inputs: list[Shape]) -> nn.Module:
    return GlobalAvgPoolModule(_reduced_axes(kind, inputs))


class GlobalMaxPoolModule(nn.Module):
    """The maximum over ``dims`` of the batched tensor."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=self.dims)


@register_builder("GlobalMaxPool")
def build_global_max_pool(kind: GlobalMaxPool, inputs: list[Shape]) -> nn.Module:
    return GlobalMaxPoolModule(_reduced_axes(kind, inputs))
