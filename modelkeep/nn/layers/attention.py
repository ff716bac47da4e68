"""Builders of self-attention and the Transformer encoder block (modules in ``modelkeep.nn.modules``)."""
from __future__ import annotations

import torch.nn as nn

from ...spec.kinds import Shape
from ...spec.layers.attention import MultiHeadAttention, TransformerEncoder
from ..layer_builders import register_builder
from ..modules import SelfAttention, TransformerBlock


@register_builder("MultiHeadAttention")
def build_attention(kind: MultiHeadAttention, inputs: list[Shape]) -> nn.Module:
    f = kind.fields
    return SelfAttention(inputs[0][-1], f.num_heads, dropout=f.dropout, bias=f.use_bias, causal=f.causal,
                         pad_id=f.pad_id)


@register_builder("TransformerEncoder")
def build_transformer_block(kind: TransformerEncoder, inputs: list[Shape]) -> nn.Module:
    f = kind.fields
    d = inputs[0][-1]
    return TransformerBlock(d, f.num_heads, kind.ff_dim(d), dropout=f.dropout, activation=f.activation,
                            norm_first=f.norm_first, causal=f.causal, eps=f.epsilon, bias=f.use_bias,
                            pad_id=f.pad_id)
