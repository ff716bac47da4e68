"""``fit``: train a model on in-memory data, validate every epoch, test once at the end.

The loop slices batches from tensors already on the device (no DataLoader
overhead for in-memory data), accumulates the epoch loss on the device so a
step never waits for the host, and reads metrics once per epoch. The test
split is evaluated exactly once, after training.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from ..data.dataset import Dataset
from ..errors import ConfigError, DataError, TrainingError
from .history import History
from .losses import make_loss
from .optimizers import make_optimizer
from .progress import make_progress


@dataclass
class TrainState:
    """What callbacks see: counters and a stop flag, not the trainer."""

    epoch: int = 0
    step: int = 0
    epochs: int = 0
    stop_training: bool = False


class Callback(Protocol):
    """Hooks a callback may define; each receives the ``TrainState`` and the latest logs."""

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None: ...


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


def _device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tensors(dataset: Dataset, preprocessing: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = dataset.x if preprocessing is None else preprocessing.transform(dataset.x)
    x_t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=device)
    y_dtype = torch.int64 if dataset.task == "classification" else torch.float32
    y_t = torch.as_tensor(np.ascontiguousarray(dataset.y), dtype=y_dtype, device=device)
    return x_t, y_t


def _final_activation(model: torch.nn.Module) -> str | None:
    spec = getattr(model, "spec", None)
    return spec.final_activation() if spec is not None else None


@torch.no_grad()
def _evaluate_tensors(model, x, y, loss_fn, task: str, batch_size: int) -> dict[str, float]:
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out = model(xb)
        total_loss += loss_fn(out, yb).double() * len(xb)
        if task == "classification":
            correct += (out.argmax(dim=1) == yb).sum()
    model.train(was_training)
    metrics = {"loss": float(total_loss) / max(len(x), 1)}
    if task == "classification":
        metrics["accuracy"] = int(correct) / max(len(x), 1)
    return metrics


def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    loss: str = "categorical_crossentropy",
    preprocessing: Any = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Loss (and accuracy for classification) of ``model`` over the whole of ``dataset``."""
    device = _device(device)
    model.to(device)
    x, y = _tensors(dataset, preprocessing, device)
    return _evaluate_tensors(model, x, y, make_loss(loss, _final_activation(model)), dataset.task, batch_size)


def fit(
    model: torch.nn.Module,
    train: Dataset,
    validation: Dataset | None = None,
    test: Dataset | None = None,
    *,
    loss: str = "categorical_crossentropy",
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    epochs: int = 10,
    batch_size: int = 32,
    seed: int = 0,
    preprocessing: Any = None,
    callbacks: Sequence[Callback] = (),
    progress: str | bool = "auto",
    device: str | torch.device | None = None,
) -> FitResult:
    """Train ``model`` on ``train``; validate each epoch on ``validation``; test once on ``test``.

    ``preprocessing`` (for example ``Standardize()``) is fitted on ``train`` only
    and applied to every split; it is returned in the result so ``save`` stores it.
    A NaN or infinite training loss stops training with ``TrainingError``.
    """
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be at least 1, got epochs={epochs}, batch_size={batch_size}")
    if len(train) == 0:
        raise DataError(f"training set {train.name!r} is empty")
    device = _device(device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    if preprocessing is not None:
        preprocessing.fit(train.x)
    model.to(device)
    loss_fn = make_loss(loss, _final_activation(model))
    opt = make_optimizer(optimizer, model.parameters(), learning_rate)
    x, y = _tensors(train, preprocessing, device)
    val = _tensors(validation, preprocessing, device) if validation is not None else None
    order = torch.Generator().manual_seed(seed)
    history = History()
    state = TrainState(epochs=epochs)
    steps = math.ceil(len(x) / batch_size)
    bar = make_progress(progress)
    try:
        for epoch in range(1, epochs + 1):
            state.epoch = epoch
            started = time.perf_counter()
            model.train()
            bar.start_epoch(epoch, epochs, steps)
            permutation = torch.randperm(len(x), generator=order).to(device)
            running = torch.zeros((), device=device, dtype=torch.float64)
            for start in range(0, len(x), batch_size):
                index = permutation[start:start + batch_size]
                xb, yb = x[index], y[index]
                opt.zero_grad(set_to_none=True)
                batch_loss = loss_fn(model(xb), yb)
                batch_loss.backward()
                opt.step()
                running += batch_loss.detach().double() * len(index)
                state.step += 1
                bar.advance(batch_loss.detach())
            train_loss = float(running) / len(x)
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"the training loss became {train_loss} in epoch {epoch}; lower the learning rate "
                    f"(now {learning_rate}) or check the data for NaN/inf values"
                )
            logs: dict[str, float] = {"epoch": epoch, "loss": train_loss}
            if val is not None:
                for key, value in _evaluate_tensors(model, *val, loss_fn, train.task, max(batch_size, 256)).items():
                    logs[f"val_{key}"] = value
            logs["lr"] = opt.param_groups[0]["lr"]
            logs["time"] = time.perf_counter() - started
            history.append(logs)
            bar.end_epoch(epoch, epochs, logs)
            for callback in callbacks:
                hook = getattr(callback, "on_epoch_end", None)
                if hook is not None:
                    hook(state, logs)
            if state.stop_training:
                break
    finally:
        bar.close()
    test_metrics = None
    if test is not None:
        test_metrics = _evaluate_tensors(model, *_tensors(test, preprocessing, device), loss_fn, test.task, 256)
    hyperparameters = {
        "loss": loss, "optimizer": optimizer, "learning_rate": learning_rate,
        "epochs": epochs, "batch_size": batch_size, "seed": seed,
    }
    return FitResult(model, history, test_metrics, train.labels, preprocessing, train.task,
                     hyperparameters, train.fingerprint(), opt)
