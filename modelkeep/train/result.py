"""``FitResult``: everything a training run produced, ready for ``modelkeep.save``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .history import History

__all__ = ["FitResult"]


@dataclass
class FitResult:
    """Everything a training run produced, ready for ``modelkeep.save``."""

    model: torch.nn.Module
    history: History
    test_metrics: dict[str, float] | None
    labels: tuple[str, ...] | None
    preprocessing: Any
    task: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    optimizer: torch.optim.Optimizer | None = None
    test_report: dict[str, Any] | None = None  # every test metric: per class, confusion matrix
    step_history: History | None = None  # validations every N steps, when asked for
    stopped_early: bool = False
    best_epoch: int | None = None
    resumed_from: str | None = None  # the checkpoint training resumed from, if any
    checkpoint_dir: str | None = None  # where the run's checkpoints are, when it took any
