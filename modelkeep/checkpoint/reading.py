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

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import FormatError
from .state import Position, decode_tree
from .storage import CheckpointReader, step_of

if TYPE_CHECKING:  # pragma: no cover
    import torch

CHECKPOINT_KEY = "modelkeep.checkpoint"
CHECKPOINT_VERSION = 1


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
