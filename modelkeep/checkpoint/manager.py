"""The checkpoint manager: when to save, which checkpoints to keep, which one to resume from.

It sits on two lower layers and never bypasses them: a checkpoint is written
through a ``CheckpointStorage`` backend (whose ``write`` is atomic: temporary
name, fsync, rename; see ``atomic.py``), and its content comes from
``state.capture``. Each checkpoint is one modelkeep-format file
(``checkpoint-<step>.safetensors``): safetensors tensors plus a JSON document
under the ``modelkeep.checkpoint`` metadata key, hashed as it is written.

Call order, as ``fit`` uses it::

    manager = CheckpointManager(directory, save_on=EveryNSteps(500), keep=KeepLastN(3))
    state = TrainingState(model, optimizer, scheduler, scaler,
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
optimizer that takes one, nothing is deferred). ``restore``,
``wait`` and ``close`` and the next ``save`` wait for the whole save anyway.

A failed save raises ``CheckpointError`` (``on_error="stop"``, from ``save``,
or for an asynchronous save from the next ``should_save``/``save``/``close``)
or warns and lets training go on (``on_error="continue"``). Either way the
earlier checkpoints are intact. Retention runs after each successful commit
and never deletes the newest verified checkpoint.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, FormatError
from .async_writer import BackgroundWriter
from .policies import EveryNEpochs, KeepLastN, Retention, SaveEvent, Trigger, find_monitor
from .snapshot import SnapshotBuffers
from .state import Position, TrainingState, capture, decode_tree, encode_tree, restore

CHECKPOINT_KEY = "modelkeep.checkpoint"
CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d+)\.safetensors$")


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped, or a save failed and training goes on (``on_error="continue"``)."""


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:09d}.safetensors"


def step_of(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint as listed: where it is, where training was, and whether it checked out.

    ``verified`` is True when every hash was checked (or this process wrote it),
    False when the file is damaged (``error`` says how), None when only its
    header was read.
    """

    name: str
    path: Path
    step: int
    epoch: int = 0
    batch: int = 0
    metrics: Mapping[str, Any] = field(default_factory=dict)
    size: int = 0
    created: str | None = None
    verified: bool | None = None
    error: str | None = None
    monitor: tuple[str, str] | None = None
    has_manifest: bool = False

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.batch, self.step)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": str(self.path), "step": self.step, "epoch": self.epoch,
            "batch": self.batch, "metrics": dict(self.metrics), "size": self.size, "created": self.created,
            "verified": self.verified, "error": self.error,
            "monitor": {"metric": self.monitor[0], "mode": self.monitor[1]} if self.monitor else None,
            "has_manifest": self.has_manifest,
        }


@dataclass(frozen=True)
class Restored:
    """What ``restore`` hands back besides the live objects it loaded."""

    position: Position
    metrics: dict[str, Any]
    history: Any
    extra: Any
    info: CheckpointInfo


# --------------------------------------------------------------------------- reading


def _document(header: Any) -> dict[str, Any]:
    from ..artifact.format import parse_json_metadata

    doc = parse_json_metadata(header, CHECKPOINT_KEY)
    if not isinstance(doc, dict) or not isinstance(doc.get("position"), dict):
        raise FormatError(f"{header.path} is not a modelkeep checkpoint (no valid {CHECKPOINT_KEY!r} metadata)")
    version = doc.get("checkpoint_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise FormatError(
            f"{header.path} is a checkpoint of version {version!r}; this modelkeep reads up to "
            f"{CHECKPOINT_VERSION}. Upgrade modelkeep to resume from it"
        )
    return doc


def _info(path: Path, header: Any, doc: Mapping[str, Any], verified: bool | None) -> CheckpointInfo:
    position = doc["position"]
    monitor = doc.get("monitor")
    return CheckpointInfo(
        name=path.name, path=path, step=int(position["step"]), epoch=int(position["epoch"]),
        batch=int(position["batch"]), metrics=decode_tree(doc.get("metrics") or {}, {}),
        size=header.file_size, created=doc.get("created"), verified=verified,
        monitor=(monitor["metric"], monitor["mode"]) if isinstance(monitor, dict) else None,
        has_manifest=isinstance(doc.get("extra_manifest"), dict),
    )


def describe_checkpoint(path: str | Path, *, verify: bool = False) -> CheckpointInfo:
    """A checkpoint's position and metrics from its header; with ``verify`` every hash is checked too.

    A damaged file gives ``verified=False`` and an ``error`` instead of raising.
    """
    from ..artifact.format import read_header
    from ..artifact.tensors import TensorFile

    path = Path(path)
    try:
        header = read_header(path)
        doc = _document(header)
        if verify:
            with TensorFile(path, verify=True) as handle:
                for name in handle.names():
                    handle.tensor(name)
        return _info(path, header, doc, True if verify else None)
    except (FormatError, OSError) as exc:
        return CheckpointInfo(name=path.name, path=path, step=step_of(path.name) or -1,
                              size=path.stat().st_size if path.exists() else 0, verified=False,
                              error=" ".join(str(exc).split()))


def read_checkpoint(path: str | Path) -> tuple[CheckpointInfo, dict[str, torch.Tensor], dict[str, Any]]:
    """``(info, tensors, document)`` of a checkpoint, every hash checked; raises ``FormatError`` on damage."""
    from ..artifact.format import read_header
    from ..artifact.tensors import TensorFile

    path = Path(path)
    header = read_header(path)
    doc = _document(header)
    with TensorFile(path, verify=True) as handle:
        if handle.integrity is None:
            raise FormatError(f"{path} carries no integrity hashes, so it cannot be verified")
        tensors = handle.tensors()
    return _info(path, header, doc, True), tensors, doc


# --------------------------------------------------------------------------- manager


class CheckpointManager:
    """Saves, keeps and restores the checkpoints of one training run in one folder (see the module docstring).

    ``save_on`` is a trigger (default: every epoch), ``keep`` a retention policy
    (default: the last 3). ``asynchronous=True`` pauses training only to copy
    the state into reusable CPU buffers; writing, hashing and fsync run on a
    background thread, one save at a time. ``on_error`` is ``"stop"`` (raise
    ``CheckpointError``) or ``"continue"`` (warn, record in ``failures``, go on).
    ``defer_copy`` (default: on when asynchronous) leaves the copy of the
    parameters and optimizer state to the background thread too; see ``fence``.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        save_on: Trigger | None = None,
        keep: Retention | None = None,
        asynchronous: bool = True,
        on_error: str = "stop",
        durable: bool = True,
        storage: Any = None,
        defer_copy: bool | None = None,
    ) -> None:
        if on_error not in ("stop", "continue"):
            raise CheckpointError(f"on_error must be 'stop' or 'continue', got {on_error!r}")
        if storage is None:
            from .storage import LocalStorage

            storage = LocalStorage(directory)
        self.storage = storage
        self.directory = Path(directory)
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
        self.cleaned = self.storage.clean()

    # ------------------------------------------------------------------ saving

    def should_save(self, position: Position, *, metrics: Mapping[str, Any] | None = None,
                    epoch_end: bool = False) -> bool:
        """Ask the trigger whether a checkpoint is due at ``position``; also reports a failed background save."""
        self._collect_background(block=False)
        return bool(self.save_on.should_save(SaveEvent(position, dict(metrics or {}), epoch_end)))

    def save(
        self,
        state: TrainingState,
        position: Position,
        *,
        metrics: Mapping[str, Any] | None = None,
        history: Any = None,
        extra: Any = None,
        extra_manifest: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Checkpoint ``state`` at ``position``; return the checkpoint's name (None if the save failed and on_error="continue").

        ``history`` and ``extra`` are JSON-like data handed back by ``restore``.
        ``extra_manifest`` holds the manifest pieces of a spec-built model
        (``architecture``, ``labels``, ``preprocessing``, ``task``, ...) so that
        ``export_checkpoint`` can make a release model file from the checkpoint.
        """
        started = time.perf_counter()
        self._collect_background(block=True)
        name = checkpoint_name(position.step)
        try:
            tensors, tree = capture(state)
            trigger_state = getattr(self.save_on, "state_dict", None)
            document = {
                "checkpoint_version": CHECKPOINT_VERSION,
                "position": position.to_dict(),
                "metrics": encode_tree(_plain_metrics(metrics), "metrics/", {}),
                "monitor": {"metric": self.monitor[0], "mode": self.monitor[1]} if self.monitor else None,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
                "history": encode_tree(history, "history/", tensors),
                "extra": encode_tree(extra, "extra/", tensors),
                "extra_manifest": encode_tree(dict(extra_manifest), "manifest/", {}) if extra_manifest else None,
                "triggers": encode_tree(trigger_state(), "triggers/", tensors) if trigger_state else None,
                "state": tree,
            }
            metadata = {
                "format": "pt",
                "modelkeep.format_version": "1",
                CHECKPOINT_KEY: json.dumps(document, separators=(",", ":"), allow_nan=False),
            }
            pending: list[tuple[torch.Tensor, torch.Tensor]] = []
            if self._writer is not None:
                # Deferred only when the optimizer's step can be fenced (a torch optimizer's step pre-hook).
                hookable = hasattr(state.optimizer, "register_step_pre_hook")
                defer = _deferrable(state, tensors) if self.defer_copy and hookable else set()
                tensors = self._buffers.copy(tensors, defer=defer)
                pending = self._buffers.pending
                if pending:
                    self._hook_optimizer(state.optimizer)
        except CheckpointError as exc:
            self._report(CheckpointError(f"could not take checkpoint {name}: {exc}"))
            return None
        hook = getattr(self.save_on, "saved", None)
        if hook is not None:
            hook(SaveEvent(position, dict(metrics or {})))
        job = lambda: self._commit(name, position, tensors, metadata)  # noqa: E731
        if self._writer is not None:
            self.last_fence_wait_s = 0.0
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
            self._writer.submit(job)
            self.last_pause_s = time.perf_counter() - started
            return name
        try:
            job()
        except CheckpointError as exc:
            self.last_pause_s = time.perf_counter() - started
            self._report(exc)
            return None
        self.last_pause_s = time.perf_counter() - started
        return name

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
            if error is not None:
                self.failures.append(_as_checkpoint_error(error, "background save"))

    def _commit(self, name: str, position: Position, tensors: Mapping[str, torch.Tensor],
                metadata: Mapping[str, str]) -> None:
        started = time.perf_counter()
        try:
            size = self.storage.write(name, tensors, metadata, durable=self.durable)
        except BaseException as exc:
            raise CheckpointError(
                f"could not write checkpoint {name} (step {position.step}) to {self.storage.location}: "
                f"{_reason(exc)}. No partial checkpoint was left and earlier checkpoints are intact"
                f"{self._newest_hint()}"
            ) from exc
        self.last_write_s = time.perf_counter() - started
        doc = json.loads(metadata[CHECKPOINT_KEY])
        monitor = doc.get("monitor")
        info = CheckpointInfo(
            name=name, path=self.storage.local_path(name), step=position.step, epoch=position.epoch,
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
            self._report(_as_checkpoint_error(error, "asynchronous save"))

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
            infos.append(describe_checkpoint(self.storage.local_path(name), verify=verify))
        return sorted(infos, key=lambda info: info.step)

    def latest(self) -> CheckpointInfo | None:
        """The newest checkpoint whose every hash checks out (older ones are tried when newer ones are damaged)."""
        self.wait()
        for info in reversed(self.list()):
            if info.verified is False:
                continue
            checked = info if info.name in self._good else describe_checkpoint(info.path, verify=True)
            if checked.verified:
                return checked
        return None

    def restore(self, state: TrainingState, *, step: int | None = None) -> Restored | None:
        """Load the newest good checkpoint (or the one at ``step``) into ``state``; None when there is none.

        A truncated or corrupt newest checkpoint is skipped with a
        ``CheckpointWarning`` and the previous one is used. If checkpoints exist
        but none is usable, ``CheckpointError`` is raised rather than silently
        starting over. Every random state is restored, as are the trigger's
        state (say the best metric so far).
        """
        self.wait()
        names = [n for n in self.storage.names() if step_of(n) is not None]
        names.sort(key=step_of, reverse=True)
        if step is not None:
            names = [n for n in names if step_of(n) == step]
            if not names:
                raise CheckpointError(f"there is no checkpoint of step {step} in {self.storage.location}")
        problems = []
        for name in names:
            path = self.storage.local_path(name)
            try:
                info, tensors, doc = read_checkpoint(path)
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


def _tensor_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    return (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))


def _deferrable(state: TrainingState, tensors: Mapping[str, torch.Tensor]) -> set[str]:
    """The names in ``tensors`` that are model parameters or optimizer state tensors on the CPU.

    Only ``optimizer.step()`` changes those (a forward or backward pass does not),
    so their copy may wait for the fence. Matched by memory (``capture`` hands
    out detached views of the live tensors), never by name.
    """
    live = [p for p in state.model.parameters()]
    optimizer_state = getattr(state.optimizer, "state", None)
    if isinstance(optimizer_state, Mapping):
        for per_parameter in optimizer_state.values():
            if isinstance(per_parameter, Mapping):
                live.extend(v for v in per_parameter.values() if isinstance(v, torch.Tensor))
    keys = {_tensor_key(t) for t in live if t.device.type == "cpu" and t.numel()}
    return {name for name, t in tensors.items()
            if t.device.type == "cpu" and t.numel() and _tensor_key(t) in keys}


def _plain_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        elif hasattr(value, "item") and callable(value.item):  # NumPy scalars
            value = value.item()
        if isinstance(value, (bool, int, float, str)) or value is None:
            plain[str(key)] = value
    return plain


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        hint = {28: " (the disk is full)", 27: " (the file size limit was reached)",
                13: " (the folder is not writable)", 30: " (the file system is read-only)"}.get(exc.errno or 0, "")
        return f"{exc.strerror}{hint}"
    return f"{type(exc).__name__}: {exc}"


def _as_checkpoint_error(error: BaseException, what: str) -> CheckpointError:
    if isinstance(error, CheckpointError):
        return error
    return CheckpointError(f"the {what} failed: {_reason(error)}; earlier checkpoints are intact")
