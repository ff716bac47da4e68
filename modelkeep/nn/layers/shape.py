"""Builders of ``Permute``, ``ZeroPadding1D/2D``, ``UpSampling1D/2D`` and ``Rescaling``."""
from __future__ import annotations

import torch
import torch.nn as nn

from ...spec.kinds import Shape
from ...spec.layers.shape import Permute, Rescaling, UpSampling2D, ZeroPadding1D, ZeroPadding2D
from ..layer_builders import register_builder


class PermuteModule(nn.Module):
    """``x.permute`` of the per-sample axes (the batch axis stays first)."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = (0, *(d + 1 for d in dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.dims).contiguous()

    def extra_repr(self) -> str:
        return f"dims={self.dims[1:]}"


@register_builder("Permute")
def build_permute(kind: Permute, inputs: list[Shape]) -> nn.Module:
    kind.output_shape(inputs)  # checks dims against the input's axes
    return PermuteModule(tuple(kind.fields.dims))


@register_builder("ZeroPadding1D", "ZeroPadding2D")
def build_zero_padding(kind: ZeroPadding1D | ZeroPadding2D, inputs: list[Shape]) -> nn.Module:
    pads = kind.pads()
    flat: list[int] = []
    for before, after in reversed(pads):  # torch pads the last axis first
        flat.extend((before, after))
    return nn.ConstantPad1d(tuple(flat), 0.0) if kind.rank == 1 else nn.ZeroPad2d(tuple(flat))


class RescalingModule(nn.Module):
    """``x * scale + offset`` over the last axis; the constants live in the spec, not in tensors or buffers."""

    def __init__(self, scale: float | list[float], offset: float | list[float]) -> None:
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            x = x.float()  # pixel values as integers: rescaled to floats, as Keras's Rescaling does
        scale = torch.as_tensor(self.scale, dtype=x.dtype, device=x.device)
        offset = torch.as_tensor(self.offset, dtype=x.dtype, device=x.device)
        return x * scale + offset

    def extra_repr(self) -> str:
        return f"scale={self.scale}, offset={self.offset}"


@register_builder("Rescaling")
def build_rescaling(kind: Rescaling, inputs: list[Shape]) -> nn.Module:
    return RescalingModule(kind.fields.scale, kind.fields.offset)


@register_builder("UpSampling1D", "UpSampling2D")
def build_up_sampling(kind: UpSampling2D, inputs: list[Shape]) -> nn.Module:
    factors = tuple(float(f) for f in kind.factors())
    if kind.fields.interpolation == "nearest":
        return nn.Upsample(scale_factor=factors, mode="nearest")
    return nn.Upsample(scale_factor=factors, mode="linear" if kind.rank == 1 else "bilinear", align_corners=False)
