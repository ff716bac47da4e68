"""The training loop: epochs of batches, optimizer steps, validation, callbacks, checkpoint boundaries.

The loop's position is three numbers in ``LoopState`` — ``epoch`` (epochs
completed, i.e. the 0-based index of the epoch in progress), ``batch`` (the next
batch within that epoch) and ``step`` (optimizer steps done). With the data
order a pure function of ``(seed, epoch)`` (``batches.epoch_permutation``), a
run can resume at any ``(epoch, batch)``; everything else a resume needs is
stateful and says so (model, optimizer, schedule, GradScaler, callbacks,
regularizers, the histories, the epoch's running loss, the RNGs). The loop
calls its checkpointing at exactly two places: after an optimizer step and
after an epoch's end-of-epoch work (``checkpointing._Checkpointing``).

Speed: the epoch's losses stay on the device and are read once per epoch, so a
step never waits for the host (the progress bar reads a loss a few times a
second at most, the NaN check every ``NONFINITE_CHECK_EVERY`` steps).

Every switch between training and evaluation goes through the mode policies
(``modes.set_mode``), so a module the user froze in eval mode stays in eval.

Several processes (``LoopData.strategy``): each runs its shard of every global batch; the
epoch's batch losses are replaced by their mean over the processes (``EpochLoss.share``) at the
epoch's end and before every checkpoint, so the history, early stopping and the checkpoint see
the loss of the global batch, the same on every process. Validation is sharded the same way
(``evaluation.evaluate_split``).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from ..errors import TrainingError
from .batches import BatchPlan, Split, epoch_batches
from .callbacks import CallbackList
from .checkpointing import _NoCheckpoints
from .evaluation import evaluate_split
from .history import History
from .modes import set_mode
from .settings import FitSettings

__all__ = ["LoopState", "NONFINITE_CHECK_EVERY", "TrainingLoop", "Trainables"]

NONFINITE_CHECK_EVERY = 64


@dataclass
class LoopState:
    """What callbacks see: the loop's position, a stop flag and the model — not the trainer.

    ``epoch``: epochs completed (so the 0-based index of the epoch in progress);
    ``batch``: index of the next batch within that epoch; ``step``: optimizer steps done.
    ``model`` is the user's model (unwrapped, whatever the process strategy runs).
    ``unfreeze(...)`` adds frozen parameters to the optimizer mid-run (gradual unfreezing).
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
    unfreeze_with: Callable[..., list[dict[str, Any]]] | None = field(default=None, repr=False)

    def unfreeze(self, names_or_params: Any, rule: Any = None) -> list[dict[str, Any]]:
        """Let frozen parameters train from the next step: ``state.unfreeze("features.*")`` (glob patterns,
        names or parameters). They join the optimizer as new groups with the learning-rate scale and
        weight decay of the ``GroupRule`` that froze them (or of ``rule``), without touching the state of
        the parameters already training; the checkpoint records the new layout, so a resume has it too.
        Returns the optimizer groups added."""
        if self.unfreeze_with is None:
            raise TrainingError("unfreeze() is for callbacks of a running fit()")
        return self.unfreeze_with(names_or_params, rule)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch, self.step = int(state["epoch"]), int(state["batch"]), int(state["step"])


class EpochLoss:
    """The epoch's batch losses, kept on the device; summed (weighted by batch size) when read.

    With several processes ``sizes`` are global batch sizes and ``share`` replaces the losses not
    yet shared by their mean over the processes (every process holds the same number of batches
    of the same size, so that mean is the global batch's loss). Each loss is shared exactly once,
    whenever that happens, so where checkpoints fall does not change a bit of the history.
    """

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.carried_sum = 0.0
        self.carried_count = 0
        self.shared = 0  # losses[:shared] are already the mean over every process

    def share(self, strategy: Any) -> None:
        """Collective: the losses added since the last call become their mean over the processes."""
        if strategy is None or strategy.world_size == 1 or self.shared == len(self.losses):
            return
        fresh = torch.stack(self.losses[self.shared:])
        # gather + a sum in rank order: the same bits on every process (an all-reduce does not promise that)
        mean = (strategy.gather(fresh.double()).sum(dim=0) / strategy.world_size).to(fresh.dtype)
        self.losses[self.shared:] = list(mean.unbind())
        self.shared = len(self.losses)

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
        self.shared = len(self.losses)  # a checkpoint holds shared losses only (checkpointing shares first)


@dataclass
class Trainables:
    """What the loop trains and with what; built by ``fit``.

    ``model`` is the user's model: the loss wiring, callbacks, checkpoints and the
    result see it. ``module`` is what runs forward and backward (the process
    strategy's wrapping of ``model``; the model itself in one process).
    ``objective(output, target)`` is the training loss (the data loss plus any
    regularizer penalties); ``loss_fn`` the data loss alone, for validation.
    """

    model: torch.nn.Module
    module: torch.nn.Module
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    schedule: Any = None
    scaler: Any = None
    final_activation: str | None = None
    mode_policies: tuple[Any, ...] = ()
    parameter_groups: Any = None


@dataclass
class LoopData:
    """The splits the loop reads and how the training split is cut."""

    train: Split
    validation: Split | None
    plan: BatchPlan
    shard: Callable[[torch.Tensor], torch.Tensor]
    num_classes: int | None = None
    strategy: Any = None  # the process strategy (None: one process)


class TrainingLoop:
    """One training run: built by ``fit`` from the settings and its collaborators; ``train()`` is the loop."""

    def __init__(self, settings: FitSettings, parts: Trainables, data: LoopData, *, callbacks: CallbackList,
                 progress: Any) -> None:
        self.settings, self.parts, self.data = settings, parts, data
        self.model, self.optimizer = parts.model, parts.optimizer  # what checkpointing captures, by these names
        self.schedule, self.scaler = parts.schedule, parts.scaler
        self.callbacks, self.progress = callbacks, progress
        self.device = settings.torch_device
        self.autocast = settings.autocast_dtype
        self.plan = data.plan
        self.state = LoopState(epochs=settings.epochs, steps_per_epoch=data.plan.steps_per_epoch, model=parts.model,
                               seed=settings.seed, unfreeze_with=self.unfreeze)
        self.history = History()
        self.step_history = History() if settings.validate_every else None
        self.epoch_loss = EpochLoss()
        self.last_validation: dict[str, float] = {}
        self.checkpoints: Any = _NoCheckpoints()  # fit() puts a _Checkpointing here when asked to
        self.epoch_started = 0.0
        self.epoch_seconds_before = 0.0  # time the epoch in progress ran before a resume
        self._clipped: tuple[int, list[torch.nn.Parameter]] = (-1, [])

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

    def share_epoch_loss(self) -> None:
        """Collective with several processes: the epoch's batch losses become the global batches' (``EpochLoss``)."""
        self.epoch_loss.share(self.data.strategy)

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

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """The optimizer's parameters (for clipping); looked up again when parameter groups were added."""
        groups = self.optimizer.param_groups
        if self._clipped[0] != len(groups):
            self._clipped = (len(groups), [p for group in groups for p in group["params"]])
        return self._clipped[1]

    def unfreeze(self, names_or_params: Any, rule: Any = None) -> list[dict[str, Any]]:
        """``LoopState.unfreeze``: the parameter groups add the parameters to the optimizer."""
        self.checkpoints.before_update()  # an asynchronous save may still be copying the optimizer's state
        return self.parts.parameter_groups.add_to(self.optimizer, names_or_params, rule)

    def check_finite(self, since: int) -> None:
        if self.epoch_loss.latest_nonfinite(since):
            value = self.epoch_loss.mean()
            raise TrainingError(
                f"the training loss became {'nan' if math.isnan(value) else value} in epoch {self.state.epoch + 1} "
                f"(by step {self.state.step}); lower the learning rate (now {self.settings.learning_rate}), add "
                "gradient clipping, or check the data for NaN/inf values"
            )

    def validate(self) -> dict[str, float]:
        parts = self.parts
        scalars, _ = evaluate_split(self.model, self.data.validation, parts.loss_fn, metrics=self.settings.metrics,
                                    num_classes=self.data.num_classes, final_activation=parts.final_activation,
                                    autocast=self.autocast, mode_policies=parts.mode_policies,
                                    strategy=self.data.strategy)
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
        settings = self.settings
        self.checkpoints.before_update()  # an asynchronous save may still be copying the weights
        if settings.clip_norm is not None or settings.clip_value is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if settings.clip_value is not None:
                torch.nn.utils.clip_grad_value_(self.trained_parameters(), settings.clip_value)
            if settings.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.trained_parameters(), settings.clip_norm)
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
        self.notify("on_train_begin", {})
        self.parts.module.train()  # the strategy's wrapper (the model itself in one process), then the policies
        set_mode(self.model, True, self.parts.mode_policies)
        self.optimizer.zero_grad(set_to_none=True)
        with self.checkpoints:
            while self.state.epoch < self.settings.epochs and not self.state.stop_training:
                self.run_epoch()
        self.notify("on_train_end", self.history.records[-1] if self.history.records else {})

    def run_epoch(self) -> None:
        state = self.state
        self.epoch_started = time.perf_counter() - self.epoch_seconds_before
        self.epoch_seconds_before = 0.0
        if state.batch == 0:  # a resume inside an epoch already ran its on_epoch_begin
            self.notify("on_epoch_begin", {})
        self.progress.start_epoch(state.epoch + 1, self.settings.epochs, self.plan.steps_per_epoch)
        checked = self.run_batches(self.epoch_batches())
        if self.settings.detect_nonfinite:
            self.check_finite(checked)
        self.end_epoch()

    def epoch_batches(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        state = self.state
        return epoch_batches(self.data.train, self.plan, seed=self.settings.seed, epoch=state.epoch,
                             start_batch=state.batch, shard=self.data.shard)

    def run_batches(self, batches: Iterator[tuple[int, torch.Tensor, torch.Tensor]]) -> int:
        """Forward, backward and (every ``accumulate`` batches) an optimizer step for each batch; returns the
        number of batch losses already checked for NaN."""
        state, plan, settings = self.state, self.plan, self.settings
        module, objective = self.parts.module, self.parts.objective
        autocast = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
                    else contextlib.nullcontext())
        on_step_end = self.callbacks.has("on_step_end")
        validate_every = settings.validate_every if self.data.validation is not None else None
        checked = len(self.epoch_loss.losses)
        processes = self.data.strategy.world_size if self.data.strategy is not None else 1
        for batch, xb, yb in batches:
            with autocast:
                batch_loss = objective(module(xb), yb)
            scale = plan.group_scale(batch, len(xb))
            scaled = batch_loss * scale if scale != 1.0 else batch_loss
            if self.scaler is not None:
                scaled = self.scaler.scale(scaled)
            scaled.backward()
            detached = batch_loss.detach()
            self.epoch_loss.add(detached, len(xb) * processes)  # the global batch's size
            state.batch = batch + 1
            if state.batch % settings.accumulate == 0 or state.batch == plan.steps_per_epoch:
                self.optimizer_step()
                state.step += 1
                if on_step_end:
                    self.notify("on_step_end", {"loss": detached, "batch": batch})
                if validate_every and state.step % validate_every == 0:
                    self.validate()
                self.checkpoints.step_end(self)
            self.progress.advance(detached)
            if settings.detect_nonfinite and len(self.epoch_loss.losses) - checked >= NONFINITE_CHECK_EVERY:
                self.check_finite(checked)
                checked = len(self.epoch_loss.losses)
            if state.stop_training:
                break
        return checked

    def end_epoch(self) -> None:
        state = self.state
        self.share_epoch_loss()
        logs: dict[str, float] = {"epoch": state.epoch + 1, "loss": self.epoch_loss.mean()}
        # The epoch is done: advance the position before the epoch-end work, so a checkpoint taken in
        # on_epoch_end resumes at the next epoch's first batch.
        state.epoch, state.batch = state.epoch + 1, 0
        self.epoch_loss = EpochLoss()
        if self.data.validation is not None:
            logs.update(self.validate() if not self.settings.validate_every else self.last_validation)
        logs["lr"] = float(self.optimizer.param_groups[0]["lr"])
        logs["time"] = time.perf_counter() - self.epoch_started
        self.history.append(logs)
        self.progress.end_epoch(state.epoch, self.settings.epochs, logs)
        self.notify("on_epoch_end", logs)
        self.checkpoints.epoch_end(self, logs, last=state.epoch >= self.settings.epochs or state.stop_training)
