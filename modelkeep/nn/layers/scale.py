"""Builder of ``Multiply``: a product of inputs broadcast on the channel axis."""
from __future__ import annotations

import torch
import torch.nn as nn

from ...spec.kinds import LayerKind, Shape
from ..layer_builders import register_builder


class ChannelMultiply(nn.Module):
    """Multiplies ``(B, *shape)`` tensors after padding the shorter ones with trailing axes of size 1."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank  # per-sample axes of the output

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        total = None
        for x in xs:
            missing = self.rank + 1 - x.dim()
            if missing:
                x = x.reshape(*x.shape, *(1,) * missing)          # (B, C) -> (B, C, 1, 1)
            total = x if total is None else total * x
        return total


@register_builder("Multiply")
def build_multiply(kind: LayerKind, inputs: list[Shape]) -> nn.Module:
    return ChannelMultiply(max(len(shape) for shape in inputs))
