"""Pooling: max and average over windows (1-D, 2-D), adaptive average, and global average and maximum."""
from __future__ import annotations

from typing import ClassVar, Literal, Union

from ..kinds import Fields, LayerKind, Shape, as_tuple, register_kind

_AXES = {1: "(channels, length)", 2: "(channels, height, width)"}


class _Pool(LayerKind):
    rank: ClassVar[int]
    mode: ClassVar[str]

    class Fields(Fields):
        pool_size: Union[int, list[int]] = 2
        stride: Union[int, list[int], None] = None
        padding: Union[int, list[int]] = 0
        ceil_mode: bool = False
        count_include_pad: bool = True  # average pooling: divide by the whole window, padding included (PyTorch)

    def geometry(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """``(kernel, stride, padding)``, one integer per spatial axis each; stride defaults to the kernel."""
        try:
            k = as_tuple(self.fields.pool_size, self.rank)
            s = as_tuple(self.fields.stride, self.rank) if self.fields.stride is not None else k
            p = as_tuple(self.fields.padding, self.rank)
        except Exception:
            raise self.error(f"pool_size, stride and padding must be one integer or {self.rank}") from None
        if any(2 * pp > kk for pp, kk in zip(p, k)):
            raise self.error(f"padding {list(p)} must be at most half the pool size {list(k)} (PyTorch's rule)")
        return k, s, p

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        if len(shape) != self.rank + 1:
            raise self.shape_error(shape, _AXES[self.rank])
        k, s, p = self.geometry()
        out = []
        for n, kk, ss, pp in zip(shape[1:], k, s, p):
            length = n + 2 * pp - kk
            steps = -(-length // ss) if self.fields.ceil_mode else length // ss
            size = steps + 1
            if self.fields.ceil_mode and steps * ss >= n + pp:
                size -= 1  # PyTorch drops a last window that would start in the right padding
            out.append(size)
        if any(n <= 0 for n in out):
            raise self.shape_error(shape, f"spatial size of at least the pool size {'x'.join(map(str, k))}")
        return (shape[0], *out)


def _pool_kind(mode: str, rank: int) -> type[LayerKind]:
    shape = [3, 9] if rank == 1 else [3, 9, 7]

    class Pool(_Pool):
        name = f"{mode}Pool{rank}D"

    Pool.rank = rank
    Pool.mode = mode
    Pool.examples = [
        {"inputs": [shape], "fields": {}},
        {"inputs": [shape], "fields": {"pool_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}},
    ]
    if mode == "Avg":  # TensorFlow's padding="same": the padding is not counted
        Pool.examples.append({"inputs": [shape], "fields": {"pool_size": 3, "stride": 1, "padding": 1,
                                                            "count_include_pad": False}})
    Pool.__doc__ = f"{mode} pooling over {_AXES[rank]} windows; stride defaults to the pool size."
    Pool.__name__ = Pool.__qualname__ = Pool.name
    return register_kind(Pool)


MaxPool1D = _pool_kind("Max", 1)
MaxPool2D = _pool_kind("Max", 2)
AvgPool1D = _pool_kind("Avg", 1)
AvgPool2D = _pool_kind("Avg", 2)


@register_kind
class AdaptiveAvgPool2D(LayerKind):
    """Average pooling to a fixed ``output_size`` whatever H and W are (torchvision's ``avgpool``)."""

    name = "AdaptiveAvgPool2D"
    examples = [{"inputs": [[2, 5, 5]], "fields": {"output_size": 3}},
                {"inputs": [[2, 1, 1]], "fields": {"output_size": [2, 3]}}]

    class Fields(Fields):
        output_size: Union[int, list[int]] = 1

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        if len(shape) != 3:
            raise self.shape_error(shape, _AXES[2])
        size = as_tuple(self.fields.output_size, 2)
        if any(n <= 0 for n in size):
            raise self.error(f"output_size must be positive, got {self.fields.output_size}")
        return (shape[0], *size)


@register_kind
class GlobalAvgPool(LayerKind):
    """The mean over every axis but the features: ``(C, H, W) -> (C,)``, ``(C, L) -> (C,)``.

    With ``data_format="channels_last"`` the features are the last axis, as in
    sequences: ``(T, D) -> (D,)`` (mean over time, for Transformer classifiers).
    """

    name = "GlobalAvgPool"
    aliases = ("GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAveragePooling")
    examples = [{"inputs": [[3, 4, 5]], "fields": {}},
                {"inputs": [[6, 4]], "fields": {"data_format": "channels_last"}}]

    class Fields(Fields):
        data_format: Literal["channels_first", "channels_last"] = "channels_first"

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        if len(shape) < 2:
            raise self.shape_error(shape, "at least two axes (features and one axis to average over)")
        return (shape[0],) if self.fields.data_format == "channels_first" else (shape[-1],)


@register_kind
class GlobalMaxPool(GlobalAvgPool):
    """The maximum over every axis but the features: ``(C, H, W) -> (C,)``; ``channels_last``: ``(T, D) -> (D,)``."""

    name = "GlobalMaxPool"
    aliases = ("GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPooling")
    examples = [{"inputs": [[3, 4, 5]], "fields": {}},
                {"inputs": [[6, 4]], "fields": {"data_format": "channels_last"}}]
