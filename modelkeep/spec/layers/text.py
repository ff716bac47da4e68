"""What text encoders add to embeddings and attention: token types, pooling a sequence into one vector, L2 norm.

A BERT-family encoder is ``Embedding`` (words) + ``PositionalEmbedding`` +
``TokenTypeEmbedding`` -> ``LayerNorm`` -> post-norm ``TransformerEncoder``
blocks that read the token ids too (to mask padding) -> ``SequencePool``
(the first token, or the mean over the real tokens) -> optionally
``L2Normalize`` (sentence embeddings). Layers that take the token ids as a
second input ignore the positions holding ``pad_id``, so padding a sequence
never changes its result.
"""
from __future__ import annotations

from typing import Literal

from ..fields import Field
from ..kinds import Fields, KernelInitFields, LayerKind, ParameterGroup, Shape, register_kind


def _sequence_and_ids(kind: LayerKind, inputs: list[Shape], what: str) -> Shape:
    """The ``(T, D)`` first input, after checking that a second input holds ``T`` ids."""
    shape = inputs[0]
    if len(shape) != 2:
        raise kind.shape_error(shape, "(sequence length, features)")
    if len(inputs) == 2 and inputs[1] != shape[:1]:
        raise kind.shape_error(inputs, f"{what} of shape [{shape[0]}] (one per position) as the second input")
    return shape


@register_kind
class TokenTypeEmbedding(LayerKind):
    """Adds a learned vector per token type (segment) to a sequence ``(T, D)``: BERT's ``token_type_embeddings``.

    With a second input, the type ids ``(T,)``, each position gets the vector
    of its type; without it every position is of type 0 (one sentence).
    Holds ``num_types*D``.
    """

    name = "TokenTypeEmbedding"
    aliases = ("SegmentEmbedding",)
    arity = (1, 2)
    examples = [
        {"inputs": [[5, 4]], "fields": {"num_types": 2}},
        {"inputs": [[5, 4], [5]], "dtype": ["float32", "int64"], "fields": {"num_types": 5}},
    ]

    class Fields(KernelInitFields):
        num_types: int = Field(default=2, gt=0)

    def output_shape(self, inputs: list[Shape]) -> Shape:
        return _sequence_and_ids(self, inputs, "token type ids")

    def parameters(self, inputs: list[Shape]) -> list[ParameterGroup]:
        t, d = self.fields.num_types, inputs[0][-1]
        return [ParameterGroup(t * d, f"{t}*{d}")]


@register_kind
class SequencePool(LayerKind):
    """One vector from a sequence ``(T, D) -> (D,)``: the ``first`` position (BERT's [CLS]), the ``mean``, the ``max``.

    With the token ids ``(T,)`` as a second input, ``mean`` and ``max`` leave
    out the positions holding ``pad_id`` (sentence-transformers' pooling with
    its attention mask), so padding never changes the result.
    """

    name = "SequencePool"
    aliases = ("TokenPool",)
    arity = (1, 2)
    examples = [
        {"inputs": [[5, 4]], "fields": {"mode": "first"}},
        {"inputs": [[6, 4], [6]], "dtype": ["float32", "int64"], "fields": {"mode": "mean", "pad_id": 0}},
        {"inputs": [[6, 4], [6]], "dtype": ["float32", "int64"], "fields": {"mode": "max", "pad_id": 1}},
    ]

    class Fields(Fields):
        mode: Literal["first", "mean", "max"] = "mean"
        pad_id: int = 0

    def output_shape(self, inputs: list[Shape]) -> Shape:
        shape = _sequence_and_ids(self, inputs, "token ids")
        return (shape[1],)


@register_kind
class L2Normalize(LayerKind):
    """Divides each sample by its Euclidean norm over the last axis: unit-length embeddings (cosine similarity).

    ``x / max(||x||, epsilon)``, as ``torch.nn.functional.normalize`` and sentence-transformers' ``Normalize``.
    """

    name = "L2Normalize"
    aliases = ("Normalize", "UnitNormalize")
    examples = [{"inputs": [[6]], "fields": {}}, {"inputs": [[3, 4]], "fields": {"epsilon": 1e-6}}]

    class Fields(Fields):
        epsilon: float = Field(default=1e-12, gt=0.0)
