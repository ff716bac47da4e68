"""Small plain ``nn.Module`` networks and specs for the four task kinds, as a PyTorch user writes them.

Shared by the import tests (API and CLI): each network is built, its ``state_dict`` saved the way people
save it (``torch.save``, ``safetensors``, wrapped in DataParallel or ``torch.compile``, nested in a
checkpoint), imported, and the imported file must predict exactly what the network does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from task_specs import SEQ, TOKEN_SPEC, VOCAB, dense_spec  # noqa: F401  (re-exported to the import tests)


class BinaryNet(nn.Module):
    """One logit: a binary classifier."""

    def __init__(self, features: int = 4, hidden: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.body(x))


class MultiNet(BinaryNet):
    """Three logits: a multi-class classifier."""

    def __init__(self, features: int = 4, hidden: int = 16, classes: int = 3):
        super().__init__(features, hidden)
        self.head = nn.Linear(hidden, classes)


class TokenNet(nn.Module):
    """Token ids (int64) -> embedding -> mean over positions -> two logits."""

    def __init__(self, vocab: int = VOCAB, dim: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, tokens):
        return self.head(self.embed(tokens).mean(dim=1))


class RunsACommand:
    """What a malicious checkpoint holds: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)



#: task -> (spec, plain class, its init, task name for save, an input batch maker)
TASKS = {
    "binary_one_logit": (dense_spec(4, 1), BinaryNet, {}, "classification"),
    "multiclass": (dense_spec(4, 3), MultiNet, {}, "classification"),
    "regression": (dense_spec(3, 1), BinaryNet, {"features": 3}, "regression"),
    "token_sequence": (TOKEN_SPEC, TokenNet, {}, "classification"),
}


def batch(task: str, n: int = 6, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    if task == "token_sequence":
        return torch.from_numpy(rng.integers(0, VOCAB, (n, SEQ)).astype(np.int64))
    features = 3 if task == "regression" else 4
    return torch.from_numpy(rng.standard_normal((n, features)).astype(np.float32))


def expected_answers(task: str, logits: torch.Tensor) -> np.ndarray:
    """What ``Model.predict`` must give for these logits: probabilities, or values for regression."""
    logits = logits.detach().double()
    if task == "regression":
        return logits.numpy()
    if logits.shape[-1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=-1).numpy()
    return torch.softmax(logits, dim=-1).numpy()


def answers(prediction) -> np.ndarray:
    return np.asarray(prediction.values if prediction.probabilities is None else prediction.probabilities,
                      dtype=np.float64)
