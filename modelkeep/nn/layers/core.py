"""Builders of Input, Dense, Flatten, Reshape, Dropout, Embedding and PositionalEmbedding."""
from __future__ import annotations

import torch.nn as nn

from ...spec.kinds import LayerKind, Shape
from ...spec.layers.core import Dense, Dropout, Embedding, PositionalEmbedding, Reshape
from ..activations import with_activation
from ..layer_builders import register_builder
from ..modules import PositionalEmbedding as PositionalEmbeddingModule
from ..modules import Reshape as ReshapeModule
from ..modules import TiedLinear


@register_builder("Input")
def build_input(kind: LayerKind, inputs: list[Shape]) -> nn.Module:
    return nn.Identity()


@register_builder("Dense")
def build_dense(kind: Dense, inputs: list[Shape]) -> nn.Module:
    f = kind.fields
    if f.tied_to:
        layer = TiedLinear(f.units, bias=f.use_bias)  # SpecModule ties it to the embedding once all are built
    else:
        layer = nn.Linear(inputs[0][-1], f.units, bias=f.use_bias)
    return with_activation(layer, f.activation)


@register_builder("Flatten")
def build_flatten(kind: LayerKind, inputs: list[Shape]) -> nn.Module:
    return nn.Flatten()


@register_builder("Reshape")
def build_reshape(kind: Reshape, inputs: list[Shape]) -> nn.Module:
    return ReshapeModule(kind.output_shape(inputs))


@register_builder("Dropout")
def build_dropout(kind: Dropout, inputs: list[Shape]) -> nn.Module:
    return nn.Dropout(kind.fields.rate)


@register_builder("Embedding")
def build_embedding(kind: Embedding, inputs: list[Shape]) -> nn.Module:
    f = kind.fields
    return nn.Embedding(f.num_embeddings, f.embedding_dim, padding_idx=f.padding_idx)


@register_builder("PositionalEmbedding")
def build_positional_embedding(kind: PositionalEmbedding, inputs: list[Shape]) -> nn.Module:
    return PositionalEmbeddingModule(kind.fields.max_length, inputs[0][-1])
