"""Transformers as specs: an encoder classifier, and GPT-style decoders (GPT-2 small, GPT-3 175B).

Both are token ids -> ``Embedding`` + ``PositionalEmbedding`` -> ``n_layer``
``TransformerEncoder`` blocks (pre-norm, GELU) -> ``LayerNorm`` -> a head. The
classifier averages over time and ends in a Dense layer; the GPT decoder is
causal and its output layer reuses the token embedding (``tied_to``), so the
embedding matrix is stored and counted once: GPT-2 small has 124,439,808
parameters, the GPT-3 175B shape 174,604,259,328 (the "175B" of the paper).
"""
from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ._base import register_model


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TransformerConfig:
    vocab_size: int = Field(default=20000, gt=0)
    seq_len: int = Field(default=128, gt=0)
    d_model: int = Field(default=128, gt=0)
    n_head: int = Field(default=4, gt=0)
    n_layer: int = Field(default=2, gt=0)
    ff_dim: int = Field(default=512, gt=0)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    num_classes: int = Field(default=2, gt=0)


def _trunk(seq_len: int, vocab: int, d: int, n_head: int, n_layer: int, ff: int, dropout: float,
           causal: bool) -> list[dict[str, Any]]:
    layers: list[dict[str, Any]] = [
        {"kind": "Input", "name": "tokens", "shape": [seq_len], "dtype": "int64"},             # (T,)
        {"kind": "Embedding", "name": "wte", "num_embeddings": vocab, "embedding_dim": d},      # (T, D)
        {"kind": "PositionalEmbedding", "name": "wpe", "max_length": seq_len},                 # (T, D)
    ]
    for index in range(n_layer):
        layers.append({"kind": "TransformerEncoder", "name": f"h_{index}", "num_heads": n_head, "ff_dim": ff,
                       "dropout": dropout, "activation": "gelu", "norm_first": True, "causal": causal})  # (T, D)
    layers.append({"kind": "LayerNorm", "name": "ln_f"})                                      # (T, D)
    return layers


def transformer_classifier(cfg: TransformerConfig) -> dict[str, Any]:
    layers = _trunk(cfg.seq_len, cfg.vocab_size, cfg.d_model, cfg.n_head, cfg.n_layer, cfg.ff_dim, cfg.dropout,
                    causal=False)
    layers += [
        {"kind": "GlobalAvgPool", "name": "pool", "data_format": "channels_last"},            # (D,)
        {"kind": "Dropout", "name": "dropout", "rate": cfg.dropout},
        {"kind": "Dense", "name": "head", "units": cfg.num_classes},                          # (num_classes,)
    ]
    return {"name": "transformer_classifier", "layers": layers, "head": "head"}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class GPTConfig:
    vocab_size: int = Field(default=50257, gt=0)
    context: int = Field(default=1024, gt=0)
    d_model: int = Field(default=768, gt=0)
    n_head: int = Field(default=12, gt=0)
    n_layer: int = Field(default=12, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    tie_weights: bool = True


def gpt(cfg: GPTConfig) -> dict[str, Any]:
    layers = _trunk(cfg.context, cfg.vocab_size, cfg.d_model, cfg.n_head, cfg.n_layer, 4 * cfg.d_model,
                    cfg.dropout, causal=True)
    head: dict[str, Any] = {"kind": "Dense", "name": "lm_head", "units": cfg.vocab_size, "use_bias": False}
    if cfg.tie_weights:
        head["tied_to"] = "wte"
    layers.append(head)                                                                        # (T, vocab)
    return {"name": "gpt", "layers": layers, "head": "lm_head"}


register_model("transformer_classifier", TransformerConfig, transformer_classifier,
               "Transformer encoder classifier: 128 token ids, 2 pre-norm blocks of width 128, 2 classes",
               small={"vocab_size": 50, "seq_len": 6, "d_model": 8, "n_head": 2, "ff_dim": 16})
register_model("gpt2", GPTConfig, gpt, "GPT-2 small decoder (124M): 1024 context, 12 layers of width 768, tied head",
               small={"vocab_size": 50, "context": 6, "d_model": 8, "n_head": 2, "n_layer": 2})
register_model("gpt3_175b", GPTConfig, gpt,
               "GPT-3 175B shape (count it, do not build it): 2048 context, 96 layers of width 12288",
               small={"vocab_size": 50, "context": 6, "d_model": 8, "n_head": 2, "n_layer": 2},
               context=2048, d_model=12288, n_head=96, n_layer=96)
