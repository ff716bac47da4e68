"""BERT-family encoders as specs, with the sizes of a Hugging Face ``config.json``.

Token ids ``(T,)`` -> word ``Embedding`` + ``PositionalEmbedding`` +
``TokenTypeEmbedding`` -> ``LayerNorm`` -> ``num_hidden_layers`` post-norm
``TransformerEncoder`` blocks (each reads the token ids too, so positions
holding ``pad_token_id`` are never attended to) -> pooling:

- ``cls``: the first token through the ``pooler`` (Dense + tanh), BERT's pooled output;
- ``first``: the first token's hidden state as it is (sentence-transformers' CLS pooling);
- ``mean``: the mean over the real tokens (sentence-transformers' MiniLM);
- ``max``: their maximum; ``none``: the last hidden state ``(T, D)``.

``normalize`` ends with ``L2Normalize`` (unit-length sentence embeddings) and
``num_classes`` adds ``BertForSequenceClassification``'s dropout and
``classifier``. Layer names follow Hugging Face's module paths, shortened
(``encoder.layer.3`` is ``layer_3``), so its state dicts map one to one
(``modelkeep.importers.layouts.text``). Defaults: ``bert-base-uncased``,
109,482,240 parameters with the pooler.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ..errors import SpecError
from ._base import register_model


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class BertConfig:
    vocab_size: int = Field(default=30522, gt=0)
    hidden_size: int = Field(default=768, gt=0)
    num_hidden_layers: int = Field(default=12, gt=0)
    num_attention_heads: int = Field(default=12, gt=0)
    intermediate_size: int = Field(default=3072, gt=0)
    max_position_embeddings: int = Field(default=512, gt=0)
    type_vocab_size: int = Field(default=2, ge=0)          # 0: no token-type embedding
    layer_norm_eps: float = Field(default=1e-12, gt=0.0)
    hidden_act: Literal["gelu", "gelu_tanh", "relu", "silu"] = "gelu"
    hidden_dropout_prob: float = Field(default=0.1, ge=0.0, lt=1.0)
    pad_token_id: int = Field(default=0, ge=0)
    seq_len: Optional[int] = Field(default=None, gt=0)     # the input's length; None: max_position_embeddings
    pooling: Literal["cls", "first", "mean", "max", "none"] = "cls"
    normalize: bool = False
    num_classes: Optional[int] = Field(default=None, gt=0)


def _embeddings(cfg: BertConfig, seq_len: int) -> list[dict[str, Any]]:
    layers: list[dict[str, Any]] = [
        {"kind": "Input", "name": "tokens", "shape": [seq_len], "dtype": "int64"},                  # (T,)
        {"kind": "Embedding", "name": "word_embeddings", "num_embeddings": cfg.vocab_size,
         "embedding_dim": cfg.hidden_size, "padding_idx": cfg.pad_token_id},                      # (T, D)
        {"kind": "PositionalEmbedding", "name": "position_embeddings",
         "max_length": cfg.max_position_embeddings},                                              # (T, D)
    ]
    if cfg.type_vocab_size:
        layers.append({"kind": "TokenTypeEmbedding", "name": "token_type_embeddings",
                       "num_types": cfg.type_vocab_size})                                         # (T, D)
    layers += [
        {"kind": "LayerNorm", "name": "embeddings_norm", "epsilon": cfg.layer_norm_eps},
        {"kind": "Dropout", "name": "embeddings_dropout", "rate": cfg.hidden_dropout_prob},
    ]
    return layers


def _encoder(cfg: BertConfig, previous: str) -> list[dict[str, Any]]:
    layers = []
    for index in range(cfg.num_hidden_layers):
        layers.append({"kind": "TransformerEncoder", "name": f"layer_{index}", "inputs": [previous, "tokens"],
                       "num_heads": cfg.num_attention_heads, "ff_dim": cfg.intermediate_size,
                       "dropout": cfg.hidden_dropout_prob, "activation": cfg.hidden_act,
                       "epsilon": cfg.layer_norm_eps, "pad_id": cfg.pad_token_id})                # (T, D)
        previous = f"layer_{index}"
    return layers


def _pooling(cfg: BertConfig, last: str) -> list[dict[str, Any]]:
    if cfg.pooling == "cls":
        return [{"kind": "SequencePool", "name": "cls_token", "inputs": [last], "mode": "first"},    # (D,)
                {"kind": "Dense", "name": "pooler", "units": cfg.hidden_size},                          # (D,)
                {"kind": "Tanh", "name": "pooler_activation"}]
    if cfg.pooling == "first":
        return [{"kind": "SequencePool", "name": "pool", "inputs": [last], "mode": "first"}]         # (D,)
    if cfg.pooling in ("mean", "max"):
        return [{"kind": "SequencePool", "name": "pool", "inputs": [last, "tokens"], "mode": cfg.pooling,
                 "pad_id": cfg.pad_token_id}]                                                      # (D,)
    return []


def bert(cfg: BertConfig) -> dict[str, Any]:
    if cfg.hidden_size % cfg.num_attention_heads:
        raise SpecError(f"bert: hidden_size={cfg.hidden_size} must be divisible by "
                        f"num_attention_heads={cfg.num_attention_heads}")
    seq_len = cfg.seq_len or cfg.max_position_embeddings
    layers = _embeddings(cfg, seq_len)
    layers += _encoder(cfg, layers[-1]["name"])
    layers += _pooling(cfg, layers[-1]["name"])
    if cfg.normalize:
        layers.append({"kind": "L2Normalize", "name": "normalize"})                                # (D,) or (T, D)
    spec: dict[str, Any] = {"name": "bert", "layers": layers}
    if cfg.num_classes is not None:
        if cfg.pooling == "none":
            raise SpecError("bert: num_classes needs a pooled vector; set pooling to 'cls', 'mean' or 'max'")
        layers += [{"kind": "Dropout", "name": "classifier_dropout", "rate": cfg.hidden_dropout_prob},
                   {"kind": "Dense", "name": "classifier", "units": cfg.num_classes}]             # (num_classes,)
        spec["head"] = "classifier"
    return spec


register_model("bert", BertConfig, bert,
               "BERT-family encoder (bert-base sizes): 12 post-norm layers of width 768, [CLS] pooler",
               small={"vocab_size": 50, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "intermediate_size": 16, "max_position_embeddings": 8, "seq_len": 6})
register_model("all_minilm_l6_v2", BertConfig, bert,
               "Sentence embeddings of all-MiniLM-L6-v2's shape: 6 layers of width 384, mean pooled, normalised",
               small={"vocab_size": 50, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "intermediate_size": 16, "max_position_embeddings": 8, "seq_len": 6, "num_classes": 3},
               hidden_size=384, num_hidden_layers=6, intermediate_size=1536, seq_len=256, pooling="mean",
               normalize=True)
