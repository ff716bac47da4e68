"""Incremental updates: a saved model trained on a stream of new batches, with checkpoints and exact resume.

``update_stream(FILE, batches, checkpoint=DIR, every=N)`` takes one optimizer step per batch the
stream yields — a generator of ``(x, y)`` pairs, or a ``FolderStream`` over a folder where new
``.csv``/``.npy``/``.npz`` files appear — and checkpoints every ``N`` batches through the
``CheckpointManager``. Everything continued training does holds here too (``continued.py``): the
file's network, classes and fitted preprocessing (never refitted), its optimizer state when it fits,
the lineage with both data fingerprints and a before/after table when test sets are given.

The exact-resume contract. A checkpoint holds the weights, the optimizer state, every random state,
the running history and the stream's position; after a kill, calling ``update_stream`` again with
the same arguments continues from the newest checkpoint and ends bit-identical (on CPU) to a run
never interrupted, provided the stream replays:

* a generator (any iterable) must yield the same batches in the same order when it is made again:
  on resume the first ``k`` batches it yields are skipped, ``k`` being the batches the checkpoint
  had consumed (a generator over files listed in a fixed order, or seeded, qualifies; one reading a
  socket does not);
* a folder is replayed by name: the checkpoint records which files were consumed (and how many
  batches of the file in progress), and files are taken in name order, so a file that appears later
  must sort after those already consumed (timestamped names do). A file must appear whole: write it
  elsewhere and rename it into the folder (names starting with ``.`` or ending in ``.tmp``/``.part``
  are never read).

The stream ends when it is exhausted, after ``max_batches`` batches in all (counted across resumes,
so a resumed run stops where the uninterrupted one did), when a folder has brought nothing new for
``until_idle`` seconds, or on SIGTERM/SIGINT; each end saves a checkpoint, so running the same call
again later picks up what arrived since. This module never writes a model file: the caller saves
the result (``save(result, path, optimizer=result.optimizer)`` keeps the optimizer state for the
next update).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import xxhash

from ..errors import CheckpointError, ConfigError, DataError
from .continued import (ContinuedResult, KeptPreprocessing, continued_lineage, evaluate_tests, fit_to_parent,
                        load_optimizer_state, open_parent, read_options)

__all__ = ["FolderStream", "update_stream"]

SKIPPED_SUFFIXES = (".tmp", ".part")
STREAM_SUFFIXES = (".csv", ".npy", ".npz")


class ReplayedStream:
    """Any iterable of batches, replayable by position: its state is how many batches it has yielded."""

    def __init__(self, batches: Iterable[Any]) -> None:
        self.batches = batches
        self.consumed = 0
        self.skip = 0

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consumed = self.skip = int(state["consumed"])

    def stop(self) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        for index, batch in enumerate(self.batches):
            if index < self.skip:
                continue  # consumed before the checkpoint this run resumed from
            self.consumed = index + 1
            yield batch


class FolderStream:
    """New data files in ``directory``, in name order, each read for the model and cut into batches of
    ``batch_size`` rows (the whole file when None). Polls every ``poll`` seconds; ends after ``until_idle``
    seconds without a new file (0: one pass over what is there; None: never, until ``stop()``)."""

    def __init__(self, directory: str | os.PathLike[str], *, batch_size: int | None = None, poll: float = 1.0,
                 until_idle: float | None = 0.0, read_options: dict[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ConfigError(f"the folder to watch, {str(directory)!r}, is not a folder")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError(f"batch_size must be a positive whole number or None, got {batch_size!r}")
        if not poll > 0 or (until_idle is not None and until_idle < 0):
            raise ConfigError("poll must be positive and until_idle a number of seconds (0 or more) or None")
        self.batch_size, self.poll, self.until_idle = batch_size, float(poll), until_idle
        self.read_options = dict(read_options or {})
        self.done: list[str] = []
        self.current: str | None = None
        self.offset = 0
        self.stopped = False
        self.stop_when: Any = None  # a check polled while waiting (update_stream: a signal arrived)

    def state_dict(self) -> dict[str, Any]:
        return {"done": list(self.done), "current": self.current, "offset": self.offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done, self.current, self.offset = list(state["done"]), state["current"], int(state["offset"])

    def stop(self) -> None:
        self.stopped = True

    def pending(self) -> list[Path]:
        """Files not yet consumed, in name order."""
        seen = set(self.done)
        return sorted(p for p in self.directory.iterdir() if p.is_file() and p.name not in seen
                      and not p.name.startswith(".") and not p.name.endswith(SKIPPED_SUFFIXES)
                      and p.suffix.lower() in STREAM_SUFFIXES)

    def __iter__(self) -> Iterator[Any]:
        from ..data.datasets import load_data

        idle_since = time.monotonic()
        while not self.stopped:
            files = self.pending()
            if not files:
                if self.until_idle is not None and time.monotonic() - idle_since >= self.until_idle:
                    return
                if self.stop_when is not None and self.stop_when():
                    return
                time.sleep(self.poll)
                continue
            for path in files:
                dataset = load_data(str(path), **self.read_options)
                size = self.batch_size or max(len(dataset), 1)
                skip = self.offset if path.name == self.current else 0
                self.current, self.offset = path.name, skip
                for start in range(skip * size, len(dataset), size):
                    self.offset += 1
                    yield dataset.subset(list(range(start, min(start + size, len(dataset)))),
                                         name=f"{path.name}[{start}:]")
                    if self.stopped:
                        return
                self.done.append(path.name)
                self.current, self.offset = None, 0
            idle_since = time.monotonic()


@dataclass
class _Progress:
    """The update's own running record (a checkpointed stateful object): batches, losses, data fingerprint."""

    every: int
    batches: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    fingerprint: str = ""
    records: list[dict[str, float]] = field(default_factory=list)

    def add(self, loss: float, data_fingerprint: str) -> None:
        self.batches += 1
        self.loss_sum += loss
        self.loss_count += 1
        chained = xxhash.xxh3_128((self.fingerprint + data_fingerprint).encode())  # order matters, as it does
        self.fingerprint = f"xxh3-128:{chained.hexdigest()}"
        if self.batches % self.every == 0:
            self.close_record()

    def close_record(self) -> None:
        if self.loss_count:
            self.records.append({"epoch": len(self.records) + 1, "batches": self.batches,
                                 "loss": self.loss_sum / self.loss_count})
            self.loss_sum, self.loss_count = 0.0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "loss_sum": self.loss_sum, "loss_count": self.loss_count,
                "fingerprint": self.fingerprint, "records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches, self.loss_sum = int(state["batches"]), float(state["loss_sum"])
        self.loss_count, self.fingerprint = int(state["loss_count"]), str(state["fingerprint"])
        self.records = [dict(r) for r in state["records"]]


def _stream(batches: Any) -> Any:
    if isinstance(batches, (FolderStream, ReplayedStream)):
        return batches
    if isinstance(batches, (str, os.PathLike)):
        raise ConfigError("to watch a folder pass FolderStream(folder, ...); batches takes an iterable of (x, y)")
    if not hasattr(batches, "__iter__"):
        raise ConfigError(f"batches must be an iterable of (x, y) pairs or a FolderStream, got "
                          f"{type(batches).__name__}")
    return ReplayedStream(batches)


def _run_settings(parent: Any, options: dict[str, Any]) -> dict[str, Any]:
    """What decides the numbers of an update (compared on resume), with the file's recorded choices as defaults."""
    recorded = dict(parent.manifest.hyperparameters or {})
    settings = {"optimizer": options.get("optimizer") or recorded.get("optimizer") or "adam",
                "learning_rate": float(options.get("learning_rate") or recorded.get("learning_rate") or 1e-3),
                "loss": options.get("loss") or recorded.get("loss") or "categorical_crossentropy",
                "loss_options": recorded.get("loss_options") if not options.get("loss") else None,
                "seed": int(options.get("seed") or 0), "parent": parent.content_hash}
    if settings["optimizer"] == recorded.get("optimizer") and isinstance(recorded.get("optimizer_options"), dict):
        settings["optimizer_options"] = recorded["optimizer_options"]
    return settings


def update_stream(model: Any, batches: Any, *, checkpoint: str | os.PathLike[str] | None = None, every: int = 10,
                  max_batches: int | None = None, learning_rate: float | None = None, optimizer: str | None = None,
                  loss: str | None = None, seed: int = 0, device: str = "cpu", test: Any = None,
                  old_test: Any = None, on_batch: Any = None) -> ContinuedResult:
    """Train the saved ``model`` (a file or a loaded ``Model``) one step per batch of ``batches``.

    ``batches``: an iterable of ``(x, y)`` pairs (or Datasets), or a ``FolderStream``. ``checkpoint``:
    the folder checkpoints go to every ``every`` batches and at the end; with one, a second call resumes
    (see the module docstring for what the stream must promise). ``learning_rate``, ``optimizer`` and
    ``loss`` default to what the file recorded. ``test``/``old_test`` are scored before and after.
    ``on_batch(batches_done, loss)`` is called after every step. Returns a ``ContinuedResult`` whose
    ``lineage.mode`` is ``"stream"``; ``result.stopped_by`` says why the stream ended."""
    from ..checkpoint import CheckpointManager, CheckpointState, EveryNSteps, KeepLastN, SignalGuard
    from .runtime import seed_everything
    from .settings import FitSettings

    if not isinstance(every, int) or every < 1:
        raise ConfigError(f"every must be a positive whole number of batches, got {every!r}")
    parent = open_parent(model)
    stream = _stream(batches)
    if isinstance(stream, FolderStream) and not stream.read_options:
        stream.read_options = read_options(parent)
    run = _run_settings(parent, {"optimizer": optimizer, "learning_rate": learning_rate, "loss": loss, "seed": seed})
    if isinstance(stream, FolderStream):
        run["batch_size"] = stream.batch_size  # it decides where a file's batches fall
    step = _Step(parent, run, device)
    tests = {name: fit_to_parent(data, parent, name.replace("_", " ")) for name, data in
             (("old_test", old_test), ("new_test", test)) if data is not None}
    evaluation = FitSettings(loss=run["loss"], loss_options=run["loss_options"], device=device)
    before = evaluate_tests(step.module, tests, evaluation, step.preprocessing)
    seed_everything(seed)
    progress = _Progress(every)
    manager = state = None
    if checkpoint is not None:
        manager = CheckpointManager(checkpoint, save_on=EveryNSteps(every), keep=KeepLastN(2), asynchronous=False)
        state = CheckpointState(step.module, step.optimizer, callbacks={"stream": stream, "update": progress})
        _restore(manager, state, run)
    stopped_by = "end of stream"
    with SignalGuard() as guard:
        if isinstance(stream, FolderStream):
            stream.stop_when = lambda: guard.requested is not None
        try:
            for batch in _bounded(stream, progress, max_batches):
                data = fit_to_parent(batch, parent, "stream batch")
                progress.add(step.train(data), data.fingerprint())
                if on_batch is not None:
                    on_batch(progress.batches, progress.records[-1]["loss"] if progress.records else math.nan)
                if manager is not None and progress.batches % every == 0:
                    _save(manager, state, progress, run)
                if guard.requested:
                    stream.stop()
                    stopped_by = guard.requested
                    break
            else:
                if guard.requested:
                    stopped_by = guard.requested
                elif max_batches is not None and progress.batches >= max_batches:
                    stopped_by = "max_batches"
            if manager is not None and progress.batches % every:  # the end too: a later call picks up here
                _save(manager, state, progress, run)  # (never after an error: its step may be half done)
        finally:
            if manager is not None:
                manager.close()
    if progress.batches == 0:
        raise DataError("the stream brought no batch; nothing was trained (a folder with no new .csv/.npy/.npz "
                        "files, or a resumed update that had already consumed the whole stream)")
    return _result(parent, step, progress, run, tests, before, evaluate_tests(step.module, tests, evaluation,
                                                                          step.preprocessing), stopped_by)


def _bounded(stream: Any, progress: _Progress, max_batches: int | None) -> Iterator[Any]:
    if max_batches is not None and progress.batches >= max_batches:
        return
    for batch in stream:
        yield batch
        if max_batches is not None and progress.batches >= max_batches:
            return


def _restore(manager: Any, state: Any, run: dict[str, Any]) -> None:
    restored = manager.restore(state)
    if restored is None:
        return
    saved = (restored.extra or {}).get("update") if isinstance(restored.extra, dict) else None
    if saved != run:
        raise CheckpointError(f"the checkpoints in {manager.directory} were written by another update "
                              f"({saved} here, {run} now); use the same model and settings to resume, or "
                              "another checkpoint folder to start over")


def _save(manager: Any, state: Any, progress: _Progress, run: dict[str, Any]) -> None:
    from ..checkpoint import Position

    position = Position(0, progress.batches, progress.batches)
    manager.save(state, position, extra={"update": run})


class _Step:
    """The module, optimizer, loss and kept preprocessing of an update, and one optimizer step on a batch."""

    def __init__(self, parent: Any, run: dict[str, Any], device: str) -> None:
        from .batches import input_dtype
        from .evaluation import final_activation
        from .losses import make_loss
        from .optimizers import make_optimizer
        from .runtime import resolve_device

        self.device = resolve_device(device)
        self.module = parent.module.to(self.device)
        self.preprocessing = KeptPreprocessing(parent.preprocessing) if parent.preprocessing is not None else None
        self.dtype = input_dtype(self.module)
        self.loss_fn = make_loss(run["loss"], final_activation(self.module), **(run["loss_options"] or {}))
        self.optimizer = make_optimizer(run["optimizer"], self.module.parameters(), run["learning_rate"],
                                        **(run.get("optimizer_options") or {}))
        self.optimizer_state = load_optimizer_state(self.optimizer, parent)

    def train(self, data: Any) -> float:
        from .batches import Split

        split = Split(data, self.preprocessing, self.device, 0, dtype=self.dtype)
        self.module.train()
        loss = self.loss_fn(self.module(split.x), split.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            from ..errors import TrainingError

            raise TrainingError(f"the loss on batch {data.name!r} is {value}; lower the learning rate")
        return value


def _result(parent: Any, step: _Step, progress: _Progress, run: dict[str, Any], tests: dict[str, Any],
            before: dict[str, Any], after: dict[str, Any], stopped_by: str) -> ContinuedResult:
    from .history import History

    progress.close_record()
    table = {name: {"samples": len(data), "data_fingerprint": data.fingerprint(), "before": before[name],
                    "after": after[name]} for name, data in tests.items()}
    hyper = {key: value for key, value in run.items() if key != "parent" and value is not None}
    hyper.update(batches=progress.batches, optimizer_state="continued from the parent"
                 if step.optimizer_state is None else "fresh")
    lineage = continued_lineage(parent, progress.fingerprint, table, mode="stream",
                                extra={"batches": progress.batches})
    test_metrics = after.get("new_test")
    return ContinuedResult(step.module, History(progress.records), test_metrics, parent.labels,
                           parent.preprocessing, parent.manifest.task or "classification", hyper,
                           progress.fingerprint, step.optimizer, lineage=lineage, evaluation=table,
                           stopped_by=stopped_by)
