"""What every registry backend is: the ``RegistryBackend`` seam, ``Version``, names, refs and queries.

A backend stores blobs (``blob_store``) and publishes versions: ``publish`` is
called once every blob the version manifest names is in the store, and makes
the version visible atomically (an index row, a committed record object, an OCI
manifest). Everything else a user does -- push a file, pull one, copy between
registries, draw the lineage -- is written once over this seam in ``ops``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..artifact.format import KEY_MANIFEST, loads_bounded, read_header
from ..artifact.integrity import content_hash
from ..errors import ConfigError, StorageError
from ..io.blobstore import BlobStore

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: ``gc`` keeps unreferenced blobs younger than this, so a push in flight (blobs put, version not yet published) is safe.
GC_GRACE_SECONDS = 3600.0
#: The attachment kind holding a version's OpenSSF model-signing bundle.
SIGNATURE = "signature"


@dataclass(frozen=True)
class Version:
    """One published version: ``name:id`` (``id`` is the SHA-256 of its manifest)."""

    name: str
    id: str
    created: float
    size: int
    metrics: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] | None = None
    parent: str | None = None
    aliases: tuple[str, ...] = ()
    content_hash: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.id[:12]}"


class BlobsCollected(StorageError):
    """``publish`` found a blob of the version gone (``gc`` took it after the push put it); push again."""


class RegistryBackend(Protocol):
    """Where versions live. ``location`` names it in messages.

    Call order for a push: ``blob_store(name).put`` for each blob the manifest
    names, then ``publish`` (the version becomes visible whole, or not at all).
    Readers ``resolve`` a ref to ``(name, id)``, then read ``manifest(name, id)``
    and its blobs from ``blob_store(name)``. ``attach``/``attachment`` keep small
    documents beside a version (its signature); ``gc`` removes blobs no version
    names. More methods than the style's one to three: a registry is a small
    database, and every one of them is a user-facing verb.

    A worked example, the smallest backend (everything in dicts)::

        class DictRegistry(ops.Operations):
            location = "dict://"

            def __init__(self):
                self.store, self.versions, self.aliases = DictBlobStore(), {}, {}

            def blob_store(self, name):
                return self.store

            def publish(self, name, manifest, record, *, alias=None, parent=None):
                vid = self.store.put(layout.encode(manifest))
                self.versions[(name, vid)] = Version(name, vid, time.time(), manifest["size"], parent=parent)
                if alias:
                    self.aliases[(name, alias)] = vid
                return self.show(f"{name}:{vid}")
            ...  # resolve, manifest, show, list, set_alias, remove, gc, attach, attachment over the dicts
    """

    location: str

    def blob_store(self, name: str) -> BlobStore:
        """The blobs of model ``name`` (one store for every name, except on OCI: one repository per name)."""
        ...

    def publish(self, name: str, manifest: dict[str, Any], record: dict[str, Any], *, alias: str | None = None,
                parent: str | None = None, resplit: Callable[[], dict[str, Any]] | None = None) -> Version:
        """Store ``manifest`` (its blobs are in the store already) as a version of ``name``, atomically.

        A backend that finds a blob gone meanwhile (collected by ``gc``) calls ``resplit``, which puts the
        blobs again and returns the manifest, or raises ``BlobsCollected`` when there is none."""
        ...

    def resolve(self, ref: str) -> tuple[str, str]:
        """``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS`` -> ``(name, full version id)``."""
        ...

    def manifest(self, name: str, version_id: str) -> dict[str, Any]:
        ...

    def show(self, ref: str) -> Version:
        ...

    def list(self, query: str = "") -> list[Version]:
        """Versions, oldest first, filtered by ``query`` (see ``matches``)."""
        ...

    def set_alias(self, name: str, version: str, alias: str) -> Version:
        ...

    def remove(self, ref: str) -> list[str]:
        ...

    def gc(self, *, grace_seconds: float = GC_GRACE_SECONDS) -> list[str]:
        ...

    def attach(self, name: str, version_id: str, kind: str, data: bytes) -> None:
        """Keep ``data`` beside the version (replacing an earlier one of this kind)."""
        ...

    def attachment(self, name: str, version_id: str, kind: str) -> bytes | None:
        ...


def check_name(name: str, what: str = "model name") -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{what} {str(name)[:60]!r} is not allowed: use letters, digits, '.', '_' and '-' "
                          "(starting with a letter or digit, at most 128 characters)")
    return name


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS`` -> ``(name, version or None, alias or None)``."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return check_name(name), None, check_name(alias, "alias")
    if ":" in ref:
        name, version = ref.split(":", 1)
        if not re.match(r"^[0-9a-f]{4,64}$", version):
            raise ConfigError(f"version {version[:70]!r} in {ref[:140]!r} is not a hex version id (or a prefix of "
                              "at least 4 characters)")
        return check_name(name), version, None
    return check_name(ref), None, None


def file_record(path: str | Path) -> dict[str, Any]:
    """What a version's index keeps of its file: metrics, hyperparameters, lineage and the content hash."""
    header = read_header(path)
    raw = header.metadata.get(KEY_MANIFEST)
    doc = loads_bounded(raw, f"{path} manifest") if raw is not None else {}
    doc = doc if isinstance(doc, dict) else {}
    return {"metrics": doc.get("metrics") or {}, "hyperparameters": doc.get("hyperparameters") or {},
            "lineage": doc.get("lineage"), "content_hash": content_hash(header)}


def parent_content_hash(record: dict[str, Any]) -> str | None:
    """The content hash of the model a fine-tuned file says it came from (its ``lineage.parent``)."""
    parent = (record.get("lineage") or {}).get("parent") if isinstance(record.get("lineage"), dict) else None
    value = parent.get("content_hash") if isinstance(parent, dict) else None
    return value if isinstance(value, str) else None


_CONDITION = re.compile(r"^([A-Za-z0-9_.\-/]+)(>=|<=|!=|=|>|<)(.+)$")


def matches(version: Version, query: str) -> bool:
    """Every word of ``query`` holds: ``KEY>0.9`` (also ``>= < <= = !=``) on a metric or hyperparameter, or a
    plain word found in the name or an alias."""
    for word in query.split():
        condition = _CONDITION.match(word)
        if condition is None:
            if word not in version.name and word not in version.aliases:
                return False
            continue
        key, op, wanted = condition.groups()
        value = version.metrics.get(key, version.hyperparameters.get(key))
        if value is None or not _compare(value, op, wanted):
            return False
    return True


def _compare(value: Any, op: str, wanted: str) -> bool:
    try:
        left, right = float(value), float(wanted)
    except (TypeError, ValueError):
        left, right = str(value), wanted
    try:
        return {">": left > right, "<": left < right, ">=": left >= right, "<=": left <= right,
                "=": left == right, "!=": left != right}[op]
    except TypeError:
        return False
