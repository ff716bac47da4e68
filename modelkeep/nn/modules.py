"""The few ``torch.nn`` modules a spec needs that PyTorch does not ship in the right shape.

Each keeps PyTorch's own parameter names (an ``LSTM`` here has ``weight_ih_l0``
like ``torch.nn.LSTM``), so state dicts read like PyTorch's.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


class Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)  # (B, *shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class GlobalAvgPool(nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims)  # (B, C)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total


class Concatenate(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class PositionalEmbedding(nn.Module):
    """Adds a learned vector per position: ``x + weight[:T]``."""

    def __init__(self, max_length: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_length, dim))
        nn.init.normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.shape[1]]  # (B, T, D)


class TiedLinear(nn.Module):
    """A linear layer whose weight is another layer's (an ``Embedding``'s), bound after building.

    The weight is not registered here, so it is stored and counted once, at its owner.
    """

    def __init__(self, out_features: int, *, bias: bool = True) -> None:
        super().__init__()
        self.out_features = out_features
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._owner: list[nn.Module] = []  # a list, so that nn.Module does not register the owner twice

    def tie(self, owner: nn.Module) -> None:
        self._owner[:] = [owner]

    @property
    def weight(self) -> torch.Tensor:
        if not self._owner:
            raise RuntimeError("TiedLinear used before tie(); build it through modelkeep.build")
        return self._owner[0].weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}, bias={self.bias is not None}, weight=tied"


def _last_state(h_n: torch.Tensor, directions: int) -> torch.Tensor:
    # h_n: (layers*directions, B, H); the last layer's directions, joined on features
    if directions == 2:
        return torch.cat([h_n[-2], h_n[-1]], dim=-1)  # (B, 2H)
    return h_n[-1]  # (B, H)


class LSTM(nn.LSTM):
    """``torch.nn.LSTM`` (batch first) that returns one tensor: every step, or the last state."""

    def __init__(self, *args: Any, return_sequences: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.return_sequences = return_sequences

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, F)
        out, (h_n, _) = super().forward(x)
        if self.return_sequences:
            return out  # (B, T, H*directions)
        return _last_state(h_n, 2 if self.bidirectional else 1)


class GRU(nn.GRU):
    """``torch.nn.GRU`` (batch first) that returns one tensor: every step, or the last state."""

    def __init__(self, *args: Any, return_sequences: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.return_sequences = return_sequences

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, F)
        out, h_n = super().forward(x)
        if self.return_sequences:
            return out
        return _last_state(h_n, 2 if self.bidirectional else 1)


def _causal_mask(length: int, device: torch.device) -> torch.Tensor:
    return torch.nn.Transformer.generate_square_subsequent_mask(length, device=device)  # (T, T)


class SelfAttention(nn.MultiheadAttention):
    """``torch.nn.MultiheadAttention`` (batch first) with queries, keys and values all from one input."""

    def __init__(self, dim: int, num_heads: int, *, dropout: float, bias: bool, causal: bool) -> None:
        super().__init__(dim, num_heads, dropout=dropout, bias=bias, batch_first=True)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        mask = _causal_mask(x.shape[1], x.device) if self.causal else None
        out, _ = super().forward(x, x, x, need_weights=False, attn_mask=mask, is_causal=self.causal)
        return out  # (B, T, D)


_FF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "silu": F.silu, "swish": F.silu}


class TransformerBlock(nn.TransformerEncoderLayer):
    """``torch.nn.TransformerEncoderLayer`` (batch first) with an optional causal mask built per call."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int, *, dropout: float, activation: str,
                 norm_first: bool, causal: bool, eps: float, bias: bool) -> None:
        super().__init__(dim, num_heads, ff_dim, dropout=dropout, activation=_FF_ACTIVATIONS[activation],
                         layer_norm_eps=eps, batch_first=True, norm_first=norm_first, bias=bias)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        if self.causal:
            return super().forward(x, src_mask=_causal_mask(x.shape[1], x.device), is_causal=True)
        return super().forward(x)
