"""An OCI registry (distribution, Harbor, Zot, GHCR...) as a modelkeep registry: a version is an OCI image manifest.

The mapping is ``oci_mapping``'s (one repository per model name, ``mk-<version id>`` tags, aliases as tags);
the wire is ``oci_store``'s. Publishing is the manifest PUT under ``mk-<id>``: a push that dies before it
leaves only blobs nobody sees. ``list`` reads the catalog, then each repository's tags and manifests, each
once per call (``_View``). This backend never deletes a blob (the registry's own garbage collector does).
"""
from __future__ import annotations

import ipaddress
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable
from urllib.parse import urlsplit

from ..artifact.format import loads_bounded
from ..errors import ConfigError, FormatError, ModelNotFoundError
from ..io.blobstore import BlobStore
from . import layout
from .base import GC_GRACE_SECONDS, BlobsCollected, Version, matches, parse_ref
from .oci_mapping import (COMPONENT, DIGEST_REF, EMPTY, INSECURE_VAR, MAX_ATTACHMENT_BYTES, PASSWORD_VAR, REMOVED,
                          REMOVED_DIGEST, USERNAME_VAR, VERSION_TAG, attachment_manifest, attachment_tag, check_alias,
                          image_manifest, parse_location, parse_oci_url, repository_name, version_id_of, version_of,
                          version_tag)
from .oci_store import OciConnection, OciRepository
from .ops import Operations

__all__ = ["OciRegistry", "parse_oci_url"]


class _View:
    """What one call read from the registry (tags, manifests, alias digests): nothing is read twice."""

    def __init__(self, registry: "OciRegistry") -> None:
        self.registry = registry
        self._tags: dict[str, list[str]] = {}
        self._docs: dict[tuple[str, str], tuple[str, dict[str, Any]] | None] = {}
        self._aliases: dict[str, dict[str, tuple[str, ...]]] = {}

    def tags(self, name: str) -> list[str]:
        if name not in self._tags:
            self._tags[name] = self.registry.repository(name).tags()
        return self._tags[name]

    def doc(self, name: str, ref: str) -> tuple[str, dict[str, Any]] | None:
        """``(manifest digest, manifest)`` of a tag or digest, ``None`` when absent."""
        if (name, ref) not in self._docs:
            found = self.registry.repository(name).manifest(ref, limit=layout.MAX_MANIFEST_BYTES)
            doc = loads_bounded(found[1], f"manifest {name}:{ref}") if found else None
            if found and not isinstance(doc, dict):
                raise FormatError(f"manifest {name}:{ref} in {self.registry.location} is not a JSON object")
            self._docs[(name, ref)] = (found[0], doc) if found else None
        return self._docs[(name, ref)]

    def aliases(self, name: str) -> dict[str, tuple[str, ...]]:
        """Manifest digest -> the alias tags naming it."""
        if name not in self._aliases:
            found: dict[str, list[str]] = {}
            tags = [tag for tag in self.tags(name) if not tag.startswith("mk-")]
            for tag, digest in zip(tags, _each(self.registry.repository(name).manifest_digest, tags)):
                if digest is not None:
                    found.setdefault(digest, []).append(tag)
            self._aliases[name] = {digest: tuple(sorted(tags)) for digest, tags in found.items()}
        return self._aliases[name]

    def version(self, name: str, version_id: str) -> Version:
        found = self.doc(name, version_tag(version_id))
        version = version_of(name, found[1], self.aliases(name).get(found[0], ())) if found else None
        if version is None:
            raise ModelNotFoundError(f"no version {name}:{version_id[:12]} in {self.registry.location}; "
                                     "`modelkeep ls` lists them")
        return version

    def versions(self, name: str) -> list[Version]:
        ids = [m.group(1) for m in map(VERSION_TAG.match, self.tags(name)) if m]
        _each(lambda version_id: self.doc(name, version_tag(version_id)), ids)  # fetched side by side, kept
        self.aliases(name)
        return sorted((self.version(name, version_id) for version_id in ids), key=lambda v: v.created)


class OciRegistry(Operations):
    """Models in an OCI registry, one repository per model name (see the module docstring for the mapping).

    Credentials: ``username``/``password``, else ``MODELKEEP_OCI_USERNAME``/``MODELKEEP_OCI_PASSWORD``, else
    ``~/.docker/config.json`` (read only when the registry asks). Plain HTTP only for loopback hosts, or with
    ``insecure=True`` or ``MODELKEEP_OCI_INSECURE=1``."""

    transfer_workers = 8  # blobs a push or pull moves at once (each is its own request)

    def __init__(self, location: str, *, username: str | None = None, password: str | None = None,
                 insecure: bool | None = None) -> None:
        self.host, self.namespace = parse_location(location)
        self.location = f"oci://{self.host}" + (f"/{self.namespace}" if self.namespace else "")
        username = username if username is not None else os.environ.get(USERNAME_VAR) or None
        password = password if password is not None else os.environ.get(PASSWORD_VAR) or None
        if (username is None) != (password is None):
            raise ConfigError(f"give both a username and a password for {self.location} ({USERNAME_VAR} and "
                              f"{PASSWORD_VAR}), or neither")
        if insecure is None:
            insecure = os.environ.get(INSECURE_VAR, "").lower() in ("1", "true", "yes") or _loopback(self.host)
        self.insecure = insecure
        self.connection = OciConnection(self.host, secure=not insecure, username=username, password=password)
        self._repositories: dict[str, OciRepository] = {}

    def repository(self, name: str) -> OciRepository:
        if name not in self._repositories:
            path = f"{self.namespace}/{repository_name(name)}" if self.namespace else repository_name(name)
            self._repositories[name] = OciRepository(self.connection, path)
        return self._repositories[name]

    def blob_store(self, name: str) -> BlobStore:
        return self.repository(name)

    def publish(self, name: str, manifest: dict[str, Any], record: dict[str, Any], *, alias: str | None = None,
                parent: str | None = None, resplit: Callable[[], dict[str, Any]] | None = None) -> Version:
        """Upload the config (the layout manifest), then PUT the image manifest under ``mk-<id>`` (the atomic
        publish; a version already there is kept as it is), then the alias tag."""
        repository = self.repository(name)
        if alias is not None:
            check_alias(alias)
        version_id = repository.put(layout.encode(manifest))
        if repository.manifest_digest(version_tag(version_id)) is None:
            card_size = repository.size(manifest["card"]) if manifest.get("card") else None
            body = image_manifest(manifest, record, parent=parent, card_size=card_size)
            try:
                repository.put_manifest(version_tag(version_id), body)
            except BlobsCollected:
                # The registry's garbage collector took a blob between its upload and now: put them again.
                if resplit is None or layout.version_id(resplit()) != version_id:
                    raise
                repository.put(layout.encode(manifest))
                repository.put_manifest(version_tag(version_id), body)
        if alias is not None:
            self._tag(name, version_id, alias)
        return _View(self).version(name, version_id)

    def _tag(self, name: str, version_id: str, tag: str) -> None:
        """Point ``tag`` at the version's manifest (the same bytes PUT again under another tag)."""
        repository = self.repository(name)
        found = repository.manifest(version_tag(version_id), limit=layout.MAX_MANIFEST_BYTES)
        if found is None:
            raise ModelNotFoundError(f"no version {name}:{version_id[:12]} in {self.location}")
        repository.put_manifest(tag, found[1])

    def resolve(self, ref: str) -> tuple[str, str]:
        """``NAME`` (newest), ``NAME:VERSION``, ``NAME@ALIAS`` or ``NAME@sha256:<manifest digest>`` ->
        ``(name, version id)``."""
        return self._resolve(ref, _View(self))

    def _resolve(self, ref: str, view: _View) -> tuple[str, str]:
        by_digest = DIGEST_REF.match(ref)
        if by_digest:
            name, version, target = repository_name(by_digest.group(1)), None, f"sha256:{by_digest.group(2)}"
        else:
            name, version, alias = parse_ref(ref)
            repository_name(name)
            target = check_alias(alias) if alias is not None else None
        if target is not None:
            found = view.doc(name, target)
            version_id = version_id_of(found[1]) if found else None
            if version_id is None:
                raise ModelNotFoundError(f"no model {ref!r} in {self.location}; `modelkeep ls` lists them")
            return name, version_id
        if version is not None:
            ids = [m.group(1) for m in map(VERSION_TAG.match, view.tags(name)) if m and m.group(1).startswith(version)]
        else:
            ids = [v.id for v in view.versions(name)[-1:]]
        if not ids:
            raise ModelNotFoundError(f"no model {ref!r} in {self.location}; `modelkeep ls` lists them")
        if len(ids) > 1:
            raise ConfigError(f"version prefix in {ref!r} matches {len(ids)} versions; give more characters")
        return name, ids[0]

    def manifest(self, name: str, version_id: str) -> dict[str, Any]:
        data = self.repository(name).get(version_id, max_bytes=layout.MAX_MANIFEST_BYTES)
        return layout.decode(data, what=f"version manifest {version_id}")

    def show(self, ref: str) -> Version:
        view = _View(self)
        return view.version(*self._resolve(ref, view))

    def names(self) -> list[str]:
        """The model names in this namespace (from the registry's catalog)."""
        prefix = f"{self.namespace}/" if self.namespace else ""
        found = []
        try:
            catalog = self.connection.catalog()
        except ModelNotFoundError:
            raise ConfigError(f"{self.host} does not offer the catalog API (/v2/_catalog; GHCR and Docker Hub do not), "
                              "so its models cannot be listed; refs (NAME, NAME:VERSION, NAME@ALIAS) still work") from None
        for path in catalog:
            rest = path[len(prefix):] if path.startswith(prefix) else None
            if rest and "/" not in rest and COMPONENT.match(rest) and len(rest) <= 128:
                found.append(rest)
        return sorted(found)

    def list(self, query: str = "") -> list[Version]:
        """Versions, oldest first, filtered by ``query`` (see ``matches``)."""
        view = _View(self)
        versions = [v for name in self.names() for v in view.versions(name)]
        return [v for v in sorted(versions, key=lambda v: v.created) if matches(v, query)]

    def set_alias(self, name: str, version: str, alias: str) -> Version:
        """Point ``name@alias`` at ``version`` (moving it if it pointed elsewhere): a tag PUT."""
        check_alias(alias)
        name, version_id = self.resolve(f"{name}:{version}")
        self._tag(name, version_id, alias)
        return self.show(f"{name}:{version_id}")

    def remove(self, ref: str) -> list[str]:
        """Remove a version (DELETE of its manifest, which takes its tags along) or, for ``NAME@ALIAS``, the tag.

        A tag is removed portably: it is re-pointed to the shared ``REMOVED`` manifest, which is then deleted
        (with every tag naming it). distribution 2.x cannot delete a tag directly, and some registries delete
        the whole manifest when asked to delete a tag. Should the registry refuse deletes, the tag names the
        ``REMOVED`` manifest and reads as absent."""
        view = _View(self)
        by_digest = DIGEST_REF.match(ref)
        name, version, alias = (by_digest.group(1), by_digest.group(2), None) if by_digest else parse_ref(ref)
        repository = self.repository(name)
        if alias is not None:
            self._resolve(ref, view)
            repository.put(EMPTY)
            repository.put_manifest(alias, REMOVED)
            try:
                repository.delete_manifest(REMOVED_DIGEST)
            except ConfigError:
                pass  # the registry refuses deletes: the tag stays on REMOVED, which reads as no alias
            return []
        ids = [self._resolve(ref, view)[1]] if version is not None else [v.id for v in view.versions(name)]
        if not ids:
            raise ModelNotFoundError(f"no model {ref!r} in {self.location}")
        for version_id in ids:
            digest = repository.manifest_digest(version_tag(version_id))
            if digest is not None:
                repository.delete_manifest(digest)
            for tag in view.tags(name):
                if tag.startswith(version_tag(version_id) + "."):
                    attached = repository.manifest_digest(tag)
                    if attached is not None:
                        repository.delete_manifest(attached)
        return ids

    def gc(self, *, grace_seconds: float = GC_GRACE_SECONDS) -> list[str]:
        """Nothing to do here: the registry collects blobs no manifest names with its own garbage collector
        (``registry garbage-collect CONFIG`` on distribution, while it is read-only). Returns ``[]``."""
        return []

    def attach(self, name: str, version_id: str, kind: str, data: bytes) -> None:
        """Keep ``data`` as a small artifact tagged ``mk-<id>.sig`` (for a signature) whose subject is the
        version's manifest; a later one replaces it."""
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise FormatError(f"a {kind} is at most {MAX_ATTACHMENT_BYTES:,} bytes; got {len(data):,}")
        repository = self.repository(name)
        found = repository.manifest(version_tag(version_id), limit=layout.MAX_MANIFEST_BYTES)
        if found is None:
            raise ModelNotFoundError(f"no version {name}:{version_id[:12]} in {self.location} to attach a {kind} to")
        blob, _ = repository.put(data), repository.put(EMPTY)
        body = attachment_manifest(kind, blob, len(data), (found[0], len(found[1])))
        repository.put_manifest(attachment_tag(version_id, kind), body)

    def attachment(self, name: str, version_id: str, kind: str) -> bytes | None:
        found = _View(self).doc(name, attachment_tag(version_id, kind))
        layers = found[1].get("layers") if found else None
        if not layers or not isinstance(layers, list) or not isinstance(layers[0], dict):
            return None
        digest, size = str(layers[0].get("digest", "")), layers[0].get("size")
        if not isinstance(size, int) or not 0 <= size <= MAX_ATTACHMENT_BYTES or not digest.startswith("sha256:"):
            raise FormatError(f"the {kind} of {name}:{version_id[:12]} in {self.location} declares "
                              f"{str(size)[:20]} bytes; at most {MAX_ATTACHMENT_BYTES:,} are read")
        return self.repository(name).get(digest[7:], max_bytes=max(size, 1))


def _each(function: Callable[[str], Any], items: list[str]) -> list[Any]:
    """``function`` over ``items``, eight requests in flight at a time (a remote registry's round trips add up)."""
    if len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(function, items))


def _loopback(host: str) -> bool:
    hostname = urlsplit(f"//{host}").hostname or ""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
