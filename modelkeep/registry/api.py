"""The registry's Python API: module functions over any backend (``registry=`` picks it).

``registry`` is a folder (the embedded backend), an fsspec URL such as
``s3://bucket/prefix`` (object storage), ``oci://host[:port]/namespace`` (an
OCI registry), or a backend object; ``None`` means ``MODELKEEP_REGISTRY`` or
``~/.modelkeep/registry``. A ref is ``NAME`` (latest), ``NAME:VERSION`` (a
version id or a prefix of at least 4 hex characters) or ``NAME@ALIAS``. These
functions hold no logic of their own.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

from . import ops
from .base import RegistryBackend, Version
from .embedded import ENV_VAR, EmbeddedRegistry

RegistryArg = Union[str, "os.PathLike[str]", RegistryBackend, None]


def open_registry(registry: RegistryArg = None, **options: Any) -> RegistryBackend:
    """The backend for ``registry`` (see the module's docstring); ``options`` go to the backend's constructor."""
    if registry is not None and not isinstance(registry, (str, os.PathLike)):
        return registry
    location = os.fspath(registry) if registry is not None else os.environ.get(ENV_VAR)
    if location and location.startswith("oci://"):
        from .oci import OciRegistry

        return OciRegistry(location, **options)
    if location and "://" in location and not location.startswith("file://"):
        from .objectstore import ObjectStoreRegistry

        return ObjectStoreRegistry(location, **options)
    if location and location.startswith("file://"):
        location = location[len("file://"):]
    return EmbeddedRegistry(location, **options)


def push(file: str | os.PathLike[str], name: str, *, alias: str | None = None, card: str | None = None,
         parent: str | None = None, signature: bytes | None = None, registry: RegistryArg = None) -> Version:
    """Publish ``file`` as a new version of ``name``; ``card`` is Markdown text, ``parent`` a ref it derives from
    (by default the version whose content the file's lineage names); ``FILE.sig`` goes along when present."""
    return ops.push(open_registry(registry), file, name, alias=alias, card=card, parent=parent, signature=signature)


def pull(ref: str, out: str | os.PathLike[str] = ".", *, registry: RegistryArg = None) -> Path:
    """Rebuild ``ref``'s file at ``out``, byte-identical, every blob verified; a damaged blob raises ``IntegrityError``."""
    return ops.pull(open_registry(registry), ref, out)


def sign(ref: str, private_key: str | os.PathLike[str], *, registry: RegistryArg = None) -> Version:
    """Sign a published version (its rebuilt file) with ``private_key``; ``pull``/``load`` can then require it."""
    return ops.sign(open_registry(registry), ref, private_key)


def list(query: str = "", *, registry: RegistryArg = None) -> "list[Version]":  # noqa: A001 - the API's verb
    """Versions matching ``query`` (words in names/aliases, ``metric>value`` conditions)."""
    return open_registry(registry).list(query)


def show(ref: str, *, registry: RegistryArg = None) -> Version:
    return open_registry(registry).show(ref)


def card(ref: str, *, registry: RegistryArg = None) -> str | None:
    """The Markdown model card stored with a version (``None`` when it has none)."""
    return ops.card(open_registry(registry), ref)


def set_alias(name: str, version: str, alias: str, *, registry: RegistryArg = None) -> Version:
    return open_registry(registry).set_alias(name, version, alias)


def remove(ref: str, *, registry: RegistryArg = None) -> "list[str]":
    return open_registry(registry).remove(ref)


def gc(*, grace_seconds: float | None = None, registry: RegistryArg = None) -> "list[str]":
    """Delete unreferenced blobs (older than the grace period, so pushes in flight are safe)."""
    reg = open_registry(registry)
    return reg.gc() if grace_seconds is None else reg.gc(grace_seconds=grace_seconds)


def copy(source: RegistryArg, destination: RegistryArg, name: str) -> ops.CopyReport:
    """Copy every version of ``name`` between registries; blobs the destination holds are not sent again."""
    return ops.copy(open_registry(source), open_registry(destination), name)


def lineage(name: str, *, registry: RegistryArg = None) -> "list[ops.LineageNode]":
    """The family trees (parents, fine-tunes) that hold the versions of ``name``."""
    return ops.lineage(open_registry(registry), name)
