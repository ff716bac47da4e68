"""The checkpoint manager: when to save, which checkpoints to keep, which one to resume from.

It sits on lower layers and never bypasses them: a checkpoint is written and read back through a
``CheckpointStorage`` backend (``storage.py``: atomic through a committer of ``modelkeep.io``, on a local
folder or any fsspec store), parsed by ``reading.py``, and its content comes from ``state.capture``. From
construction to ``close`` it holds the folder's lock (``io.lock``), so a second process is refused.

Call order, as ``fit`` uses it::

    manager = CheckpointManager(directory, save_on=EveryNSteps(500), keep=KeepLastN(3))
    state = CheckpointState(model, optimizer, scheduler, scaler,
                          callbacks={"early_stopping": early_stopping}, generators={"data_order": generator})
    restored = manager.restore(state)          # None on a fresh start; else position, history, metrics
    with SignalGuard() as guard:
        ...after each optimizer step:
            position = Position(epoch, batch + 1, step)
            if manager.should_save(position) or guard.requested:
                manager.save(state, position, history=history.to_dict())
            if guard.requested:
                manager.close(); print(guard.resume_message(...)); stop
        ...after each epoch's validation and callbacks:
            position = Position(epoch + 1, 0, step)
            if manager.should_save(position, metrics=logs, epoch_end=True):
                manager.save(state, position, metrics=logs, history=history.to_dict())
    manager.close()                             # waits for the save in flight; reports its failure

Deferred snapshot (asynchronous mode, ``defer_copy=True``, the default there):
``save`` copies only what a forward or backward pass may change (module
buffers such as BatchNorm statistics, random states, scheduler, scaler and
callback state, the document) before it returns; the model parameters and the
optimizer state tensors, which only ``optimizer.step()`` changes, are copied
into the snapshot buffers by the background thread, before it hashes and
writes. ``manager.fence()`` blocks until that copy is done (an Event check
when it is); call it before anything that writes weights or optimizer state
other than ``optimizer.step()``. The step itself is fenced automatically: the
manager registers a step pre-hook on the optimizer it saves (without an
optimizer that takes one, nothing is deferred). ``restore``, ``wait`` and ``close`` and the next ``save`` wait
for the whole save anyway.

A failed save raises ``CheckpointError`` (``on_error="stop"``, from ``save``,
or for an asynchronous save from the next ``should_save``/``save``/``close``)
or warns and lets training go on (``on_error="continue"``). Either way the earlier checkpoints are intact.
Retention runs after each successful commit and never deletes the newest verified checkpoint.
"""
from __future__ import annotations

import json
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, FormatError
from ._saving import as_checkpoint_error, checkpoint_metadata, deferrable, reason
from .async_writer import BackgroundWriter
from .policies import EveryNEpochs, KeepLastN, Retention, SaveEvent, Trigger, find_monitor
from .reading import (CHECKPOINT_KEY, CheckpointInfo, CheckpointWarning, Restored, describe_stored, newest_first,
                      position_order, read_stored)
from .snapshot import SnapshotBuffers
from .state import Position, CheckpointState, capture, decode_tree, restore
from .storage import checkpoint_name, checkpoint_storage, is_url, step_of


class CheckpointManager:
    """Saves, keeps and restores the checkpoints of one training run in one folder (see the module docstring).

    ``save_on`` is a trigger (default: every epoch), ``keep`` a retention policy
    (default: the last 3). ``asynchronous=True`` pauses training only to copy
    the state into reusable CPU buffers; writing, hashing and fsync run on a
    background thread, one save at a time. ``on_error`` is ``"stop"`` (raise
    ``CheckpointError``) or ``"continue"`` (warn, record in ``failures``, go on).
    ``defer_copy`` (default: on when asynchronous) leaves the copy of the
    parameters and optimizer state to the background thread too; see ``fence``.
    ``directory`` is a local folder or an fsspec URL; ``storage`` (a
    ``CheckpointStorage``) overrides the backend made from it.
    """

    def __init__(self, directory: str | Path, *, save_on: Trigger | None = None, keep: Retention | None = None,
                 asynchronous: bool = True, on_error: str = "stop", durable: bool = True, storage: Any = None,
                 defer_copy: bool | None = None) -> None:
        if on_error not in ("stop", "continue"):
            raise CheckpointError(f"on_error must be 'stop' or 'continue', got {on_error!r}")
        self.storage = storage if storage is not None else checkpoint_storage(directory)
        self.directory: Path | str = directory if is_url(directory) else Path(directory)
        self.save_on: Trigger = save_on if save_on is not None else EveryNEpochs(1)
        self.keep: Retention = keep if keep is not None else KeepLastN(3)
        self.monitor = find_monitor(self.keep, self.save_on)
        self.asynchronous = asynchronous
        self.on_error = on_error
        self.durable = durable
        self.failures: list[CheckpointError] = []
        self.last_pause_s = 0.0   # how long the last save() held the training thread
        self.last_write_s = 0.0   # how long the last commit (write, hash, fsync, rename) took
        self.last_fence_wait_s = 0.0  # how long fence() waited for the deferred copy since the last save()
        self.defer_copy = asynchronous if defer_copy is None else (bool(defer_copy) and asynchronous)
        self._copied: threading.Event | None = None  # set once the pending save's deferred copy is done
        self._step_hooks: dict[int, tuple[Any, Any]] = {}  # id(optimizer) -> (weakref to it, hook handle)
        self._writer = BackgroundWriter() if asynchronous else None
        self._buffers = SnapshotBuffers()
        self._lock = threading.Lock()
        self._good: dict[str, CheckpointInfo] = {}  # written or fully verified by this process
        self._damaged: set[str] = set()
        self._folder_lock: Any = None
        self._hold_folder()  # before clean(): only the process holding the folder may remove anything in it
        self.cleaned = self.storage.clean()

    def _hold_folder(self) -> None:
        """Take the folder's advisory lock if the backend has one (a second process is refused, naming this one)."""
        take = getattr(self.storage, "lock", None)
        if take is not None and self._folder_lock is None:
            self._folder_lock = take(purpose="checkpoint manager")

    def _release_folder(self) -> None:
        lock, self._folder_lock = self._folder_lock, None
        if lock is not None:
            lock.release()

    # ------------------------------------------------------------------ saving

    def should_save(self, position: Position, *, metrics: Mapping[str, Any] | None = None,
                    epoch_end: bool = False) -> bool:
        """Ask the trigger whether a checkpoint is due at ``position``; also reports a failed background save."""
        self._collect_background(block=False)
        return bool(self.save_on.should_save(SaveEvent(position, dict(metrics or {}), epoch_end)))

    def save(self, state: CheckpointState, position: Position, *, metrics: Mapping[str, Any] | None = None,
             history: Any = None, extra: Any = None, extra_manifest: Mapping[str, Any] | None = None) -> str | None:
        """Checkpoint ``state`` at ``position``; return the checkpoint's name (None if the save failed and on_error="continue").

        ``history`` and ``extra`` are JSON-like data handed back by ``restore``.
        ``extra_manifest`` holds the manifest pieces of a spec-built model
        (``architecture``, ``labels``, ``preprocessing``, ``task``, ...) so that
        ``export_checkpoint`` can make a release model file from the checkpoint.
        """
        started = time.perf_counter()
        self._collect_background(block=True)
        self._hold_folder()  # again, when saving after close()
        name = checkpoint_name(position.step)
        try:
            tensors, metadata, pending = self._snapshot(state, position, metrics=metrics, history=history,
                                                        extra=extra, extra_manifest=extra_manifest)
        except CheckpointError as exc:
            self._report(CheckpointError(f"could not take checkpoint {name}: {exc}"))
            return None
        hook = getattr(self.save_on, "saved", None)
        if hook is not None:
            hook(SaveEvent(position, dict(metrics or {})))
        if self._writer is not None:
            self._submit(name, position, tensors, metadata, pending)
            self.last_pause_s = time.perf_counter() - started
            return name
        try:
            self._commit(name, position, tensors, metadata)
        except CheckpointError as exc:
            self.last_pause_s = time.perf_counter() - started
            self._report(exc)
            return None
        self.last_pause_s = time.perf_counter() - started
        return name

    def _snapshot(self, state: CheckpointState, position: Position, *, metrics: Mapping[str, Any] | None,
                  history: Any, extra: Any, extra_manifest: Mapping[str, Any] | None,
                  ) -> tuple[Mapping[str, torch.Tensor], dict[str, str], list[tuple[torch.Tensor, torch.Tensor]]]:
        """Capture ``state``: the tensors to write (copied into the snapshot buffers when asynchronous),
        the metadata, and the copies left for the background thread (empty unless deferred)."""
        tensors, tree = capture(state)
        metadata = checkpoint_metadata(position, tensors, tree, metrics=metrics, monitor=self.monitor,
                                       history=history, extra=extra, extra_manifest=extra_manifest,
                                       trigger_state=getattr(self.save_on, "state_dict", None))
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self._writer is not None:
            # Deferred only when the optimizer's step can be fenced (a torch optimizer's step pre-hook).
            hookable = hasattr(state.optimizer, "register_step_pre_hook")
            defer = deferrable(state, tensors) if self.defer_copy and hookable else set()
            tensors = self._buffers.copy(tensors, defer=defer)
            pending = self._buffers.pending
            if pending:
                self._hook_optimizer(state.optimizer)
        return tensors, metadata, pending

    def _submit(self, name: str, position: Position, tensors: Mapping[str, torch.Tensor],
                metadata: Mapping[str, str], pending: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Hand the commit to the background writer; with ``pending`` copies it fills them first, then opens the fence."""
        self.last_fence_wait_s = 0.0
        job = lambda: self._commit(name, position, tensors, metadata)  # noqa: E731
        if pending:
            copied = threading.Event()
            buffers = self._buffers

            def copy_then_commit() -> None:
                try:
                    buffers.fill(pending)
                finally:
                    copied.set()
                self._commit(name, position, tensors, metadata)

            job = copy_then_commit
            self._copied = copied
        self._writer.submit(job)  # type: ignore[union-attr]  # only called when asynchronous

    def fence(self) -> None:
        """Block until the save in flight has copied the parameters and optimizer state (cheap when it has).

        Call it before anything that writes weights or optimizer state in place
        (restoring best weights, a callback that edits them): until then the
        background thread may still be reading the live tensors. The
        optimizer's own ``step()`` is fenced automatically.
        """
        copied = self._copied
        if copied is None or copied.is_set():
            return
        started = time.perf_counter()
        copied.wait()
        self.last_fence_wait_s += time.perf_counter() - started

    def wait(self) -> None:
        """Block until the save in flight is committed; report it if it failed."""
        self._collect_background(block=True)

    def close(self) -> None:
        """Wait for the save in flight (reporting a failure) and release the snapshot buffers."""
        try:
            self.wait()
        finally:
            self._buffers = SnapshotBuffers()
            self._unhook()
            self._release_folder()

    def _unhook(self) -> None:
        for _, handle in self._step_hooks.values():
            handle.remove()
        self._step_hooks.clear()

    def _hook_optimizer(self, optimizer: Any) -> None:
        """Make ``optimizer.step()`` call ``fence()`` first (once per optimizer; removed by ``close``)."""
        register = getattr(optimizer, "register_step_pre_hook", None)
        if register is None:
            return
        known = self._step_hooks.get(id(optimizer))
        if known is not None and known[0]() is optimizer:
            return
        manager = weakref.ref(self)

        def fence_first(*_: Any) -> None:
            live = manager()
            if live is not None:
                live.fence()

        self._step_hooks[id(optimizer)] = (weakref.ref(optimizer), register(fence_first))

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # do not hide the original error behind a checkpoint failure
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                error = self._writer.wait() if self._writer is not None else None
            self._unhook()
            self._release_folder()
            if error is not None:
                self.failures.append(as_checkpoint_error(error, "background save"))

    def _commit(self, name: str, position: Position, tensors: Mapping[str, torch.Tensor],
                metadata: Mapping[str, str]) -> None:
        started = time.perf_counter()
        try:
            size = self.storage.write(name, tensors, metadata, durable=self.durable)
        except BaseException as exc:
            raise CheckpointError(
                f"could not write checkpoint {name} (step {position.step}) to {self.storage.location}: "
                f"{reason(exc)}. No partial checkpoint was left and earlier checkpoints are intact"
                f"{self._newest_hint()}"
            ) from exc
        self.last_write_s = time.perf_counter() - started
        doc = json.loads(metadata[CHECKPOINT_KEY])
        monitor = doc.get("monitor")
        info = CheckpointInfo(
            name=name, path=self.storage.address(name), step=position.step, epoch=position.epoch,
            batch=position.batch, metrics=decode_tree(doc["metrics"], {}), size=size, created=doc["created"],
            verified=True, monitor=(monitor["metric"], monitor["mode"]) if monitor else None,
            has_manifest=doc.get("extra_manifest") is not None,
        )
        with self._lock:
            self._good[name] = info
            self._damaged.discard(name)
        self._apply_retention()

    def _apply_retention(self) -> None:
        checkpoints = [info for info in self.list() if info.verified is not False and info.name not in self._damaged]
        keep = set(self.keep.select(checkpoints))
        with self._lock:
            good = [self._good[c.name] for c in checkpoints if c.name in self._good]
        if good:
            keep.add(max(good, key=lambda c: c.step).name)  # the newest verified checkpoint is never deleted
        else:
            return  # nothing is known to be good: deleting anything could lose the only usable state
        for info in checkpoints:
            if info.name not in keep:
                try:
                    self.storage.delete(info.name)
                except OSError as exc:
                    warnings.warn(f"could not delete old checkpoint {info.name}: {exc}", CheckpointWarning,
                                  stacklevel=2)
                with self._lock:
                    self._good.pop(info.name, None)

    def _collect_background(self, *, block: bool) -> None:
        if self._writer is None or (not block and self._writer.busy):
            return
        error = self._writer.wait()
        if error is not None:
            self._report(as_checkpoint_error(error, "asynchronous save"))

    def _report(self, error: CheckpointError) -> None:
        self.failures.append(error)
        if self.on_error == "stop":
            raise error
        warnings.warn(f"{error}; training continues (on_error='continue')", CheckpointWarning, stacklevel=3)

    def _newest_hint(self) -> str:
        with self._lock:
            good = max(self._good.values(), key=lambda c: c.step, default=None)
        return f" (newest good checkpoint: {good.name})" if good else ""

    # ------------------------------------------------------------------ reading

    def list(self, *, verify: bool = False) -> list[CheckpointInfo]:
        """Every checkpoint in the folder, oldest first; damaged ones have ``verified=False``."""
        infos = []
        for name in self.storage.names():
            if step_of(name) is None:
                continue
            with self._lock:
                known = self._good.get(name)
            if known is not None and not verify:
                infos.append(known)
                continue
            infos.append(describe_stored(self.storage, name, verify=verify))
        return sorted(infos, key=position_order)

    def latest(self) -> CheckpointInfo | None:
        """The newest checkpoint whose every hash checks out (older ones are tried when newer ones are damaged)."""
        self.wait()
        for info in reversed(self.list()):
            if info.verified is False:
                continue
            checked = info if info.name in self._good else describe_stored(self.storage, info.name, verify=True)
            if checked.verified:
                return checked
        return None

    def restore(self, state: CheckpointState, *, step: int | None = None) -> Restored | None:
        """Load the newest good checkpoint (or the one at ``step``) into ``state``; None when there is none.

        A truncated or corrupt newest checkpoint is skipped with a
        ``CheckpointWarning`` and the previous one is used. If checkpoints exist
        but none is usable, ``CheckpointError`` is raised rather than silently
        starting over. Every random state is restored, as are the trigger's
        state (say the best metric so far).
        """
        self.wait()
        names = [info.name for info in newest_first(self.storage, step=step)]  # by recorded position, not name
        problems = []
        for name in names:
            try:
                info, tensors, doc = read_stored(self.storage, name)
            except (FormatError, OSError) as exc:
                reason = " ".join(str(exc).split())
                problems.append(f"{name}: {reason}")
                with self._lock:
                    self._damaged.add(name)
                warnings.warn(f"skipping damaged checkpoint {name}: {reason}; falling back to the previous one",
                              CheckpointWarning, stacklevel=2)
                continue
            restore(state, tensors, doc["state"])
            loader = getattr(self.save_on, "load_state_dict", None)
            if loader is not None and doc.get("triggers") is not None:
                loader(decode_tree(doc["triggers"], tensors))
            with self._lock:
                self._good[name] = info
            return Restored(
                position=info.position,
                metrics=dict(info.metrics),
                history=decode_tree(doc.get("history"), tensors),
                extra=decode_tree(doc.get("extra"), tensors),
                info=info,
            )
        if problems:
            raise CheckpointError(
                f"no usable checkpoint in {self.storage.location}: " + "; ".join(problems)
                + ". Delete the damaged files to start over"
            )
        return None
