"""The registry's Python API: module functions over the embedded registry (``registry=`` picks the folder).

``registry`` is a folder path or an ``EmbeddedRegistry``; ``None`` means
``MODELKEEP_REGISTRY`` or ``~/.modelkeep/registry``. A ref is ``NAME`` (latest),
``NAME:VERSION`` (a version id or a prefix of at least 4 hex characters) or
``NAME@ALIAS``. These functions hold no logic of their own.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from .embedded import EmbeddedRegistry, Version

RegistryArg = Union[str, "os.PathLike[str]", EmbeddedRegistry, None]


def open_registry(registry: RegistryArg = None) -> EmbeddedRegistry:
    return registry if isinstance(registry, EmbeddedRegistry) else EmbeddedRegistry(registry)


def push(file: str | os.PathLike[str], name: str, *, alias: str | None = None, card: str | None = None,
         parent: str | None = None, registry: RegistryArg = None) -> Version:
    """Publish ``file`` as a new version of ``name``; ``card`` is Markdown text, ``parent`` a ref it derives from."""
    return open_registry(registry).push(file, name, alias=alias, card=card, parent=parent)


def pull(ref: str, out: str | os.PathLike[str] = ".", *, registry: RegistryArg = None) -> Path:
    """Rebuild ``ref``'s file at ``out``, byte-identical, every blob verified; a damaged blob raises ``IntegrityError``."""
    return open_registry(registry).pull(ref, out)


def list(query: str = "", *, registry: RegistryArg = None) -> "list[Version]":  # noqa: A001 - the API's verb
    """Versions matching ``query`` (words in names/aliases, ``metric>value`` conditions)."""
    return open_registry(registry).list(query)


def show(ref: str, *, registry: RegistryArg = None) -> Version:
    return open_registry(registry).show(ref)


def set_alias(name: str, version: str, alias: str, *, registry: RegistryArg = None) -> Version:
    return open_registry(registry).set_alias(name, version, alias)


def remove(ref: str, *, registry: RegistryArg = None) -> "list[str]":
    return open_registry(registry).remove(ref)


def gc(*, grace_seconds: float | None = None, registry: RegistryArg = None) -> "list[str]":
    """Delete unreferenced blobs (older than the grace period, so pushes in flight are safe)."""
    reg = open_registry(registry)
    return reg.gc() if grace_seconds is None else reg.gc(grace_seconds=grace_seconds)
