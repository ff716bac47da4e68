"""What a user does with a registry, written once over the ``RegistryBackend`` seam: push, pull, card, copy, lineage.

Every backend inherits ``Operations``, so ``reg.push(file, name)`` means the
same on a folder, an S3 bucket and an OCI registry: the file is split into
blobs (``layout.split``; blobs already stored are not sent again, which is also
how an interrupted push resumes), then the backend publishes the version
atomically. ``copy`` moves versions between two registries blob by blob,
skipping what the destination holds.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, FormatError, ModelNotFoundError
from ..io.atomic import atomic_write
from ..io.capped import read_capped
from . import layout
from .base import SIGNATURE, BlobsCollected, RegistryBackend, Version, check_name, file_record, parent_content_hash

#: A signature beside a model file: ``model.safetensors.sig`` (OpenSSF model-signing's bundle).
SIGNATURE_SUFFIX = ".sig"
MAX_SIGNATURE_BYTES = 1 << 20


def push(reg: RegistryBackend, file: str | os.PathLike[str], name: str, *, alias: str | None = None,
         card: str | None = None, parent: str | None = None, signature: bytes | None = None,
         progress: layout.Progress | None = None) -> Version:
    """Publish ``file`` as a version of ``name``. ``parent`` (a ref) defaults to the registry version whose content
    the file's lineage names; ``signature`` defaults to the bytes of ``FILE.sig`` when that exists."""
    check_name(name)
    if alias is not None:
        check_name(alias, "alias")
    record = file_record(file)
    parent_id = reg.resolve(parent)[1] if parent else _parent_by_content(reg, record)
    store = reg.blob_store(name)
    for attempt in range(2):
        manifest = layout.split(file, store, card=card, progress=progress if attempt == 0 else None,
                                workers=_workers(reg))
        try:
            version = reg.publish(name, manifest, record, alias=alias, parent=parent_id,
                                  resplit=lambda: layout.split(file, store, card=card))
            break
        except BlobsCollected:
            if attempt:
                raise
    signature = signature if signature is not None else _sidecar_signature(Path(file))
    if signature is not None:
        reg.attach(name, version.id, SIGNATURE, signature)
    return version


def pull(reg: RegistryBackend, ref: str, out: str | os.PathLike[str] = ".", *, durable: bool = True,
         require_signature: str | os.PathLike[str] | None = None, progress: layout.Progress | None = None) -> Path:
    """Rebuild ``ref``'s file at ``out`` (a folder gets ``NAME.safetensors``), byte-identical, every blob verified;
    its signature, when the version has one, is written beside it as ``OUT.sig``.

    With ``require_signature`` (a public key), the file is rebuilt and its signature verified in a scratch
    folder first: an unsigned or tampered version raises ``SignatureError`` and nothing reaches ``out``."""
    name, version_id = reg.resolve(ref)
    out = Path(out)
    if out.is_dir():
        out = out / f"{name}.safetensors"
    manifest, store = reg.manifest(name, version_id), reg.blob_store(name)
    signature = reg.attachment(name, version_id, SIGNATURE)
    if require_signature is None:
        path = layout.rebuild(manifest, store, out, durable=durable, progress=progress, workers=_workers(reg))
        if signature is not None:
            write_bytes(Path(str(path) + SIGNATURE_SUFFIX), signature, durable)
        return path
    from ..artifact.signing import verify_file
    from ..errors import SignatureError

    if signature is None:
        raise SignatureError(f"{name}:{version_id[:12]} in {reg.location} is not signed; it was required to be "
                             f"signed by the pair of {require_signature}. Nothing was written")
    with tempfile.TemporaryDirectory(prefix="modelkeep-pull-") as scratch:
        staged = layout.rebuild(manifest, store, Path(scratch) / out.name, durable=False, progress=progress,
                                workers=_workers(reg))
        write_bytes(Path(str(staged) + SIGNATURE_SUFFIX), signature, False)
        try:
            verify_file(staged, require_signature)
        except SignatureError as exc:
            raise SignatureError(f"{name}:{version_id[:12]} in {reg.location}: "
                                 + str(exc).replace(str(staged), "its file") + "; nothing was written") from None
        with open(staged, "rb") as source, atomic_write(out, durable=durable) as handle:
            shutil.copyfileobj(source, handle, 8 << 20)
    write_bytes(Path(str(out) + SIGNATURE_SUFFIX), signature, durable)
    return out


def _workers(reg: RegistryBackend) -> int:
    """How many blobs a push or pull moves at once: a backend over the network says (``transfer_workers``)."""
    return int(getattr(reg, "transfer_workers", 1))


def write_bytes(path: Path, data: bytes, durable: bool = False) -> None:
    with atomic_write(path, durable=durable) as handle:
        handle.write(data)


def sign(reg: RegistryBackend, ref: str, private_key: str | os.PathLike[str]) -> Version:
    """Sign a published version with ``private_key`` (OpenSSF model-signing): its file is rebuilt (verified) in
    a scratch folder, signed, and the signature kept beside the version, replacing an earlier one."""
    from ..artifact.signing import sign_file

    name, version_id = reg.resolve(ref)
    with tempfile.TemporaryDirectory(prefix="modelkeep-sign-") as scratch:
        staged = layout.rebuild(reg.manifest(name, version_id), reg.blob_store(name),
                                Path(scratch) / f"{name}.safetensors", durable=False)
        signature = sign_file(staged, private_key)
        reg.attach(name, version_id, SIGNATURE, signature.read_bytes())
    return reg.show(f"{name}:{version_id}")


def read_card_file(path: str | os.PathLike[str]) -> str:
    """A Markdown model card from a file, read bounded (``layout.MAX_CARD_BYTES``) and as UTF-8."""
    data = read_capped(path, layout.MAX_CARD_BYTES, lambda why: ConfigError(
        f"the card {path} is {why}; give a Markdown file of at most {layout.MAX_CARD_BYTES:,} bytes"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the card {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def card(reg: RegistryBackend, ref: str) -> str | None:
    name, version_id = reg.resolve(ref)
    return layout.read_card(reg.manifest(name, version_id), reg.blob_store(name))


@dataclass(frozen=True)
class CopyReport:
    """What ``copy`` did: the versions now in the destination, and the blobs it sent or found there already."""

    versions: list[Version]
    blobs_sent: int
    blobs_skipped: int
    bytes_sent: int


def copy(source: RegistryBackend, destination: RegistryBackend, name: str, *,
         progress: layout.Progress | None = None) -> CopyReport:
    """Copy every version of ``name`` (oldest first, with aliases, cards and signatures) from ``source`` to
    ``destination``; blobs the destination already holds are not sent."""
    versions = [v for v in source.list() if v.name == check_name(name)]
    if not versions:
        raise ModelNotFoundError(f"no model {name!r} in {source.location}; `modelkeep ls` lists what it holds")
    src, dst = source.blob_store(name), destination.blob_store(name)
    sent = skipped = sent_bytes = 0
    copied = []
    for version in versions:
        manifest = source.manifest(name, version.id)
        for digest, size in _blobs(manifest).items():
            if dst.has(digest):
                skipped += 1
            else:
                data = src.get(digest, max_bytes=max(size, 1) if size is not None else layout.MAX_CARD_BYTES)
                dst.put(data, digest=digest)
                sent, sent_bytes = sent + 1, sent_bytes + len(data)
            if progress is not None and size is not None:
                progress(size)
        record = {"metrics": version.metrics, "hyperparameters": version.hyperparameters,
                  "lineage": version.lineage, "content_hash": version.content_hash}
        published = destination.publish(name, manifest, record, parent=version.parent)
        for alias in version.aliases:
            published = destination.set_alias(name, published.id, alias)
        signature = source.attachment(name, version.id, SIGNATURE)
        if signature is not None:
            destination.attach(name, published.id, SIGNATURE, signature)
        copied.append(published)
    return CopyReport(copied, sent, skipped, sent_bytes)


def _blobs(manifest: dict[str, Any]) -> dict[str, int | None]:
    """Each distinct blob of a manifest once, with its size (the card's is not recorded): header, segments, card."""
    blobs: dict[str, int | None] = {}
    for blob in [manifest["header"], *manifest["segments"]]:
        blobs.setdefault(blob["digest"], blob["size"])
    if manifest.get("card"):
        blobs.setdefault(manifest["card"], None)
    return blobs


@dataclass
class LineageNode:
    """A version in a lineage tree, with the versions derived from it."""

    version: Version
    children: list["LineageNode"]


def lineage(reg: RegistryBackend, name: str) -> list[LineageNode]:
    """The family trees holding the versions of ``name``: their ancestors (of any name) up to each root, and
    every version derived from them; roots oldest first."""
    everything = reg.list()
    mine = [v for v in everything if v.name == check_name(name)]
    if not mine:
        raise ModelNotFoundError(f"no model {name!r} in {reg.location}; `modelkeep ls` lists what it holds")
    by_id = {v.id: v for v in everything}
    children: dict[str | None, list[Version]] = {}
    for version in everything:
        parent = version.parent if version.parent in by_id else None
        children.setdefault(parent, []).append(version)
    roots: dict[str, Version] = {}
    for version in mine:
        seen = set()
        while version.parent in by_id and version.id not in seen:
            seen.add(version.id)
            version = by_id[version.parent]
        roots[version.id] = version

    def grow(version: Version, path: frozenset[str]) -> LineageNode:
        kids = [grow(c, path | {c.id}) for c in children.get(version.id, []) if c.id not in path]
        return LineageNode(version, kids)

    return [grow(v, frozenset({v.id})) for v in sorted(roots.values(), key=lambda v: v.created)]


def _parent_by_content(reg: RegistryBackend, record: dict[str, Any]) -> str | None:
    wanted = parent_content_hash(record)
    if wanted is None:
        return None
    try:
        versions = reg.list()
    except ConfigError:  # a registry that cannot be listed (an OCI registry without the catalog API)
        return None
    found = [v for v in versions if v.content_hash == wanted]
    return found[-1].id if found else None


def _sidecar_signature(path: Path) -> bytes | None:
    sidecar = Path(str(path) + SIGNATURE_SUFFIX)
    if not sidecar.exists():
        return None
    return read_capped(sidecar, MAX_SIGNATURE_BYTES,
                       lambda why: FormatError(f"{sidecar} is {why}; a signature is at most {MAX_SIGNATURE_BYTES:,} "
                                               "bytes: sign the file again with `modelkeep sign`"))


class Operations:
    """The verbs every backend shares (mixed into each backend class)."""

    def push(self: Any, file: str | os.PathLike[str], name: str, **options: Any) -> Version:
        return push(self, file, name, **options)

    def pull(self: Any, ref: str, out: str | os.PathLike[str] = ".", **options: Any) -> Path:
        return pull(self, ref, out, **options)

    def card(self: Any, ref: str) -> str | None:
        return card(self, ref)

    def lineage(self: Any, name: str) -> list[LineageNode]:
        return lineage(self, name)
