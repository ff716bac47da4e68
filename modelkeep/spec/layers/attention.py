"""Multi-head self-attention and the Transformer encoder block, over sequences ``(T, D)``.

Self-attention projects the input to queries, keys and values and back out:
four ``D x D`` matrices and four bias vectors, ``4*(D*D+D)`` parameters,
whatever the number of heads. The encoder block adds a feed-forward network
(``D*F+F + F*D+D``) and two layer norms (``2*2*D``). ``causal=True`` lets each
position attend only to itself and earlier positions (GPT-style decoders).

A second input, the token ids ``(T,)`` the sequence came from, masks padding:
no position attends to a key whose token is ``pad_id`` (BERT's attention
mask, derived from the ids), so a padded sequence gives its real positions the
same values as the unpadded one.
"""
from __future__ import annotations

from typing import Literal, Optional

from ..fields import Field
from ..kinds import LayerKind, ParameterGroup, Shape, WeightInitFields, register_kind


class _SelfAttention(LayerKind):
    arity = (1, 2)  # the sequence, and optionally the token ids whose padding it masks

    def _check(self, inputs: list[Shape]) -> int:
        shape = inputs[0]
        if len(shape) != 2:
            raise self.shape_error(shape, "(sequence length, model width)")
        if len(inputs) == 2 and inputs[1] != shape[:1]:
            raise self.shape_error(inputs, f"token ids of shape [{shape[0]}] (one per position) as the second input")
        d = shape[1]
        if d % self.fields.num_heads:
            raise self.shape_error(shape, f"a model width divisible by num_heads={self.fields.num_heads}")
        return d

    def output_shape(self, inputs: list[Shape]) -> Shape:
        self._check(inputs)
        return inputs[0]

    def _attention(self, d: int) -> ParameterGroup:
        if self.fields.use_bias:
            return ParameterGroup(4 * (d * d + d), f"4*({d}*{d}+{d}) (q, k, v, out projections)")
        return ParameterGroup(4 * d * d, f"4*{d}*{d} (q, k, v, out projections)")


@register_kind
class MultiHeadAttention(_SelfAttention):
    """Multi-head self-attention: ``{"kind": "MultiHeadAttention", "num_heads": 8}``."""

    name = "MultiHeadAttention"
    aliases = ("SelfAttention",)
    examples = [
        {"inputs": [[5, 8]], "fields": {"num_heads": 2}},
        {"inputs": [[4, 6]], "fields": {"num_heads": 3, "causal": True, "use_bias": False,
                                        "kernel_initializer": "glorot_uniform"}},
        {"inputs": [[5, 8], [5]], "dtype": ["float32", "int64"], "fields": {"num_heads": 2, "pad_id": 0}},
    ]

    class Fields(WeightInitFields):
        num_heads: int = Field(gt=0)
        dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
        use_bias: bool = True
        causal: bool = False
        pad_id: int = 0  # with token ids as a second input: the id whose positions are not attended to

    def parameters(self, inputs: list[Shape]) -> list[ParameterGroup]:
        return [self._attention(self._check(inputs))]


@register_kind
class TransformerEncoder(_SelfAttention):
    """One Transformer encoder block: self-attention and a feed-forward network, each with a residual and a norm.

    ``ff_dim`` defaults to ``4*D``; ``norm_first=True`` is the pre-norm layout of GPT-2/3, ``False``
    the post-norm layout of the original Transformer and BERT. ``gelu_tanh`` is GELU's tanh approximation
    (``gelu_new`` of GPT-2 and some BERTs).
    """

    name = "TransformerEncoder"
    aliases = ("TransformerBlock", "TransformerEncoderBlock")
    examples = [
        {"inputs": [[5, 8]], "fields": {"num_heads": 2, "ff_dim": 16, "dropout": 0.0}},
        {"inputs": [[4, 6]], "fields": {"num_heads": 3, "activation": "gelu", "norm_first": True, "causal": True,
                                        "use_bias": False, "kernel_initializer": {"name": "normal", "std": 0.02}}},
        {"inputs": [[6, 8], [6]], "dtype": ["float32", "int64"],
         "fields": {"num_heads": 2, "ff_dim": 16, "dropout": 0.0, "activation": "gelu_tanh", "epsilon": 1e-12,
                    "pad_id": 0}},
    ]

    class Fields(WeightInitFields):
        num_heads: int = Field(gt=0)
        ff_dim: Optional[int] = Field(default=None, gt=0)
        dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
        activation: Literal["relu", "gelu", "gelu_tanh", "silu", "swish"] = "relu"
        norm_first: bool = False
        causal: bool = False
        epsilon: float = Field(default=1e-5, gt=0.0)
        use_bias: bool = True
        pad_id: int = 0  # with token ids as a second input: the id whose positions are not attended to

    def ff_dim(self, d: int) -> int:
        return self.fields.ff_dim or 4 * d

    def parameters(self, inputs: list[Shape]) -> list[ParameterGroup]:
        d = self._check(inputs)
        ff = self.ff_dim(d)
        if self.fields.use_bias:
            feed = ParameterGroup(2 * d * ff + ff + d, f"{d}*{ff}+{ff} + {ff}*{d}+{d} (feed-forward)")
            norms = ParameterGroup(4 * d, f"2*2*{d} (two layer norms)")
        else:
            feed = ParameterGroup(2 * d * ff, f"{d}*{ff} + {ff}*{d} (feed-forward)")
            norms = ParameterGroup(2 * d, f"2*{d} (two layer norms)")
        return [self._attention(d), feed, norms]
