"""Builders (and the small modules) of token-type embeddings, sequence pooling and L2 normalisation."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...spec.kinds import Shape
from ...spec.layers.text import L2Normalize, SequencePool, TokenTypeEmbedding
from ..layer_builders import register_builder


class TokenTypeEmbeddingModule(nn.Module):
    """``x + weight[type_ids]``; without type ids every position is of type 0."""

    def __init__(self, num_types: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_types, dim))
        nn.init.normal_(self.weight)

    def forward(self, x: torch.Tensor, type_ids: torch.Tensor | None = None) -> torch.Tensor:  # (B, T, D), (B, T)
        if type_ids is None:
            return x + self.weight[0]
        return x + F.embedding(type_ids, self.weight)  # (B, T, D)


class SequencePoolModule(nn.Module):
    """``(B, T, D) -> (B, D)``: the first position, or the mean or max over the positions that are not padding."""

    def __init__(self, mode: str, pad_id: int) -> None:
        super().__init__()
        self.mode = mode
        self.pad_id = pad_id

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "first":
            return x[:, 0]  # (B, D)
        if tokens is None:
            return x.mean(dim=1) if self.mode == "mean" else x.amax(dim=1)
        keep = (tokens != self.pad_id).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        if self.mode == "mean":
            # sentence-transformers' formula: the sum over real tokens / their count (at least 1e-9)
            return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1e-9)
        return x.masked_fill(keep == 0, -1e9).amax(dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, pad_id={self.pad_id}"


class L2NormalizeModule(nn.Module):
    def __init__(self, epsilon: float) -> None:
        super().__init__()
        self.epsilon = epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=-1, eps=self.epsilon)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"


@register_builder("TokenTypeEmbedding")
def build_token_type_embedding(kind: TokenTypeEmbedding, inputs: list[Shape]) -> nn.Module:
    return TokenTypeEmbeddingModule(kind.fields.num_types, inputs[0][-1])


@register_builder("SequencePool")
def build_sequence_pool(kind: SequencePool, inputs: list[Shape]) -> nn.Module:
    return SequencePoolModule(kind.fields.mode, kind.fields.pad_id)


@register_builder("L2Normalize")
def build_l2_normalize(kind: L2Normalize, inputs: list[Shape]) -> nn.Module:
    return L2NormalizeModule(kind.fields.epsilon)
