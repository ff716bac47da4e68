"""``fit``: train a model, validate every epoch (or every N steps), test once at the end.

The loop lives in one place (``_Run.train``). Its position is three numbers in
``TrainState`` — ``epoch`` (epochs completed, i.e. the 0-based index of the
epoch in progress), ``batch`` (the next batch within that epoch) and ``step``
(optimizer steps done) — and the data order of epoch ``e`` is a pure function
of ``(seed, e)`` (``epoch_permutation``), so a run can resume at any
``(epoch, batch)`` with nothing else about the data. What else a resume needs
is stateful and says so: model, optimizer, schedule, GradScaler, callbacks
(``state_dict``), the history, the epoch's running loss and the global RNGs
(dropout). ``fit(..., checkpoint=DIR)`` saves all of it at step and epoch
boundaries and resumes from it (``checkpointing._Checkpointing``; the loop
only calls it at those two places).

Speed: in-memory data is moved to the device once and batches are gathered by
index there (no DataLoader, no collation); the epoch's losses stay on the
device and are read once per epoch, so a step never waits for the host (the
progress bar reads a loss a few times a second at most, the NaN check every
``NONFINITE_CHECK_EVERY`` steps). Streamed data (an ``ImageFolder``) goes
through a DataLoader whose sampler follows the same epoch order.

The test split is evaluated exactly once, after training and after the best
weights are restored; nothing touches it before.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..data.dataset import Dataset
from ..errors import ConfigError, DataError, TrainingError
from .callbacks import Callback, CallbackList, EarlyStopping, make_early_stopping
from .checkpointing import (CheckpointSettings, _Checkpointing, _NoCheckpoints, architecture_digest,
                            run_fingerprint)
from .history import History
from .losses import make_loss
from .metrics import MetricAccumulator, check_metric_names
from .optimizers import make_optimizer
from .progress import make_progress
from .schedules import Schedule, make_schedule

NONFINITE_CHECK_EVERY = 64
EVAL_BATCH_SIZE = 512
PREPROCESSING_SAMPLE = 4096  # streamed training data: preprocessing is fitted on this many training images

__all__ = ["Callback", "FitResult", "TrainState", "epoch_permutation", "evaluate", "fit", "seed_everything"]


@dataclass
class TrainState:
    """What callbacks see: the loop's position, a stop flag and the model — not the trainer.

    ``epoch``: epochs completed (so the 0-based index of the epoch in progress);
    ``batch``: index of the next batch within that epoch; ``step``: optimizer steps done.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    epochs: int = 0
    steps_per_epoch: int = 0
    stop_training: bool = False
    model: torch.nn.Module | None = field(default=None, repr=False)
    seed: int = 0
    resumed_from: str | None = None  # the checkpoint this run resumed from (None on a fresh start)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch, self.step = int(state["epoch"]), int(state["batch"]), int(state["step"])


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


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of epoch ``epoch`` (0-based): a pure function of ``(seed, epoch)``."""
    generator = torch.Generator().manual_seed((seed * 0x9E3779B1 + epoch * 0x85EBCA77 + 0x165667B1) % 2**63)
    return torch.randperm(n, generator=generator)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic kernels (and cuDNN settings) for the duration of a run, restored afterwards."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[1], previous[2]
        if previous[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _device(device: str | torch.device | None) -> torch.device:
    if device is not None and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for mixed precision, or None for float32. Mixed precision needs CUDA."""
    if precision in ("32", "fp32", "float32", 32):
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision in ("bf16", "bf16-mixed", "bfloat16"):
        dtype = torch.bfloat16
    elif precision in ("16", "fp16", "16-mixed", "float16", 16):
        dtype = torch.float16
    else:
        raise ConfigError(f"precision must be 'auto', '32', 'bf16' or '16', got {precision!r}")
    if device.type != "cuda":
        raise ConfigError(f"mixed precision ({precision}) needs a CUDA device; this run is on {device}")
    return dtype


def _final_activation(model: torch.nn.Module) -> str | None:
    spec = getattr(model, "spec", None)
    return spec.final_activation() if spec is not None else None


def _is_streamed(dataset: Any) -> bool:
    return not isinstance(dataset, Dataset)


def _target_dtype(task: str, y: np.ndarray) -> torch.dtype:
    if task == "classification" and np.asarray(y).dtype.kind in "iu":
        return torch.int64
    return torch.float32


def _transform_targets(y: np.ndarray, preprocessing: Any) -> np.ndarray:
    if preprocessing is not None and hasattr(preprocessing, "transform_targets"):
        return preprocessing.transform_targets(y)
    return y


def _tensors(dataset: Dataset, preprocessing: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = dataset.x if preprocessing is None else preprocessing.transform(dataset.x)
    y = _transform_targets(dataset.y, preprocessing)
    x_t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).to(device)
    y_t = torch.as_tensor(np.ascontiguousarray(y), dtype=_target_dtype(dataset.task, y)).to(device)
    return x_t, y_t


class _Collate:
    """Stacks streamed samples and applies the preprocessing to the whole batch (picklable for workers)."""

    def __init__(self, preprocessing: Any, task: str) -> None:
        self.preprocessing = preprocessing
        self.task = task

    def __call__(self, samples: list[tuple[np.ndarray, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.stack([s[0] for s in samples])
        y = np.asarray([s[1] for s in samples])
        if self.preprocessing is not None:
            x = self.preprocessing.transform(x)
        y = _transform_targets(y, self.preprocessing)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.as_tensor(y, dtype=_target_dtype(self.task, y))


class _Split:
    """One split ready to iterate: tensors on the device, or a streamed dataset and its loader settings."""

    def __init__(self, dataset: Any, preprocessing: Any, device: torch.device, num_workers: int) -> None:
        self.dataset = dataset
        self.name = dataset.name
        self.task = dataset.task
        self.device = device
        self.streamed = _is_streamed(dataset)
        self.num_workers = num_workers
        self.collate = _Collate(preprocessing, dataset.task)
        if not self.streamed:
            self.x, self.y = _tensors(dataset, preprocessing, device)

    def __len__(self) -> int:
        return len(self.dataset)

    def loader(self, indices: Sequence[int] | None, batch_size: int, seed: int = 0, epoch: int = 0):
        from torch.utils.data import DataLoader

        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return DataLoader(self.dataset, batch_size=batch_size, sampler=list(indices) if indices is not None else None,
                          collate_fn=self.collate, num_workers=self.num_workers, generator=generator,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every sample once, in order (for evaluation)."""
        if not self.streamed:
            for start in range(0, len(self.x), batch_size):
                yield self.x[start:start + batch_size], self.y[start:start + batch_size]
            return
        for xb, yb in self.loader(None, batch_size):
            yield xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)


@torch.no_grad()
def _evaluate_split(model, split: _Split, loss_fn, *, metrics: Sequence[str], num_classes: int | None,
                    final_activation: str | None, autocast: torch.dtype | None,
                    batch_size: int = EVAL_BATCH_SIZE) -> tuple[dict[str, float], dict[str, Any]]:
    """Loss and metrics over the whole split (one read from the device at the end), and the full report."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=split.device, dtype=torch.float64)
    accumulator = MetricAccumulator(split.task, num_classes=num_classes, final_activation=final_activation,
                                    device=split.device)
    count = 0
    context = (torch.autocast(split.device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext())
    for xb, yb in split.batches(batch_size):
        with context:
            out = model(xb)
        out = out.float()
        total_loss += loss_fn(out, yb).double() * len(xb)
        accumulator.update(out, yb)
        count += len(xb)
    model.train(was_training)
    report = accumulator.report()
    scalars = {"loss": float(total_loss) / max(count, 1)}
    scalars.update({name: report[name] for name in metrics})
    report = {"loss": scalars["loss"], **report}
    return scalars, report


def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    *,
    loss: str = "categorical_crossentropy",
    preprocessing: Any = None,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str | torch.device | None = None,
    metrics: Sequence[str] | None = None,
    loss_options: dict[str, Any] | None = None,
    report: bool = False,
) -> dict[str, Any]:
    """Loss and metrics of ``model`` over the whole of ``dataset`` (with ``report``, every metric: per class,
    confusion matrix). ``preprocessing`` is applied, never fitted."""
    device = _device(device)
    model.to(device)
    final = _final_activation(model)
    names = check_metric_names(metrics, dataset.task)
    split = _Split(dataset, preprocessing, device, 0)
    num_classes = len(dataset.labels) if getattr(dataset, "labels", None) else None
    scalars, full = _evaluate_split(model, split, make_loss(loss, final, **(loss_options or {})), metrics=names,
                                    num_classes=num_classes, final_activation=final, autocast=None,
                                    batch_size=batch_size)
    return full if report else scalars


class _EpochLoss:
    """The epoch's batch losses, kept on the device; summed (weighted by batch size) when read."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.carried_sum = 0.0
        self.carried_count = 0

    def add(self, loss: torch.Tensor, size: int) -> None:
        self.losses.append(loss)
        self.sizes.append(size)

    def mean(self) -> float:
        total, count = self.carried_sum, self.carried_count
        if self.losses:
            weights = torch.tensor(self.sizes, dtype=torch.float64, device=self.losses[0].device)
            total += float(torch.stack(self.losses).double() @ weights)
            count += sum(self.sizes)
        return total / max(count, 1)

    def latest_nonfinite(self, since: int) -> bool:
        recent = self.losses[since:]
        return bool(recent) and not bool(torch.isfinite(torch.stack(recent)).all())

    def state_dict(self) -> dict[str, Any]:
        """The batch losses themselves (one stacked tensor), so a resumed epoch's mean is bit-identical."""
        losses = torch.stack(self.losses) if self.losses else torch.zeros(0)
        return {"losses": losses, "sizes": list(self.sizes), "carried_sum": self.carried_sum,
                "carried_count": self.carried_count}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        losses = state["losses"]
        self.losses = list(losses.to(device).unbind()) if len(losses) else []
        self.sizes = [int(size) for size in state["sizes"]]
        self.carried_sum, self.carried_count = float(state["carried_sum"]), int(state["carried_count"])


class _Run:
    """One training run: built by ``fit``; ``train()`` is the loop."""

    def __init__(self, *, model, train: _Split, validation: _Split | None, loss_fn, optimizer, schedule,
                 metrics, callbacks: CallbackList, progress, device, autocast, scaler, epochs, batch_size,
                 accumulate, clip_norm, clip_value, detect_nonfinite, validate_every, num_classes,
                 final_activation, seed, drop_last, learning_rate) -> None:
        self.model, self.train_split, self.validation = model, train, validation
        self.loss_fn, self.optimizer, self.schedule = loss_fn, optimizer, schedule
        self.metrics, self.callbacks, self.progress = metrics, callbacks, progress
        self.device, self.autocast, self.scaler = device, autocast, scaler
        self.epochs, self.batch_size, self.accumulate = epochs, batch_size, accumulate
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.detect_nonfinite, self.validate_every = detect_nonfinite, validate_every
        self.num_classes, self.final_activation = num_classes, final_activation
        self.seed, self.learning_rate = seed, learning_rate
        n = len(train)
        self.steps_per_epoch = (n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size))
        self.state = TrainState(epochs=epochs, steps_per_epoch=self.steps_per_epoch, model=model, seed=seed)
        self.history = History()
        self.step_history = History() if validate_every else None
        self.epoch_loss = _EpochLoss()
        self.last_validation: dict[str, float] = {}
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.checkpoints: Any = _NoCheckpoints()  # fit() puts a _Checkpointing here when asked to
        self.epoch_started = 0.0
        self.epoch_seconds_before = 0.0  # time the epoch in progress ran before a resume

    # ----------------------------------------------------------------------------------------------- resume

    def loop_state(self) -> dict[str, Any]:
        """The loop's own state a checkpoint needs besides model, optimizer, schedule, callbacks and RNGs."""
        return {
            "epoch_loss": self.epoch_loss.state_dict(),
            "history": self.history.records,
            "step_history": self.step_history.records if self.step_history is not None else None,
            "last_validation": self.last_validation,
            "stop_training": self.state.stop_training,
            "epoch_seconds": time.perf_counter() - self.epoch_started if self.state.batch else 0.0,
        }

    def load_loop_state(self, position: Any, loop: dict[str, Any]) -> None:
        self.state.epoch, self.state.batch, self.state.step = position.epoch, position.batch, position.step
        self.epoch_loss.load_state_dict(loop["epoch_loss"], self.device)
        self.history = History([dict(record) for record in loop["history"]])
        if self.step_history is not None and loop.get("step_history") is not None:
            self.step_history = History([dict(record) for record in loop["step_history"]])
        self.last_validation = dict(loop.get("last_validation") or {})
        self.state.stop_training = bool(loop.get("stop_training", False))
        self.epoch_seconds_before = float(loop.get("epoch_seconds", 0.0))

    # ----------------------------------------------------------------------------------------------- pieces

    def optimizer_steps_per_epoch(self) -> int:
        return math.ceil(self.steps_per_epoch / self.accumulate)

    def epoch_batches(self, epoch: int, start_batch: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """``(batch index, x, y)`` for the batches ``start_batch..`` of ``epoch``, in its seeded order."""
        split, size = self.train_split, self.batch_size
        n = len(split)
        if not split.streamed and size >= n:  # full batch: the order does not change the gradient; skip the gather
            if start_batch == 0:
                yield 0, split.x, split.y
            return
        order = epoch_permutation(self.seed, epoch, n)
        stop = self.steps_per_epoch * size
        if split.streamed:
            loader = split.loader(order[start_batch * size:stop].tolist(), size, self.seed, epoch)
            for batch, (xb, yb) in enumerate(loader, start=start_batch):
                yield batch, xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            return
        order = order.to(self.device)
        for batch in range(start_batch, self.steps_per_epoch):
            index = order[batch * size:(batch + 1) * size]
            yield batch, split.x.index_select(0, index), split.y.index_select(0, index)

    def group_scale(self, batch: int, size: int) -> float:
        """Loss scale for gradient accumulation: this batch's share of the samples in its accumulation group."""
        if self.accumulate == 1:
            return 1.0
        first = (batch // self.accumulate) * self.accumulate
        last = min(first + self.accumulate, self.steps_per_epoch)
        samples = min(last * self.batch_size, len(self.train_split)) - first * self.batch_size
        return size / samples

    def check_finite(self, since: int) -> None:
        if self.epoch_loss.latest_nonfinite(since):
            value = self.epoch_loss.mean()
            raise TrainingError(
                f"the training loss became {'nan' if math.isnan(value) else value} in epoch {self.state.epoch + 1} "
                f"(by step {self.state.step}); lower the learning rate (now {self.learning_rate}), add gradient "
                "clipping, or check the data for NaN/inf values"
            )

    def validate(self) -> dict[str, float]:
        scalars, _ = _evaluate_split(self.model, self.validation, self.loss_fn, metrics=self.metrics,
                                     num_classes=self.num_classes, final_activation=self.final_activation,
                                     autocast=self.autocast)
        logs = {f"val_{k}": v for k, v in scalars.items()}
        self.last_validation = logs
        if self.schedule is not None:
            self.schedule.on_validation_end(logs)
        self.notify("on_validation_end", logs)
        if self.step_history is not None:
            self.step_history.append({"step": self.state.step, "epoch": self.state.epoch, **logs})
        return logs

    def notify(self, hook: str, logs: dict[str, Any]) -> None:
        """Run callback ``hook``; a callback may write weights, so a deferred snapshot copy is fenced first."""
        if self.callbacks.has(hook):
            self.checkpoints.before_update()
            self.callbacks(hook, self.state, logs)

    def optimizer_step(self) -> None:
        self.checkpoints.before_update()  # an asynchronous save may still be copying the weights
        if self.clip_norm is not None or self.clip_value is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if self.clip_value is not None:
                torch.nn.utils.clip_grad_value_(self.parameters, self.clip_value)
            if self.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_norm)
        if self.schedule is not None:
            self.schedule.apply(self.optimizer, self.state.step)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ----------------------------------------------------------------------------------------------- the loop

    def train(self) -> None:
        model = self.model
        autocast = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
                    else contextlib.nullcontext())
        on_step_end = self.callbacks.has("on_step_end")
        checkpoints = self.checkpoints
        self.notify("on_train_begin", {})
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with checkpoints:
            self.epochs_loop(autocast, on_step_end)
        self.notify("on_train_end", self.history.records[-1] if self.history.records else {})

    def epochs_loop(self, autocast: Any, on_step_end: bool) -> None:
        state, model, checkpoints = self.state, self.model, self.checkpoints
        while state.epoch < self.epochs and not state.stop_training:
            self.epoch_started = time.perf_counter() - self.epoch_seconds_before
            self.epoch_seconds_before = 0.0
            if state.batch == 0:  # a resume inside an epoch already ran its on_epoch_begin
                self.notify("on_epoch_begin", {})
            self.progress.start_epoch(state.epoch + 1, self.epochs, self.steps_per_epoch)
            checked = len(self.epoch_loss.losses)
            for batch, xb, yb in self.epoch_batches(state.epoch, state.batch):
                with autocast:
                    batch_loss = self.loss_fn(model(xb), yb)
                scale = self.group_scale(batch, len(xb))
                scaled = batch_loss * scale if scale != 1.0 else batch_loss
                if self.scaler is not None:
                    scaled = self.scaler.scale(scaled)
                scaled.backward()
                detached = batch_loss.detach()
                self.epoch_loss.add(detached, len(xb))
                state.batch = batch + 1
                if state.batch % self.accumulate == 0 or state.batch == self.steps_per_epoch:
                    self.optimizer_step()
                    state.step += 1
                    if on_step_end:
                        self.notify("on_step_end", {"loss": detached, "batch": batch})
                    if self.validate_every and self.validation is not None and state.step % self.validate_every == 0:
                        self.validate()
                    checkpoints.step_end(self)
                self.progress.advance(detached)
                if self.detect_nonfinite and len(self.epoch_loss.losses) - checked >= NONFINITE_CHECK_EVERY:
                    self.check_finite(checked)
                    checked = len(self.epoch_loss.losses)
                if state.stop_training:
                    break
            if self.detect_nonfinite:
                self.check_finite(checked)
            logs: dict[str, float] = {"epoch": state.epoch + 1, "loss": self.epoch_loss.mean()}
            # The epoch is done: advance the position before the epoch-end work, so a checkpoint taken in
            # on_epoch_end resumes at the next epoch's first batch.
            state.epoch, state.batch = state.epoch + 1, 0
            self.epoch_loss = _EpochLoss()
            if self.validation is not None:
                logs.update(self.validate() if not self.validate_every else self.last_validation)
            logs["lr"] = float(self.optimizer.param_groups[0]["lr"])
            logs["time"] = time.perf_counter() - self.epoch_started
            self.history.append(logs)
            self.progress.end_epoch(state.epoch, self.epochs, logs)
            self.notify("on_epoch_end", logs)
            checkpoints.epoch_end(self, logs, last=state.epoch >= self.epochs or state.stop_training)


def _as_dataset(data: Any, role: str) -> Any:
    if data is None:
        return None
    if isinstance(data, Dataset) or hasattr(data, "__getitem__") and hasattr(data, "y") and hasattr(data, "task"):
        return data
    raise DataError(f"{role} data must be a modelkeep Dataset (see modelkeep.data), got {type(data).__name__}")


def _resolve_batch_size(batch_size: int | str, n: int) -> int:
    if batch_size in ("full", "full_batch", "all", 0, None):
        return max(n, 1)
    if isinstance(batch_size, str) and batch_size in ("sample", "per_sample", "sgd"):
        return 1
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, 'full' or 'sample', got {batch_size!r}")
    return batch_size


def fit(
    model: torch.nn.Module,
    train: Any,
    validation: Any = None,
    test: Any = None,
    *,
    loss: str = "categorical_crossentropy",
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    epochs: int = 10,
    batch_size: int | str = 32,
    seed: int = 0,
    preprocessing: Any = None,
    callbacks: Sequence[Any] = (),
    progress: str | bool = "auto",
    device: str | torch.device | None = None,
    loss_options: dict[str, Any] | None = None,
    optimizer_options: dict[str, Any] | None = None,
    weight_decay: float = 0.0,
    schedule: Any = None,
    metrics: Sequence[str] | None = None,
    early_stopping: Any = None,
    validate_every: int | None = None,
    accumulate: int = 1,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    detect_nonfinite: bool = True,
    deterministic: bool = False,
    precision: str = "auto",
    num_workers: int = 0,
    drop_last: bool = False,
    checkpoint: Any = None,
    resume: bool = True,
) -> FitResult:
    """Train ``model`` on ``train``; validate each epoch on ``validation``; test once on ``test``.

    ``batch_size``: an integer (mini-batch), ``"full"`` (full-batch gradient descent) or
    1 / ``"sample"`` (per-sample); ``accumulate`` micro-batches per optimizer step;
    ``clip_norm``/``clip_value`` clip gradients. ``schedule``: a name or dict (see
    ``modelkeep.train.schedules``); ``early_stopping``: True, a patience, or a dict
    (``monitor``, ``patience``, ``min_delta``, ``restore_best_weights``). ``metrics``
    (accuracy, precision, recall, f1; rmse, mae, r2, mse) are computed over whole splits.
    ``preprocessing`` (for example ``Standardize()``) is fitted on ``train`` only and
    returned in the result so ``save`` stores it. ``seed`` seeds every random source and
    fixes the data order; ``deterministic`` also asks for deterministic kernels.
    ``precision``: ``"auto"`` (bfloat16 or float16 mixed precision on CUDA, float32 on CPU),
    ``"32"``, ``"bf16"``, ``"16"``. A NaN or infinite training loss stops training with
    ``TrainingError`` (``detect_nonfinite=False`` turns the check off).

    ``checkpoint``: a folder (saves with the default ``CheckpointSettings``: every epoch,
    every 500 steps, at the end; keeps the last 3 and the best by ``val_loss``), a
    ``CheckpointSettings``, a mapping of its fields (with ``directory``) or a ready
    ``CheckpointManager``. With ``resume`` (the default) a folder that holds checkpoints
    is resumed from its newest good one, mid-epoch if need be, and the run ends with the
    weights it would have had without the interruption (bit for bit on CPU with
    ``deterministic``); ``resume=False`` moves its checkpoints into ``previous/`` and
    starts over. SIGTERM/SIGINT save a checkpoint at the next step and raise
    ``TrainingInterrupted``; running the same call again resumes.
    """
    train = _as_dataset(train, "training")
    validation, test = _as_dataset(validation, "validation"), _as_dataset(test, "test")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs!r}")
    if len(train) == 0:
        raise DataError(f"training set {train.name!r} is empty")
    if not isinstance(accumulate, int) or accumulate < 1:
        raise ConfigError(f"accumulate must be a positive integer, got {accumulate!r}")
    if validate_every is not None and (not isinstance(validate_every, int) or validate_every < 1):
        raise ConfigError(f"validate_every must be a positive number of steps, got {validate_every!r}")
    for name, part in (("validation", validation), ("test", test)):
        if part is not None and part.task != train.task:
            raise DataError(f"the {name} split is {part.task} but the training split is {train.task}")
    batch_size = _resolve_batch_size(batch_size, len(train))
    device = _device(device)
    autocast = _autocast_dtype(precision, device)
    metric_names = check_metric_names(metrics, train.task)
    schedule_obj: Schedule | None = make_schedule(schedule)
    stopper = make_early_stopping(early_stopping)
    all_callbacks = list(callbacks) + ([stopper] if stopper is not None else [])
    if validation is None and (validate_every or any(isinstance(c, EarlyStopping) and c.monitor.startswith("val_")
                                                     for c in all_callbacks)):
        raise ConfigError("early stopping and validate_every need validation data")
    final_activation = _final_activation(model)
    loss_fn = make_loss(loss, final_activation, **(loss_options or {}))
    optimizer_options = dict(optimizer_options or {})
    if weight_decay:
        optimizer_options["weight_decay"] = weight_decay

    settings, manager = _checkpoint_manager(checkpoint)
    hyperparameters = {
        "loss": loss, "optimizer": optimizer, "learning_rate": learning_rate, "epochs": epochs,
        "batch_size": batch_size, "seed": seed, "metrics": list(metric_names),
    }
    for key, value in (("loss_options", loss_options), ("optimizer_options", optimizer_options),
                       ("schedule", schedule if not isinstance(schedule, Schedule) else type(schedule).__name__),
                       ("accumulate", accumulate if accumulate != 1 else None), ("clip_norm", clip_norm),
                       ("clip_value", clip_value), ("validate_every", validate_every),
                       ("early_stopping", early_stopping if not isinstance(early_stopping, EarlyStopping) else True),
                       ("deterministic", deterministic or None)):
        if value:
            hyperparameters[key] = value
    data_fingerprint = train.fingerprint() if manager is not None else None

    seed_everything(seed)
    if preprocessing is not None:
        sample = train.sample(PREPROCESSING_SAMPLE, seed) if _is_streamed(train) else train.x
        preprocessing.fit(sample)
        if hasattr(preprocessing, "fit_targets"):
            preprocessing.fit_targets(train.y)
    model.to(device)
    opt = make_optimizer(optimizer, model.parameters(), learning_rate, **optimizer_options)
    num_classes = len(train.labels) if getattr(train, "labels", None) else None
    with deterministic_algorithms(deterministic):
        train_split = _Split(train, preprocessing, device, num_workers)
        validation_split = _Split(validation, preprocessing, device, num_workers) if validation is not None else None
        scaler = torch.amp.GradScaler("cuda") if autocast == torch.float16 else None
        bar = make_progress(progress)
        run = _Run(model=model, train=train_split, validation=validation_split, loss_fn=loss_fn, optimizer=opt,
                   schedule=schedule_obj, metrics=metric_names, callbacks=CallbackList(all_callbacks),
                   progress=bar, device=device, autocast=autocast, scaler=scaler, epochs=epochs,
                   batch_size=batch_size, accumulate=accumulate, clip_norm=clip_norm, clip_value=clip_value,
                   detect_nonfinite=detect_nonfinite, validate_every=validate_every, num_classes=num_classes,
                   final_activation=final_activation, seed=seed, drop_last=drop_last, learning_rate=learning_rate)
        if schedule_obj is not None:
            schedule_obj.start(opt, steps_per_epoch=run.optimizer_steps_per_epoch(),
                               total_steps=run.optimizer_steps_per_epoch() * epochs)
        if manager is not None:
            from ..checkpoint.export import manifest_pieces

            if not resume:
                from .checkpointing import set_aside_checkpoints

                manager.close()
                set_aside_checkpoints(manager.directory)
                manager = settings.manager() if settings is not None else manager
            fingerprint = {**hyperparameters, "data": data_fingerprint, "train_samples": len(train),
                           "validation_samples": len(validation) if validation is not None else 0,
                           "architecture": architecture_digest(model), "drop_last": drop_last,
                           "precision": str(autocast) if autocast is not None else "float32"}
            run.checkpoints = _Checkpointing(
                manager, run, callbacks=_stateful_callbacks(all_callbacks, stopper),
                fingerprint=run_fingerprint(fingerprint),
                pieces=manifest_pieces(model, labels=train.labels, preprocessing=preprocessing, task=train.task,
                                       hyperparameters=hyperparameters))
            run.checkpoints.restore()  # the last thing before training: it sets every random state
        try:
            run.train()
        finally:
            bar.close()
        test_metrics = test_report = None
        if test is not None:
            test_split = _Split(test, preprocessing, device, num_workers)
            test_metrics, test_report = _evaluate_split(model, test_split, loss_fn, metrics=metric_names,
                                                        num_classes=num_classes, final_activation=final_activation,
                                                        autocast=autocast)
    hyperparameters = {**hyperparameters, "epochs_run": run.state.epoch}
    order = ["loss", "optimizer", "learning_rate", "epochs", "epochs_run", "batch_size", "seed", "metrics"]
    hyperparameters = {key: hyperparameters[key] for key in order + [k for k in hyperparameters if k not in order]}
    checkpoints = run.checkpoints if isinstance(run.checkpoints, _Checkpointing) else None
    return FitResult(model, run.history, test_metrics, train.labels, preprocessing, train.task, hyperparameters,
                     data_fingerprint or train.fingerprint(), opt, test_report, run.step_history,
                     stopper.stopped_epoch is not None if stopper else False,
                     stopper.best_epoch if stopper else None,
                     resumed_from=run.state.resumed_from,
                     checkpoint_dir=checkpoints.directory if checkpoints is not None else None)


def _checkpoint_manager(checkpoint: Any) -> tuple[CheckpointSettings | None, Any]:
    """``(settings, manager)`` for fit's ``checkpoint`` argument; ``(None, None)`` when there is none."""
    if checkpoint is None or checkpoint is False:
        return None, None
    if hasattr(checkpoint, "save") and hasattr(checkpoint, "restore") and hasattr(checkpoint, "should_save"):
        return None, checkpoint  # a CheckpointManager (or anything with its interface)
    if isinstance(checkpoint, (str, os.PathLike)):
        settings = CheckpointSettings(directory=str(checkpoint))
    elif isinstance(checkpoint, CheckpointSettings):
        settings = checkpoint
    elif isinstance(checkpoint, dict):
        settings = CheckpointSettings.from_config(checkpoint)
    else:
        raise ConfigError("checkpoint must be a folder, a CheckpointSettings, a mapping of its fields or a "
                          f"CheckpointManager, got {type(checkpoint).__name__}")
    if not settings.enabled:
        return None, None
    return settings, settings.manager()


def _stateful_callbacks(callbacks: Sequence[Any], stopper: Any) -> dict[str, Any]:
    """The callbacks a checkpoint carries, by a name that is stable from one run of the same code to the next."""
    named = {}
    for index, callback in enumerate(callbacks):
        if callable(getattr(callback, "state_dict", None)) and callable(getattr(callback, "load_state_dict", None)):
            name = "early_stopping" if callback is stopper else f"{index}.{type(callback).__name__}"
            named[name] = callback
    return named
