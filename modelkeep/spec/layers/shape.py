"""Layers that move, pad, repeat or rescale a sample without learning anything: ``Permute``,
``ZeroPadding1D/2D``, ``UpSampling1D/2D``, ``Rescaling``.

They let a spec take data laid out as another framework lays it out: a Keras
image is ``(H, W, C)``, so a model imported from Keras starts with
``Permute(dims=[2, 0, 1])`` to reach PyTorch's ``(C, H, W)``, and TensorFlow's
``padding="same"`` with a stride pads one pixel more on the bottom/right,
which ``ZeroPadding2D`` with ``[[top, bottom], [left, right]]`` expresses.
``Rescaling`` is the fixed ``x * scale + offset`` of input pipelines (Keras's
``Rescaling(1/255)`` and adapted ``Normalization``), kept in the spec.
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal, Union

from ..fields import Field
from ..kinds import Fields, LayerKind, Shape, as_tuple, register_kind

_AXES = {1: "(channels, length)", 2: "(channels, height, width)"}


@register_kind
class Permute(LayerKind):
    """Reorders the per-sample axes: ``dims=[2, 0, 1]`` turns ``(H, W, C)`` into ``(C, H, W)``.

    Axes count from 0 and exclude the batch (Keras's ``Permute`` counts from 1).
    """

    name = "Permute"
    examples = [{"inputs": [[4, 5, 3]], "fields": {"dims": [2, 0, 1]}},
                {"inputs": [[3, 7]], "fields": {"dims": [1, 0]}}]

    class Fields(Fields):
        dims: list[int] = Field(min_length=1)

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        dims = list(self.fields.dims)
        if sorted(dims) != list(range(len(shape))):
            raise self.shape_error(shape, f"{len(dims)} axes to reorder by dims={dims} (each of 0..{len(dims) - 1} "
                                          "once)")
        return tuple(shape[d] for d in dims)


class _ZeroPadding(LayerKind):
    rank: ClassVar[int]

    class Fields(Fields):
        padding: Union[int, list[int], list[list[int]]] = 1

    def pads(self) -> tuple[tuple[int, int], ...]:
        """``(before, after)`` per spatial axis, from an int, one int per axis, or ``[before, after]`` per axis."""
        pad = self.fields.padding
        try:
            if isinstance(pad, int):
                pairs = [(pad, pad)] * self.rank
            elif self.rank == 1 and len(pad) == 2 and all(isinstance(p, int) for p in pad):
                pairs = [(pad[0], pad[1])]  # Keras's ZeroPadding1D: (left, right)
            elif all(isinstance(p, int) for p in pad):
                pairs = [(p, p) for p in pad]
            else:
                pairs = [(int(a), int(b)) for a, b in pad]
        except (TypeError, ValueError):
            pairs = []
        if len(pairs) != self.rank or any(a < 0 or b < 0 for a, b in pairs):
            raise self.error(f"padding must be one non-negative integer, one per axis or [before, after] per axis "
                             f"({self.rank} axes), got {pad!r}")
        return tuple(pairs)

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        if len(shape) != self.rank + 1:
            raise self.shape_error(shape, _AXES[self.rank])
        pads = self.pads()
        return (shape[0], *(n + a + b for n, (a, b) in zip(shape[1:], pads)))


@register_kind
class ZeroPadding1D(_ZeroPadding):
    """Zeros before and after the length of ``(C, L)``: ``padding`` an int or ``[left, right]``."""

    name = "ZeroPadding1D"
    rank = 1
    examples = [{"inputs": [[2, 5]], "fields": {"padding": 2}}, {"inputs": [[2, 5]], "fields": {"padding": [0, 1]}}]


@register_kind
class ZeroPadding2D(_ZeroPadding):
    """Zeros around ``(C, H, W)``: ``padding`` an int, ``[h, w]`` or ``[[top, bottom], [left, right]]``."""

    name = "ZeroPadding2D"
    rank = 2
    examples = [{"inputs": [[2, 4, 5]], "fields": {"padding": 1}},
                {"inputs": [[2, 4, 5]], "fields": {"padding": [[0, 1], [0, 1]]}},
                {"inputs": [[1, 3, 3]], "fields": {"padding": [2, 1]}}]


@register_kind
class Rescaling(LayerKind):
    """``x * scale + offset``: numbers, or one value per feature of the last axis; nothing learned."""

    name = "Rescaling"
    examples = [{"inputs": [[3, 4, 2]], "fields": {"scale": 0.5, "offset": -1.0}},
                {"inputs": [[5, 3]], "fields": {"scale": [1.0, 2.0, 0.5], "offset": [0.0, -1.0, 1.0]}}]

    class Fields(Fields):
        scale: Union[float, list[float]] = 1.0
        offset: Union[float, list[float]] = 0.0

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        for key in ("scale", "offset"):
            value = getattr(self.fields, key)
            if isinstance(value, list) and len(value) not in (1, shape[-1]):
                raise self.shape_error(shape, f"a last axis of {len(value)} features to match the {key} values")
            values = value if isinstance(value, list) else [value]
            if not all(math.isfinite(v) for v in values):
                raise self.error(f"{key} must hold finite numbers")
        return shape


class _UpSampling(LayerKind):
    rank: ClassVar[int]

    class Fields(Fields):
        size: Union[int, list[int]] = 2
        interpolation: Literal["nearest", "linear"] = "nearest"

    def factors(self) -> tuple[int, ...]:
        try:
            factors = as_tuple(self.fields.size, self.rank)
        except Exception:
            factors = (0,)
        if len(factors) != self.rank or any(f < 1 for f in factors):
            raise self.error(f"size must be one positive integer or {self.rank}, got {self.fields.size!r}")
        return factors

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        if len(shape) != self.rank + 1:
            raise self.shape_error(shape, _AXES[self.rank])
        return (shape[0], *(n * f for n, f in zip(shape[1:], self.factors())))


@register_kind
class UpSampling1D(_UpSampling):
    """Repeats each step of ``(C, L)`` ``size`` times (``linear``: interpolates, half-pixel centres)."""

    name = "UpSampling1D"
    rank = 1
    examples = [{"inputs": [[2, 5]], "fields": {"size": 3}}]


@register_kind
class UpSampling2D(_UpSampling):
    """Enlarges ``(C, H, W)`` by whole factors: ``nearest`` repeats pixels, ``linear`` is bilinear (half-pixel)."""

    name = "UpSampling2D"
    rank = 2
    examples = [{"inputs": [[2, 3, 4]], "fields": {}},
                {"inputs": [[2, 3, 4]], "fields": {"size": [2, 3], "interpolation": "linear"}}]
