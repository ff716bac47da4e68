"""Normalisation: batch norm over channels (1-D, 2-D) and layer norm over the last axis.

Batch norm learns a scale and a shift per channel (``2*C`` parameters) and keeps
running mean and variance plus a step counter as buffers (``2*C+1``): saved with
the model, not trained by gradient, and reported apart from parameters.
"""
from __future__ import annotations

from typing import ClassVar

from ..fields import Field
from ..kinds import Fields, LayerKind, ParameterGroup, Shape, register_kind


class _BatchNorm(LayerKind):
    rank: ClassVar[int]
    accepts: ClassVar[tuple[int, ...]]
    expected: ClassVar[str]

    class Fields(Fields):
        momentum: float = Field(default=0.1, ge=0.0, le=1.0)
        epsilon: float = Field(default=1e-5, gt=0.0)
        affine: bool = True
        track_running_stats: bool = True

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        if len(shape) not in self.accepts:
            raise self.shape_error(shape, self.expected)
        return shape

    def parameters(self, inputs: list[Shape]) -> list[ParameterGroup]:
        c = inputs[0][0]
        return [ParameterGroup(2 * c, f"2*{c} (scale, shift)")] if self.fields.affine else []

    def buffers(self, inputs: list[Shape]) -> list[ParameterGroup]:
        c = inputs[0][0]
        if not self.fields.track_running_stats:
            return []
        return [ParameterGroup(2 * c + 1, f"2*{c}+1 (running mean, var, count)", trainable=False)]


@register_kind
class BatchNorm1D(_BatchNorm):
    """Batch norm over the channels of ``(C,)`` (after Dense) or ``(C, L)`` (after Conv1D)."""

    name = "BatchNorm1D"
    rank = 1
    accepts = (1, 2)
    expected = "(features,) or (channels, length)"
    examples = [{"inputs": [[6]], "fields": {}}, {"inputs": [[3, 5]], "fields": {"momentum": 0.01, "affine": False}}]


@register_kind
class BatchNorm2D(_BatchNorm):
    """Batch norm over the channels of ``(C, H, W)``."""

    name = "BatchNorm2D"
    aliases = ("BatchNorm",)
    rank = 2
    accepts = (3,)
    expected = "(channels, height, width)"
    examples = [{"inputs": [[3, 4, 4]], "fields": {"epsilon": 0.001}}]


@register_kind
class LayerNorm(LayerKind):
    """Normalises each sample over its last axis (Transformers); ``2*D`` parameters, no buffers."""

    name = "LayerNorm"
    examples = [{"inputs": [[4, 6]], "fields": {}}, {"inputs": [[6]], "fields": {"use_bias": False}}]

    class Fields(Fields):
        epsilon: float = Field(default=1e-5, gt=0.0)
        elementwise_affine: bool = True
        use_bias: bool = True

    def parameters(self, inputs: list[Shape]) -> list[ParameterGroup]:
        d = inputs[0][-1]
        if not self.fields.elementwise_affine:
            return []
        if self.fields.use_bias:
            return [ParameterGroup(2 * d, f"2*{d} (scale, shift)")]
        return [ParameterGroup(d, f"{d} (scale)")]
