"""Reading checkpoints: what one holds (``CheckpointInfo``), checked or not, from a file or a storage backend.

Each checkpoint is one modelkeep-format file (``checkpoint-<step>.safetensors``):
safetensors tensors plus a JSON document under the ``modelkeep.checkpoint``
metadata key, hashed as it was written. ``describe_checkpoint`` reads its
header (and with ``verify`` checks every hash) and never raises on damage: it
says what is wrong. ``read_checkpoint`` returns the tensors and the document,
every hash checked, or raises ``FormatError``. ``describe_stored`` and
``read_stored`` do the same for a file of a ``CheckpointStorage`` backend,
whichever store holds it.

This module never writes anything.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import CheckpointError, FormatError
from .state import Position, decode_tree
from .storage import CheckpointReader, step_of

if TYPE_CHECKING:  # pragma: no cover
    import torch

CHECKPOINT_KEY = "modelkeep.checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped, a checkpoint's name disagrees with what it records, or a save failed and
    training goes on (``on_error="continue"``)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint as listed: where it is, where training was, and whether it checked out.

    ``verified`` is True when every hash was checked (or this process wrote it),
    False when the file is damaged (``error`` says how), None when only its
    header was read.
    """

    name: str
    path: Path | str  # a local path, or a URL for a checkpoint on a remote store
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


def position_order(info: CheckpointInfo) -> tuple[int, int, int, str]:
    """The sort key of checkpoints: the position recorded inside the file (step, epoch, batch), never its name.

    A damaged file, whose position cannot be read, is placed by the step its name gives (-1 without one).
    """
    return (info.step, info.epoch, info.batch, info.name)


def misnamed(info: CheckpointInfo) -> str | None:
    """Why ``info``'s file name disagrees with the step recorded in it (a copied or renamed file), or None."""
    named = step_of(Path(str(info.name)).name)
    if info.verified is False or named is None or named == info.step:
        return None
    return (f"checkpoint {info.name} records step {info.step} (epoch {info.epoch}, batch {info.batch}) but its "
            f"name says step {named}; it is ordered by the step it records. Rename or delete it if it was copied "
            "there by mistake")


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

    The header's own hashes (metadata, layout) are always checked, so the recorded position that
    resuming orders by is the one written. A damaged file gives ``verified=False`` and an ``error``
    instead of raising.
    """
    from ..artifact.format import read_header
    from ..artifact.integrity import require_integrity, verify_header
    from ..artifact.tensors import TensorFile

    path = Path(path)
    try:
        header = read_header(path)
        verify_header(header, require_integrity(header))
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


def read_checkpoint(path: str | Path) -> tuple[CheckpointInfo, dict[str, "torch.Tensor"], dict[str, Any]]:
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


def describe_stored(storage: CheckpointReader, name: str, *, verify: bool = False) -> CheckpointInfo:
    """``describe_checkpoint`` of the file ``name`` of a storage backend, whichever store holds it."""
    address = storage.address(name)
    try:
        with storage.reading(name) as path:
            info = describe_checkpoint(path, verify=verify)
    except OSError as exc:  # gone, or unreadable, between listing and reading
        return CheckpointInfo(name=name, path=address, step=step_of(name) or -1, verified=False,
                              error=" ".join(str(exc).split()))
    error = info.error.replace(str(path), str(address)) if info.error else info.error
    return replace(info, name=name, path=address, error=error)


def read_stored(storage: CheckpointReader, name: str) -> tuple[CheckpointInfo, dict[str, "torch.Tensor"],
                                                                dict[str, Any]]:
    """``read_checkpoint`` of the file ``name`` of a storage backend; raises ``FormatError`` or ``OSError``."""
    address = storage.address(name)
    with storage.reading(name) as path:
        try:
            info, tensors, doc = read_checkpoint(path)
        except FormatError as exc:
            if str(path) == str(address):
                raise
            # name the stored file, not the temporary copy it was read from
            raise type(exc)(str(exc).replace(str(path), str(address))) from exc
    return replace(info, name=name, path=address), tensors, doc


def newest_first(storage: CheckpointReader, *, step: int | None = None) -> list[CheckpointInfo]:
    """The checkpoints of ``storage`` (headers read, hash-checked), newest first by the position they record.

    Never by file name: a copied or renamed file cannot send a resume back in time. A file whose name
    disagrees with its recorded step gets a ``CheckpointWarning``. With ``step``, only the checkpoints
    recording that step (``CheckpointError`` when there is none).
    """
    listed = sorted((describe_stored(storage, name) for name in storage.names() if step_of(name) is not None),
                    key=position_order, reverse=True)
    for info in listed:
        if (problem := misnamed(info)) is not None:
            warnings.warn(problem, CheckpointWarning, stacklevel=3)
    if step is not None:
        listed = [info for info in listed if info.step == step]
        if not listed:
            raise CheckpointError(f"there is no checkpoint of step {step} in {storage.location}")
    return listed


def checkpoint_description(path: str | Path, *, verify: bool = False) -> dict[str, Any] | None:
    """What ``modelkeep inspect`` shows of a checkpoint file, as JSON-ready data; None when ``path`` is not one.

    A checkpoint is recognised by its ``modelkeep.checkpoint`` metadata. The description gives where
    training was (step, epoch, batch), its metrics and monitored metric, when it was written, what it
    holds (model weights, optimizer, scheduler, random states, ...: tensor count and bytes per part),
    whether a release model file can be exported from it, and (with ``verify``) whether every hash checks.
    """
    from ..artifact.format import read_header

    try:
        header = read_header(path)
    except (FormatError, OSError):
        return None  # not a modelkeep file at all: the model-file reader says what is wrong
    if CHECKPOINT_KEY not in header.metadata:
        return None
    info = describe_checkpoint(path, verify=verify)
    parts: dict[str, dict[str, int]] = {}
    for entry in header.tensors.values():
        part = parts.setdefault(entry.name.split("/", 1)[0], {"tensors": 0, "bytes": 0})
        part["tensors"] += 1
        part["bytes"] += entry.nbytes
    described = info.to_dict()
    described.update(kind="checkpoint", parts=parts, exportable=info.has_manifest,
                     path=str(path), misnamed=misnamed(info))
    return described
