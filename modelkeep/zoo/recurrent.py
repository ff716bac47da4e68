"""An LSTM text classifier: token ids, an embedding, a (bidirectional) LSTM's last state, a Dense head."""
from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ._base import register_model


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LSTMClassifierConfig:
    vocab_size: int = Field(default=20000, gt=0)
    seq_len: int = Field(default=200, gt=0)
    embedding_dim: int = Field(default=128, gt=0)
    hidden: int = Field(default=128, gt=0)
    num_layers: int = Field(default=1, gt=0)
    bidirectional: bool = True
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    num_classes: int = Field(default=2, gt=0)


def lstm_classifier(cfg: LSTMClassifierConfig) -> dict[str, Any]:
    layers = [
        {"kind": "Input", "name": "tokens", "shape": [cfg.seq_len], "dtype": "int64"},          # (T,)
        {"kind": "Embedding", "name": "embed", "num_embeddings": cfg.vocab_size,
         "embedding_dim": cfg.embedding_dim},                                                   # (T, E)
        {"kind": "LSTM", "name": "lstm", "units": cfg.hidden, "num_layers": cfg.num_layers,
         "bidirectional": cfg.bidirectional, "dropout": cfg.dropout if cfg.num_layers > 1 else 0.0},  # (H*dirs,)
        {"kind": "Dropout", "name": "dropout", "rate": cfg.dropout},
        {"kind": "Dense", "name": "head", "units": cfg.num_classes},                            # (num_classes,)
    ]
    return {"name": "lstm_classifier", "layers": layers, "head": "head"}


register_model("lstm_classifier", LSTMClassifierConfig, lstm_classifier,
               "Bidirectional LSTM text classifier: 200 token ids, vocabulary 20000, 2 classes",
               small={"vocab_size": 50, "seq_len": 7, "embedding_dim": 8, "hidden": 6})
