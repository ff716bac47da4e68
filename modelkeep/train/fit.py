"""``fit``: train a model, validate every epoch (or every N steps), test once at the end.

``fit`` assembles and hands over; it holds no loop of its own. In order it:
makes the ``FitSettings`` (``settings.py``) and resolves them against the data;
seeds every random source; fits the preprocessing on the training split only;
builds the collaborators (``Trainables``: loss and regularizer penalties, the
optimizer over the parameter groups, schedule, GradScaler, mode policies, the
process strategy's wrapping of the model); cuts the data (``batches.py``);
attaches checkpointing (``checkpointing.py``), restoring the newest good
checkpoint as the last thing before training; runs ``loop.TrainingLoop``; and
evaluates the test split.

The test split is evaluated exactly once, after training and after the best
weights are restored; nothing touches it before.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import ConfigError, DataError
from .batches import BatchPlan, Split, as_dataset, fit_preprocessing, input_dtype
from .checks import check_inputs, check_loss_fits
from .continued import continuable
from .callbacks import CallbackList, EarlyStopping, make_early_stopping
from .checkpointing import (CheckpointSettings, OptimizerLayout, _Checkpointing, architecture_digest,
                            run_fingerprint)
from .evaluation import evaluate_split, final_activation
from .loop import LoopData, Trainables, TrainingLoop
from .losses import make_loss, training_objective
from .modes import keep_user_eval
from .optimizers import make_optimizer
from .param_groups import ParameterGroups
from .progress import make_progress
from .result import FitResult
from .runtime import deterministic_algorithms, seed_everything
from .schedules import make_schedule
from .settings import FitSettings, fit_signature
from .strategy import SingleProcess, local_batch_size, whole_model

__all__ = ["fit"]


@dataclass
class _Inputs:
    """What one ``fit`` call was given, after checking: the settings and the live collaborators."""

    settings: FitSettings
    model: torch.nn.Module
    train: Any
    validation: Any
    test: Any
    preprocessing: Any
    callbacks: list[Any]
    stopper: EarlyStopping | None
    strategy: Any

    @property
    def num_classes(self) -> int | None:
        return len(self.train.labels) if getattr(self.train, "labels", None) else None

    @property
    def input_dtype(self) -> torch.dtype:
        return input_dtype(self.model)


@continuable  # fit(..., init_from=FILE, old_test=...): continued training (continued.py), which calls fit again
def fit(
    model: torch.nn.Module,
    train: Any,
    validation: Any = None,
    test: Any = None,
    *,
    settings: FitSettings | None = None,
    preprocessing: Any = None,
    callbacks: Sequence[Any] = (),
    progress: str | bool = "auto",
    checkpoint: Any = None,
    resume: bool = True,
    strategy: Any = None,
    **options: Any,
) -> FitResult:
    """Train ``model`` on ``train``; validate each epoch on ``validation``; test once on ``test``.

    ``options`` are the fields of ``FitSettings`` (or pass ``settings=FitSettings(...)``;
    options given beside it replace its fields). ``batch_size``: an integer (mini-batch),
    ``"full"`` (full-batch gradient descent) or 1 / ``"sample"`` (per-sample);
    ``accumulate`` micro-batches per optimizer step; ``clip_norm``/``clip_value`` clip
    gradients. ``schedule``: a name or dict (see ``modelkeep.train.schedules``);
    ``early_stopping``: True, a patience, or a dict (``monitor``, ``patience``,
    ``min_delta``, ``restore_best_weights``). ``metrics`` (accuracy, precision, recall, f1 — for two classes the
    positive class's, as in scikit-learn — and their ``*_macro``; rmse, mae, r2, mse) cover whole splits. ``preprocessing`` (for example
    ``Standardize()``) is fitted on ``train`` only and returned in the result so ``save``
    stores it. ``seed`` seeds every random source and fixes the data order;
    ``deterministic`` also asks for deterministic kernels. ``precision``: ``"auto"``
    (bfloat16 or float16 mixed precision on CUDA, float32 on CPU), ``"32"``, ``"bf16"``,
    ``"16"``. A NaN or infinite training loss stops training with ``TrainingError``
    (``detect_nonfinite=False`` turns the check off).

    Fine-tuning: ``regularizers`` (e.g. ``L2Toward``) add penalties to the training loss;
    ``param_groups`` (``GroupRule``s) give parameters their own learning-rate scale, weight
    decay or ``frozen=True`` (a callback unfreezes them later with ``state.unfreeze(...)``);
    ``mode_policies`` keep chosen modules in eval mode while training — modules the user put
    in eval with all their parameters frozen always stay there. ``strategy``: how many
    processes train (``SingleProcess()``; under torchrun ``distributed.training_processes``, docs/scale.md).

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
    settings = FitSettings.from_options(settings, **options)
    train, validation, test = _checked_splits(train, validation, test)
    settings = settings.resolve(len(train), train.task)
    stopper = make_early_stopping(settings.early_stopping)
    inputs = _Inputs(settings, model, train, validation, test, preprocessing,
                     [*callbacks, *([stopper] if stopper is not None else [])], stopper,
                     strategy if strategy is not None else SingleProcess())
    _check_before_training(inputs)
    checkpoint_settings, manager = _checkpoint_manager(checkpoint, reader=not inputs.strategy.is_coordinator)
    data_fingerprint = train.fingerprint() if manager is not None else None
    seed_everything(settings.seed)
    fit_preprocessing(preprocessing, train, settings.seed)
    parts = _trainables(inputs)
    with deterministic_algorithms(settings.deterministic):
        loop = _training_loop(inputs, parts, progress)
        if manager is not None:
            loop.checkpoints = _checkpointing(inputs, loop, manager, checkpoint_settings, resume=resume,
                                              data_fingerprint=data_fingerprint)
            loop.checkpoints.restore()  # the last thing before training: it sets every random state
        try:
            loop.train()
        finally:
            loop.progress.close()
        test_metrics, test_report = _test_once(inputs, parts)
    checkpoints = loop.checkpoints if isinstance(loop.checkpoints, _Checkpointing) else None
    recorded = _recorded(settings, epochs_run=loop.state.epoch, frozen=parts.parameter_groups.frozen_names())
    return FitResult(whole_model(inputs.strategy, parts.model), loop.history, test_metrics, train.labels, preprocessing, train.task, recorded,
                     data_fingerprint or train.fingerprint(), parts.optimizer, test_report, loop.step_history,
                     stopped_early=stopper.stopped_epoch is not None if stopper else False,
                     best_epoch=stopper.best_epoch if stopper else None, resumed_from=loop.state.resumed_from,
                     checkpoint_dir=checkpoints.directory if checkpoints is not None else None)


fit.__signature__ = fit_signature(fit)  # type: ignore[attr-defined]  # help(fit) lists every option


def _checked_splits(train: Any, validation: Any, test: Any) -> tuple[Any, Any, Any]:
    train = as_dataset(train, "training")
    validation, test = as_dataset(validation, "validation", like=train), as_dataset(test, "test", like=train)
    if len(train) == 0:
        raise DataError(f"training set {train.name!r} is empty")
    for name, part in (("validation", validation), ("test", test)):
        if part is not None and part.task != train.task:
            raise DataError(f"the {name} split is {part.task} but the training split is {train.task}")
    return train, validation, test


def _check_before_training(inputs: _Inputs) -> None:
    """The data against the model, the loss against both, and what early stopping needs (``checks.py``)."""
    check_inputs(inputs.model, {"training": inputs.train, "validation": inputs.validation, "test": inputs.test})
    check_loss_fits(inputs.model, inputs.settings.loss, inputs.train)
    if inputs.validation is None and (inputs.settings.validate_every or any(
            isinstance(c, EarlyStopping) and c.monitor.startswith("val_") for c in inputs.callbacks)):
        raise ConfigError("early stopping and validate_every need validation data")


def _recorded(settings: FitSettings, *, epochs_run: int, frozen: Sequence[str] = ()) -> dict[str, Any]:
    """The file's hyperparameters: the recorded settings with ``epochs_run`` after ``epochs``, and the names
    of the parameters still frozen at the end (by a group rule or the user's ``requires_grad_(False)``)."""
    out: dict[str, Any] = {}
    for key, value in settings.hyperparameters().items():
        out[key] = value
        if key == "epochs":
            out["epochs_run"] = epochs_run
    if frozen:
        out["frozen"] = list(frozen)
    return out


def _trainables(inputs: _Inputs) -> Trainables:
    """Model on its device and wrapped by the strategy; loss, optimizer, schedule, scaler and mode policies."""
    settings = inputs.settings
    inputs.model.to(settings.torch_device)
    module = inputs.strategy.wrap(inputs.model)
    model = inputs.strategy.unwrap(module)  # the loss wiring, checkpoints and the result read the model itself
    policies = (keep_user_eval(model), *settings.mode_policies)  # before any mode switch: what the user froze
    final = final_activation(model)
    loss_fn = make_loss(settings.loss, final, **(settings.loss_options or {}))
    optimizer_options = dict(settings.optimizer_options or {})
    if settings.weight_decay:
        optimizer_options["weight_decay"] = settings.weight_decay
    groups = ParameterGroups(model, settings.param_groups, learning_rate=settings.learning_rate)
    optimizer = make_optimizer(settings.optimizer, groups.param_groups(), settings.learning_rate, **optimizer_options)
    scaler = torch.amp.GradScaler("cuda") if settings.autocast_dtype == torch.float16 else None
    for callback in inputs.callbacks:  # before any checkpoint restore, which then wins (continued.py)
        getattr(callback, "on_optimizer_ready", lambda optimizer: None)(optimizer)
    return Trainables(model, module, training_objective(loss_fn, settings.regularizers, model), loss_fn, optimizer,
                      make_schedule(settings.schedule), scaler, final, policies, groups)


def _training_loop(inputs: _Inputs, parts: Trainables, progress: Any) -> TrainingLoop:
    """The splits on the device, this process's batch plan, progress output, and the loop over them."""
    settings, strategy = inputs.settings, inputs.strategy
    device = settings.torch_device
    dtype = inputs.input_dtype
    train = Split(inputs.train, inputs.preprocessing, device, settings.num_workers, dtype=dtype)
    validation = (Split(inputs.validation, inputs.preprocessing, device, settings.num_workers, dtype=dtype)
                  if inputs.validation is not None else None)
    samples = len(strategy.shard(torch.arange(len(inputs.train))))
    batch_size = local_batch_size(settings.batch_size, strategy.world_size, len(inputs.train))  # global batch
    plan = BatchPlan(samples, batch_size, settings.accumulate, settings.drop_last)
    loop = TrainingLoop(settings, parts, LoopData(train, validation, plan, strategy.shard, inputs.num_classes, strategy),
                        callbacks=CallbackList(inputs.callbacks),
                        progress=make_progress(progress if strategy.is_coordinator else False))
    if parts.schedule is not None:
        parts.schedule.start(parts.optimizer, steps_per_epoch=plan.optimizer_steps_per_epoch,
                             total_steps=plan.optimizer_steps_per_epoch * settings.epochs)
    return loop


def _test_once(inputs: _Inputs, parts: Trainables) -> tuple[dict[str, float] | None, dict[str, Any] | None]:
    if inputs.test is None:
        return None, None
    settings = inputs.settings
    split = Split(inputs.test, inputs.preprocessing, settings.torch_device, settings.num_workers,
                  dtype=inputs.input_dtype)
    return evaluate_split(parts.model, split, parts.loss_fn, metrics=settings.metrics, num_classes=inputs.num_classes,
                          final_activation=parts.final_activation, autocast=settings.autocast_dtype,
                          mode_policies=parts.mode_policies, strategy=inputs.strategy)


def _checkpoint_manager(checkpoint: Any, *, reader: bool = False) -> tuple[CheckpointSettings | None, Any]:
    """``(settings, manager)`` for fit's ``checkpoint`` argument; ``(None, None)`` when there is none.
    ``reader``: this process restores but does not write (not the coordinator of several processes)."""
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
    return settings, settings.manager(reader=reader)


def _checkpointing(inputs: _Inputs, loop: TrainingLoop, manager: Any, checkpoint_settings: CheckpointSettings | None,
                   *, resume: bool, data_fingerprint: str | None) -> _Checkpointing:
    """The loop's checkpointing: the settings a resume must match, the stateful objects, the manifest pieces."""
    from ..checkpoint.export import manifest_pieces

    settings, parts = inputs.settings, loop.parts
    if not resume:
        from ..checkpoint.storage import set_aside_checkpoints

        manager.close()
        inputs.strategy.barrier()  # several processes: every one has seen the old checkpoints before they move
        if inputs.strategy.is_coordinator:
            set_aside_checkpoints(manager.directory)
        inputs.strategy.barrier()
        manager = (checkpoint_settings.manager(reader=not inputs.strategy.is_coordinator)
                   if checkpoint_settings is not None else manager)
    fingerprint = {**settings.fingerprint(), "data": data_fingerprint, "train_samples": len(inputs.train),
                   "validation_samples": len(inputs.validation) if inputs.validation is not None else 0,
                   "architecture": architecture_digest(parts.model)}
    stateful = _stateful_callbacks(inputs.callbacks, inputs.stopper)
    stateful.update({f"regularizers.{i}.{type(r).__name__}": r for i, r in enumerate(settings.regularizers)})
    pieces = manifest_pieces(parts.model, labels=inputs.train.labels, preprocessing=inputs.preprocessing,
                             task=inputs.train.task, hyperparameters=settings.hyperparameters())
    return _Checkpointing(manager, loop, callbacks=stateful, fingerprint=run_fingerprint(fingerprint), pieces=pieces,
                          structure={"param_groups": OptimizerLayout(parts.parameter_groups, parts.optimizer)},
                          strategy=inputs.strategy)


def _stateful_callbacks(callbacks: Sequence[Any], stopper: Any) -> dict[str, Any]:
    """The callbacks a checkpoint carries, by a name that is stable from one run of the same code to the next."""
    named = {}
    for index, callback in enumerate(callbacks):
        if callable(getattr(callback, "state_dict", None)) and callable(getattr(callback, "load_state_dict", None)):
            name = "early_stopping" if callback is stopper else f"{index}.{type(callback).__name__}"
            named[name] = callback
    return named
