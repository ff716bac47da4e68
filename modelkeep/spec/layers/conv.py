"""Convolutions over ``(C, L)`` and ``(C, H, W)``: stride, padding (``"same"`` included), dilation, groups."""
from __future__ import annotations

from typing import ClassVar, Literal, Union

from ..fields import Field
from ..kinds import (
    ActivationField, LayerKind, ParameterGroup, Shape, WeightInitFields, as_tuple, conv_length, register_kind,
)

_AXES = {1: "(channels, length)", 2: "(channels, height, width)"}


class _Conv(LayerKind):
    rank: ClassVar[int]

    class Fields(ActivationField, WeightInitFields):
        filters: int = Field(gt=0)
        kernel_size: Union[int, list[int]] = 3
        stride: Union[int, list[int]] = 1
        padding: Union[Literal["valid", "same"], int, list[int]] = "valid"
        dilation: Union[int, list[int]] = 1
        groups: int = Field(default=1, gt=0)
        use_bias: bool = True

    def per_axis(self, field: str) -> tuple[int, ...]:
        """``field`` as one integer per spatial axis (``kernel_size=3`` of a Conv2D is ``(3, 3)``)."""
        try:
            return as_tuple(getattr(self.fields, field), self.rank)
        except Exception:
            raise self.error(f"{field} must be one integer or {self.rank}, got {getattr(self.fields, field)!r}") from None

    def padding(self) -> tuple[int, ...] | str:
        """Padding as one integer per spatial axis, or ``"same"`` (PyTorch's own argument)."""
        pad = self.fields.padding
        if pad == "valid":
            return (0,) * self.rank
        if pad == "same":
            return "same"
        return self.per_axis("padding")

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        if len(shape) != self.rank + 1:
            raise self.shape_error(shape, _AXES[self.rank])
        f = self.fields
        channels, sizes = shape[0], shape[1:]
        if channels % f.groups or f.filters % f.groups:
            raise self.shape_error(
                shape, f"input channels ({channels}) and filters ({f.filters}) both divisible by groups={f.groups}"
            )
        kernel, stride, dilation = self.per_axis("kernel_size"), self.per_axis("stride"), self.per_axis("dilation")
        pad = self.padding()
        if pad == "same":
            if any(s != 1 for s in stride):
                raise self.error(f"padding='same' needs stride 1 (PyTorch's rule), got stride={f.stride}; "
                                 "give the padding as a number instead")
            return (f.filters, *sizes)
        out = tuple(conv_length(n, k, s, p, d) for n, k, s, p, d in zip(sizes, kernel, stride, pad, dilation))
        if any(n <= 0 for n in out):
            kernel_text = "x".join(map(str, kernel))
            raise self.shape_error(shape, f"spatial size large enough for kernel {kernel_text} (dilation {f.dilation}, "
                                          f"padding {f.padding}); the output would be {list(out)}")
        return (f.filters, *out)

    def parameters(self, inputs: list[Shape]) -> list[ParameterGroup]:
        cin = inputs[0][0]
        f = self.fields
        kernel = self.per_axis("kernel_size")
        weights = 1
        for k in kernel:
            weights *= k
        weights *= (cin // f.groups) * f.filters
        cin_text = f"{cin}/{f.groups}" if f.groups > 1 else f"{cin}"
        formula = "*".join(map(str, kernel)) + f"*{cin_text}*{f.filters}"
        if f.use_bias:
            return [ParameterGroup(weights + f.filters, f"{formula}+{f.filters}")]
        return [ParameterGroup(weights, formula)]


@register_kind
class Conv1D(_Conv):
    """1-D convolution over ``(C, L)``."""

    name = "Conv1D"
    rank = 1
    examples = [
        {"inputs": [[4, 16]], "fields": {"filters": 6, "kernel_size": 3, "stride": 2, "padding": 1}},
        {"inputs": [[4, 10]], "fields": {"filters": 8, "kernel_size": 3, "padding": "same", "dilation": 2,
                                         "groups": 2, "use_bias": False, "activation": "gelu"}},
    ]


@register_kind
class Conv2D(_Conv):
    """2-D convolution over ``(C, H, W)``; ``padding="same"`` keeps H and W (stride 1 only)."""

    name = "Conv2D"
    rank = 2
    examples = [
        {"inputs": [[3, 9, 9]], "fields": {"filters": 4, "kernel_size": 3, "stride": 2, "padding": 1,
                                           "activation": "relu", "kernel_initializer": "he_normal",
                                           "bias_initializer": "zeros"}},
        {"inputs": [[4, 8, 8]], "fields": {"filters": 4, "kernel_size": [3, 1], "padding": "same", "groups": 4,
                                           "use_bias": False}},
        {"inputs": [[2, 12, 12]], "fields": {"filters": 3, "kernel_size": 3, "dilation": 2}},
    ]
