"""The few ``torch.nn`` modules a spec needs that PyTorch does not ship in the right shape.

Each keeps PyTorch's own parameter names (an ``LSTM`` here has ``weight_ih_l0``
like ``torch.nn.LSTM``), so state dicts read like PyTorch's.
"""
from __future__ import annotations

import functools
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


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """``(B, T)`` True where ``tokens`` is ``pad_id``: the keys attention ignores.

    A row that is padding only keeps every key (it would otherwise attend to
    nothing and come out NaN); what its positions hold then does not matter.
    """
    mask = tokens == pad_id
    return mask & ~mask.all(dim=-1, keepdim=True)


def _attention_masks(x: torch.Tensor, tokens: torch.Tensor | None, pad_id: int,
                     causal: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(attention mask (T, T), key padding mask (B, T))``, both float when both are set (PyTorch wants one type)."""
    causal_mask = _causal_mask(x.shape[1], x.device).to(x.dtype) if causal else None
    padding = padding_mask(tokens, pad_id) if tokens is not None else None
    if padding is not None and causal_mask is not None:
        padding = torch.zeros(padding.shape, dtype=x.dtype, device=x.device).masked_fill(padding, float("-inf"))
    return causal_mask, padding


class SelfAttention(nn.MultiheadAttention):
    """``torch.nn.MultiheadAttention`` (batch first) with queries, keys and values all from one input.

    Called with token ids as well (``attention(x, tokens)``), keys whose token is ``pad_id`` are ignored.
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float, bias: bool, causal: bool,
                 pad_id: int = 0) -> None:
        super().__init__(dim, num_heads, dropout=dropout, bias=bias, batch_first=True)
        self.causal = causal
        self.pad_id = pad_id

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:  # (B, T, D), (B, T)
        mask, padding = _attention_masks(x, tokens, self.pad_id, self.causal)
        out, _ = super().forward(x, x, x, need_weights=False, attn_mask=mask, key_padding_mask=padding,
                                 is_causal=self.causal and padding is None)
        return out  # (B, T, D)


_FF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "silu": F.silu, "swish": F.silu,
                   "gelu_tanh": functools.partial(F.gelu, approximate="tanh")}


class TransformerBlock(nn.TransformerEncoderLayer):
    """``torch.nn.TransformerEncoderLayer`` (batch first) with an optional causal mask built per call.

    Called with token ids as well (``block(x, tokens)``), keys whose token is ``pad_id`` are ignored.
    """

    def __init__(self, dim: int, num_heads: int, ff_dim: int, *, dropout: float, activation: str,
                 norm_first: bool, causal: bool, eps: float, bias: bool, pad_id: int = 0) -> None:
        super().__init__(dim, num_heads, ff_dim, dropout=dropout, activation=_FF_ACTIVATIONS[activation],
                         layer_norm_eps=eps, batch_first=True, norm_first=norm_first, bias=bias)
        self.causal = causal
        self.pad_id = pad_id

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:  # (B, T, D), (B, T)
        mask, padding = _attention_masks(x, tokens, self.pad_id, self.causal)
        return super().forward(x, src_mask=mask, src_key_padding_mask=padding,
                               is_causal=self.causal and padding is None)
