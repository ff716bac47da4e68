"""Input, Dense, Flatten, Reshape, Dropout, Embedding and learned positional embeddings."""
from __future__ import annotations

import math
from typing import Literal, Optional

from ..fields import Field, model_validator
from ..kinds import (
    ActivationField, Fields, KernelInitFields, LayerKind, ParameterGroup, Shape, WeightInitFields, register_kind,
)


@register_kind
class Input(LayerKind):
    """Where data enters: ``{"kind": "Input", "shape": [3, 32, 32]}`` (per sample, no batch axis)."""

    name = "Input"
    arity = 0
    examples = [{"inputs": [], "fields": {"shape": [4, 5]}}]

    class Fields(Fields):
        shape: list[int] = Field(min_length=1)
        dtype: Literal["float32", "float64", "int64"] = "float32"

    def output_shape(self, inputs: list[Shape]) -> Shape:
        if any(d <= 0 for d in self.fields.shape):
            raise self.error(f"every dimension of 'shape' must be positive, got {self.fields.shape}")
        return tuple(self.fields.shape)


@register_kind
class Dense(LayerKind):
    """Fully connected layer over the last axis: ``y = x W^T + b``.

    ``tied_to`` names an ``Embedding`` layer whose weight this layer reuses
    (the tied input/output embeddings of language models); the weight is then
    counted once, at the embedding.
    """

    name = "Dense"
    aliases = ("Linear",)
    examples = [
        {"inputs": [[6]], "fields": {"units": 4, "activation": "relu"}},
        {"inputs": [[3, 6]], "fields": {"units": 5, "use_bias": False, "kernel_initializer": "glorot_uniform"}},
    ]

    class Fields(ActivationField, WeightInitFields):
        units: int = Field(gt=0)
        use_bias: bool = True
        tied_to: Optional[str] = None

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        return (*shape[:-1], self.fields.units)

    def parameters(self, inputs: list[Shape]) -> list[ParameterGroup]:
        n, m = inputs[0][-1], self.fields.units
        bias = self.fields.use_bias
        if self.fields.tied_to:
            tied = f"weight tied to {self.fields.tied_to!r}"
            return [ParameterGroup(m, f"{m} ({tied})")] if bias else [ParameterGroup(0, f"0 ({tied})")]
        if bias:
            return [ParameterGroup(n * m + m, f"{n}*{m}+{m}")]
        return [ParameterGroup(n * m, f"{n}*{m}")]

    def check_links(self, kinds: dict[str, LayerKind], shapes: dict[str, Shape], inputs: list[Shape]) -> None:
        target = self.fields.tied_to
        if target is None:
            return
        other = kinds.get(target)
        if other is None or other.name != "Embedding":
            raise self.error(f"tied_to={target!r} must name an Embedding layer; layers are {list(kinds)}")
        wanted = (other.fields.num_embeddings, other.fields.embedding_dim)
        mine = (self.fields.units, inputs[0][-1])
        if wanted != mine:
            raise self.error(
                f"tied_to={target!r} needs units={wanted[0]} and input features {wanted[1]} to reuse its "
                f"{wanted[0]}x{wanted[1]} weight; this layer has units={mine[0]} and {mine[1]} input features"
            )


@register_kind
class Flatten(LayerKind):
    """Every axis of a sample into one: ``(C, H, W) -> (C*H*W,)``."""

    name = "Flatten"
    examples = [{"inputs": [[2, 3, 4]], "fields": {}}]

    def output_shape(self, inputs: list[Shape]) -> Shape:
        return (math.prod(inputs[0]),)


@register_kind
class Reshape(LayerKind):
    """A new per-sample shape with the same number of elements; one axis may be -1 (inferred)."""

    name = "Reshape"
    examples = [{"inputs": [[12]], "fields": {"shape": [3, -1]}}]

    class Fields(Fields):
        shape: list[int] = Field(min_length=1)

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        target = list(self.fields.shape)
        total = math.prod(shape)
        if target.count(-1) > 1 or any(d == 0 or d < -1 for d in target):
            raise self.error(f"shape {target} may hold positive sizes and at most one -1")
        known = math.prod(d for d in target if d != -1)
        if -1 in target:
            if total % known:
                raise self.shape_error(shape, f"a number of elements divisible by {known} to reshape to {target}")
            target[target.index(-1)] = total // known
        elif known != total:
            raise self.shape_error(shape, f"{known} elements to reshape to {target}, got {total}")
        return tuple(target)


@register_kind
class Dropout(LayerKind):
    """Zeroes each element with probability ``rate`` during training."""

    name = "Dropout"
    examples = [{"inputs": [[8]], "fields": {"rate": 0.5}}]

    class Fields(Fields):
        rate: float = Field(ge=0.0, lt=1.0)


@register_kind
class Embedding(LayerKind):
    """Token ids ``(T,)`` to vectors ``(T, embedding_dim)``; a lookup table of ``num_embeddings`` rows."""

    name = "Embedding"
    examples = [{"inputs": [[7]], "dtype": "int64", "fields": {"num_embeddings": 20, "embedding_dim": 4}}]

    class Fields(KernelInitFields):
        num_embeddings: int = Field(gt=0)
        embedding_dim: int = Field(gt=0)
        padding_idx: Optional[int] = None
        @model_validator(mode="after")
        def _padding_in_range(self) -> "Embedding.Fields":
            if self.padding_idx is not None and not 0 <= self.padding_idx < self.num_embeddings:
                raise ValueError(f"padding_idx must be in [0, {self.num_embeddings}), got {self.padding_idx}")
            return self

    def output_shape(self, inputs: list[Shape]) -> Shape:
        return (*inputs[0], self.fields.embedding_dim)

    def parameters(self, inputs: list[Shape]) -> list[ParameterGroup]:
        v, d = self.fields.num_embeddings, self.fields.embedding_dim
        return [ParameterGroup(v * d, f"{v}*{d}")]


@register_kind
class PositionalEmbedding(LayerKind):
    """Adds a learned vector per position to a sequence ``(T, D)``: GPT's ``wpe``. Holds ``max_length*D``."""

    name = "PositionalEmbedding"
    examples = [{"inputs": [[5, 4]], "fields": {"max_length": 8}}]

    class Fields(KernelInitFields):
        max_length: int = Field(gt=0)
    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        if len(shape) != 2:
            raise self.shape_error(shape, "(sequence length, features)")
        if shape[0] > self.fields.max_length:
            raise self.shape_error(shape, f"a sequence of at most max_length={self.fields.max_length} positions")
        return shape

    def parameters(self, inputs: list[Shape]) -> list[ParameterGroup]:
        t, d = self.fields.max_length, inputs[0][-1]
        return [ParameterGroup(t * d, f"{t}*{d}")]
