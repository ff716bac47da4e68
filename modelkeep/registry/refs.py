"""Registry URLs wherever a path works: ``registry://name@alias``, ``s3://bucket/prefix/name@alias``,
``oci://host/repo:tag``.

``fetch(url)`` resolves the URL to a version, pulls its file (and signature)
into a content-addressed cache -- ``$MODELKEEP_CACHE`` or
``~/.cache/modelkeep/models``, one ``<version id>.safetensors`` per version, so a
second load of the same version reads the cache -- and returns the local path.
``load(url_or_path, ...)`` is ``modelkeep.load``: ``artifact.load`` on that
path. The URL forms:

- ``registry://NAME[:VERSION|@ALIAS]``: the default registry (``MODELKEEP_REGISTRY``);
- ``s3://bucket/prefix/NAME[:VERSION|@ALIAS]`` (also ``gs://``, ``az://``, ``memory://``): the registry at
  ``s3://bucket/prefix``, configured as ``ObjectStoreRegistry`` is (fsspec's ``FSSPEC_S3_*`` variables);
- ``oci://host[:port]/namespace/NAME[:TAG|@sha256:DIGEST]``: OCI's own reference form, a tag being an alias
  (or ``mk-<version id>``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import SIGNATURE, parse_ref

CACHE_VAR = "MODELKEEP_CACHE"
#: The URL schemes that name a registry version: ours, OCI's, and the object stores fsspec reaches.
SCHEMES = ("registry://", "oci://", "s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "memory://")


def is_registry_url(path: Any) -> bool:
    """Whether ``path`` names a registry version rather than a local file."""
    return isinstance(path, str) and path.startswith(SCHEMES)


def split_url(url: str) -> tuple[str | None, str]:
    """A registry URL -> ``(registry location for open_registry, ref)``; ``None`` is the default registry."""
    if url.startswith("registry://"):
        ref = url[len("registry://"):]
        parse_ref(ref)
        return None, ref
    if url.startswith("oci://"):
        from .oci import parse_oci_url

        return parse_oci_url(url)
    scheme, _, rest = url.partition("://")
    location, _, ref = rest.rstrip("/").rpartition("/")
    if not location or not ref:
        raise ConfigError(f"{url[:200]!r} names no model: write {scheme}://bucket/prefix/NAME[@ALIAS|:VERSION]")
    parse_ref(ref)
    return f"{scheme}://{location}", ref


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_VAR) or Path.home() / ".cache" / "modelkeep" / "models").expanduser()


def fetch(url: str, *, registry_options: dict[str, Any] | None = None) -> Path:
    """The local file of the version ``url`` names, pulled into the cache once (verified) and read from it after;
    the version's signature, when it has one, is kept beside it as ``.sig`` (refreshed on every fetch)."""
    from . import ops
    from .api import open_registry

    location, ref = split_url(url)
    reg = open_registry(location, **(registry_options or {}))
    name, version_id = reg.resolve(ref)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{version_id}.safetensors"
    if not path.is_file():
        return ops.pull(reg, f"{name}:{version_id}", path, durable=False)
    signature = reg.attachment(name, version_id, SIGNATURE)
    if signature is not None:
        ops.write_bytes(Path(str(path) + ops.SIGNATURE_SUFFIX), signature)
    return path


def local_path(path: Any) -> Any:
    """``path`` itself, or for a registry URL the cached file it names (``fetch``)."""
    return fetch(path) if is_registry_url(path) else path


def load(path: str | os.PathLike[str], **options: Any) -> Any:
    """``modelkeep.load``: a model from a file or a registry URL (``registry://``, ``s3://``, ``oci://``).

    Everything ``artifact.load`` takes applies (``verify``, ``device``, ``trust_code``, ``mmap``,
    ``require_signature``); a URL is fetched into the cache first (see ``fetch``)."""
    from ..artifact import load as load_file

    return load_file(local_path(path), **options)
