"""The object-storage registry: versions on any fsspec store (``s3://bucket/prefix``, ``gs://``, ``memory://``).

Layout under the prefix (normative; also in docs/registry.md)::

    blobs/ab/cdef...                         content-addressed blobs (``FsspecBlobStore``), manifests among them
    versions/<name>/<version id>.json        the record: name, id, created, size, metrics, hyperparameters,
                                             lineage, parent, content_hash (written once)
    aliases/<name>/<alias>.json              {"id": version id, "set": "seconds.micro"}; fixed size, replaced in place
    attachments/<name>/<version id>/<kind>   small documents beside a version (its signature)
    locks/push-<uuid>.json, locks/gc-<uuid>.json   see ``locks``

Every item goes through a ``MarkerCommitter`` (payload, then ``<item>.modelkeep-committed``): an item without its
marker is absent to every reader. Nothing here writes, moves or deletes around the committers.

``publish`` (once ``ops.push`` has put every blob), under a push lock (waiting while a gc holds one): check every
blob is committed -- putting them again through ``resplit`` if a gc took one after the push put it --, put the
manifest (its digest is the version id), then commit the record: its marker is the atomic publish. A record
already committed is kept. A push that dies earlier leaves only blobs, which the next push of the file does not
send again (``put`` skips committed blobs) and which ``gc`` removes after the grace period.

``gc``, under a gc lock (taken once no publish holds a push lock; see ``locks`` for why the two exclude each other
without a create-only write): list ``versions/`` (ids are in the names), read each manifest, delete committed
blobs none names whose marker is older than ``grace_seconds``, then marker-less leftovers older than the grace.
It refuses (``StorageError``) when a manifest cannot be read, rather than guess.

``list`` finds ``versions/`` and ``aliases/`` once each and reads the records in one batched, bounded call;
``NAME`` alone is the newest ``created`` (ties: the larger id). Without ``storage_options``, fsspec's own
configuration applies (``FSSPEC_S3_ENDPOINT_URL``, ``FSSPEC_S3_KEY``, ``FSSPEC_S3_SECRET``, ``FSSPEC_S3='{json}'``,
``~/.config/fsspec``), the environment re-read at each open. Listing caches are off: other clients change the store.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable

from ..errors import ConfigError, FormatError, ModelNotFoundError, StorageError
from ..io.blobstore import DIGEST, BlobStore, FsspecBlobStore, check_digest
from ..io.committer import MARKER_SUFFIX, MarkerCommitter
from . import layout
from .base import GC_GRACE_SECONDS, BlobsCollected, Version, check_name, matches, parse_ref
from .filesystems import open_filesystem
from .locks import GC_BUDGET_SECONDS, GC_WAIT_SECONDS, StoreLocks
from .ops import Operations

#: A version record, alias or attachment larger than this is refused (a record is a few KB).
MAX_RECORD_BYTES = 1 << 20
MAX_ATTACHMENT_BYTES = 1 << 20
#: Blobs checked (and manifests read) at once; an object store answers each request in milliseconds.
PARALLEL_REQUESTS = 16
_RECORD = re.compile(r"^versions/([^/]+)/([0-9a-f]{64})\.json$")
_ALIAS = re.compile(r"^aliases/([^/]+)/([^/]+)\.json$")
_FIELDS = ("metrics", "hyperparameters", "lineage", "content_hash")


class ObjectStoreRegistry(Operations):
    """A registry under one prefix of an object store; safe for many clients at once (see the module docstring).

    ``filesystem``: an fsspec filesystem already made (``location`` is then a URL or path on it); else one is
    made from ``location`` and ``storage_options`` (default: fsspec's configuration, from the environment)."""

    transfer_workers = 8  # blobs a push or pull moves at once (each is its own request)

    def __init__(self, location: str, *, storage_options: dict[str, Any] | None = None, filesystem: Any = None,
                 gc_budget_seconds: float = GC_BUDGET_SECONDS, gc_wait_seconds: float = GC_WAIT_SECONDS) -> None:
        if filesystem is None:
            filesystem, root = open_filesystem(location, storage_options)
        else:
            root = filesystem._strip_protocol(str(location)).rstrip("/")
        self.location = str(location)
        self.fs, self.root = filesystem, root
        self.blobs = FsspecBlobStore(f"{root}/blobs", filesystem=filesystem)
        self.items = MarkerCommitter(root, filesystem=filesystem)
        self.locks = StoreLocks(self.items, gc_budget_seconds=gc_budget_seconds, gc_wait_seconds=gc_wait_seconds)

    def blob_store(self, name: str) -> BlobStore:
        return self.blobs

    # ------------------------------------------------------------------ publishing

    def publish(self, name: str, manifest: dict[str, Any], record: dict[str, Any], *, alias: str | None = None,
                parent: str | None = None, resplit: Callable[[], dict[str, Any]] | None = None) -> Version:
        """Check the blobs, store the manifest, commit the version record, all under a push lock."""
        check_name(name)
        if alias is not None:
            check_name(alias, "alias")
        expected = layout.version_id(manifest)
        with self.locks.pushing(name):
            self.fs.invalidate_cache()  # a filesystem given to us may cache listings; gc may have changed them
            if not self._stored(layout.blobs_of(manifest)):
                # gc took a blob after the push put it (it was unreferenced then): put them again, under the lock
                if resplit is None or layout.version_id(resplit()) != expected:
                    raise BlobsCollected(f"a blob of {name} was collected while it was pushed to {self.location}; "
                                         "push again")
            version_id = self.blobs.put(layout.encode(manifest))
            item = _record_item(name, version_id)
            doc = self._read_item(item, "version record")  # None when not committed
            version = _version(name, version_id, doc) if doc is not None else None
            if version is None:
                doc = {"name": name, "id": version_id, "created": time.time(), "size": manifest["size"],
                       "parent": parent, **{key: record.get(key) for key in _FIELDS}}
                self._write(item, doc)
                version = _version(name, version_id, doc)
            if alias is not None:
                self._point(name, alias, version_id)
        # not ``show``: a client publishing the same content may be rewriting the record this very moment
        aliases = self._aliases(f"aliases/{name}/").get((name, version_id), ())
        return replace(version, aliases=aliases)  # type: ignore[type-var]

    def _stored(self, digests: set[str]) -> bool:
        """Whether every blob is committed (checked in parallel: one model may have hundreds)."""
        if not digests:
            return True
        with ThreadPoolExecutor(min(PARALLEL_REQUESTS, len(digests))) as pool:
            return all(pool.map(self.blobs.has, sorted(digests)))

    def _point(self, name: str, alias: str, version_id: str) -> None:
        """Move an alias with no moment of absence: a fixed-size document replaced in place (``replace``)."""
        doc = {"id": version_id, "set": f"{time.time():017.6f}"}
        self.items.replace(_alias_item(name, alias), json.dumps(doc, sort_keys=True).encode())

    def _write(self, item: str, doc: dict[str, Any]) -> None:
        with self.items.writing(item) as handle:
            handle.write(json.dumps(doc, sort_keys=True).encode())

    # ------------------------------------------------------------------ reading

    def resolve(self, ref: str) -> tuple[str, str]:
        """``ref`` -> ``(name, full version id)``; ``NAME`` alone is its newest version."""
        name, version, alias = parse_ref(ref)
        if alias is not None:
            doc = self._read_item(_alias_item(name, alias), "alias")  # one being moved reads as old or new
            ids = [doc["id"]] if isinstance(doc, dict) and isinstance(doc.get("id"), str) else []
            ids = [i for i in ids if DIGEST.match(i) and self.items.is_committed(_record_item(name, i))]
        elif version is not None:
            ids = [i for n, i in self._record_items(f"versions/{name}/") if n == name and i.startswith(version)]
        else:
            ids = [v.id for v in self._records(name)][-1:]
        if not ids:
            raise ModelNotFoundError(f"no model {ref!r} in the registry at {self.location}; `modelkeep ls` lists them")
        if len(ids) > 1:
            raise ConfigError(f"version prefix in {ref!r} matches {len(ids)} versions; give more characters")
        return name, ids[0]

    def manifest(self, name: str, version_id: str) -> dict[str, Any]:
        return layout.decode(self.blobs.get(version_id, max_bytes=layout.MAX_MANIFEST_BYTES),
                             what=f"version manifest {version_id}")

    def show(self, ref: str) -> Version:
        name, version_id = self.resolve(ref)
        doc = self._read_item(_record_item(name, version_id), "version record")
        version = _version(name, version_id, doc) if doc is not None else None
        if version is None:
            raise ModelNotFoundError(f"no model {ref!r} in the registry at {self.location} (its record is gone or "
                                     "unreadable); `modelkeep ls` lists them")
        aliases = self._aliases(f"aliases/{name}/").get((name, version_id), ())
        return replace(version, aliases=aliases)

    def list(self, query: str = "") -> list[Version]:
        """Versions, oldest first, filtered by ``query`` (see ``matches``)."""
        aliases = self._aliases("aliases/")
        versions = [replace(v, aliases=aliases.get((v.name, v.id), ())) for v in self._records(None)]
        return [v for v in versions if matches(v, query)]

    def _files(self, folder: str) -> dict[str, dict[str, Any]]:
        """Every file under ``folder`` (relative to the root, ending in ``/``): item -> fsspec info."""
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(f"{self.root}/{folder}", withdirs=False, detail=True)
        except FileNotFoundError:
            return {}
        start = f"{self.root}/{folder}"
        return {path[len(self.root) + 1:]: info for path, info in found.items() if path.startswith(start)}

    def _committed(self, folder: str) -> dict[str, dict[str, Any]]:
        """The committed items under ``folder`` (their marker listed beside them): item -> info of the payload."""
        files = self._files(folder)
        return {item: info for item, info in files.items()
                if not item.endswith(MARKER_SUFFIX) and item + MARKER_SUFFIX in files
                and not os.path.basename(item).startswith(".")}

    def _read_many(self, items: dict[str, dict[str, Any]], what: str) -> dict[str, Any]:
        """Parse small JSON items in one batched read; oversized or malformed ones are skipped with a warning."""
        sizes = {item: info.get("size") for item, info in sorted(items.items())}
        wanted = [item for item, size in sizes.items() if isinstance(size, int) and 0 < size <= MAX_RECORD_BYTES]
        paths = [f"{self.root}/{item}" for item in wanted]
        datas = self.fs.cat_ranges(paths, [0] * len(paths), [MAX_RECORD_BYTES + 1] * len(paths),
                                   on_error="return") if paths else []
        docs = {item: _parse(data) for item, data in zip(wanted, datas) if not isinstance(data, FileNotFoundError)}
        for item in [item for item in sizes if item not in wanted or docs.get(item, {}) is None]:
            warnings.warn(f"skipped {what} {item} in {self.location}: not a JSON object of at most "
                          f"{MAX_RECORD_BYTES:,} bytes ({sizes[item]} bytes); remove it", RuntimeWarning, stacklevel=3)
        return {item: doc for item, doc in docs.items() if doc is not None}

    def _read_item(self, item: str, what: str) -> Any:
        """One small JSON item, or ``None`` when it is not committed."""
        data = self._read_bytes(item, MAX_RECORD_BYTES, what)
        return _parse(data) if data is not None else None

    def _read_bytes(self, item: str, limit: int, what: str) -> bytes | None:
        try:
            data = self.items.read(item, limit + 1)  # its marker, then at most limit + 1 bytes: two requests
        except FileNotFoundError:
            return None
        if len(data) > limit:
            raise FormatError(f"{what} {item} in {self.location} is larger than {limit:,} bytes; remove it")
        return data

    def _record_items(self, folder: str) -> list[tuple[str, str]]:
        return [(m.group(1), m.group(2)) for m in map(_RECORD.match, self._committed(folder)) if m]

    def _records(self, name: str | None) -> list[Version]:
        """The versions of ``name`` (``None``: all), oldest first (by ``created``, then id)."""
        items = {item: info for item, info in self._committed(f"versions/{name}/" if name else "versions/").items()
                 if _RECORD.match(item)}
        versions = []
        for item, doc in self._read_many(items, "version record").items():
            found = _RECORD.match(item)
            version = _version(found.group(1), found.group(2), doc) if found else None
            if version is not None:
                versions.append(version)
        return sorted(versions, key=lambda v: (v.created, v.id))

    def _aliases(self, folder: str) -> dict[tuple[str, str], tuple[str, ...]]:
        items = {item: info for item, info in self._committed(folder).items() if _ALIAS.match(item)}
        found: dict[tuple[str, str], list[str]] = {}
        for item, doc in self._read_many(items, "alias").items():
            name, alias = _ALIAS.match(item).groups()  # type: ignore[union-attr]
            if isinstance(doc.get("id"), str):
                found.setdefault((name, doc["id"]), []).append(alias)
        return {key: tuple(sorted(aliases)) for key, aliases in found.items()}

    # ------------------------------------------------------------------ changing names

    def set_alias(self, name: str, version: str, alias: str) -> Version:
        """Point ``name@alias`` at ``version`` (moving it if it pointed elsewhere; the last writer wins)."""
        check_name(alias, "alias")
        name, version_id = self.resolve(f"{name}:{version}")
        self._point(name, alias, version_id)
        return self.show(f"{name}:{version_id}")

    def remove(self, ref: str) -> list[str]:
        """Remove a version (or, for ``NAME@ALIAS``, just the alias); blobs stay until ``gc``. Returns removed ids."""
        name, version, alias = parse_ref(ref)
        if alias is not None:
            self.resolve(ref)
            self.items.delete(_alias_item(name, alias))
            return []
        ids = [self.resolve(ref)[1]] if version is not None else \
            [i for _, i in self._record_items(f"versions/{name}/")]
        if not ids:
            raise ModelNotFoundError(f"no model {ref!r} in the registry at {self.location}")
        aliases = self._aliases(f"aliases/{name}/")
        for version_id in ids:
            self.items.delete(_record_item(name, version_id))  # the version is gone from here on
            for alias_name in aliases.get((name, version_id), ()):
                self.items.delete(_alias_item(name, alias_name))
            for item in self._committed(f"attachments/{name}/{version_id}/"):
                self.items.delete(item)
        return ids

    def attach(self, name: str, version_id: str, kind: str, data: bytes) -> None:
        check_name(kind, "attachment kind")
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise ConfigError(f"a {kind} attachment is at most {MAX_ATTACHMENT_BYTES:,} bytes; got {len(data):,}")
        if not self.items.is_committed(_record_item(check_name(name), check_digest(version_id))):
            raise ModelNotFoundError(f"no version {name}:{version_id[:12]} in {self.location} to attach {kind} to")
        with self.items.writing(f"attachments/{name}/{version_id}/{kind}") as handle:
            handle.write(bytes(data))

    def attachment(self, name: str, version_id: str, kind: str) -> bytes | None:
        item = f"attachments/{check_name(name)}/{check_digest(version_id)}/{check_name(kind, 'attachment kind')}"
        return self._read_bytes(item, MAX_ATTACHMENT_BYTES, f"{kind} attachment")

    # ------------------------------------------------------------------ garbage

    def gc(self, *, grace_seconds: float = GC_GRACE_SECONDS) -> list[str]:
        """Delete blobs no version references whose marker is older than ``grace_seconds``; return their digests.

        Under a gc lock (no publish runs meanwhile; ``StorageError`` if publishes kept it out for long). Stops
        at the lock's budget (``gc_budget_seconds``), leaving the rest to the next gc."""
        removed: list[str] = []
        with self.locks.collecting() as until:
            referenced = self._referenced()
            files = self._files("blobs/")
            now = time.time()
            for item in sorted(files):
                digest = item[len("blobs/"):].replace("/", "", 1)
                if not DIGEST.match(digest) or digest in referenced or item + MARKER_SUFFIX not in files:
                    continue
                if time.time() >= until:
                    break
                if now - self._modified(item + MARKER_SUFFIX, files[item + MARKER_SUFFIX]) >= grace_seconds:
                    self.blobs.delete(digest)
                    removed.append(digest)
            if time.time() < until:
                self.blobs.clean(older_than=grace_seconds)
            self.locks.remove_stale()
        return removed

    def _referenced(self) -> set[str]:
        """Every blob a committed version names (manifests included); ``StorageError`` if one cannot be read."""
        ids = sorted({version_id for _, version_id in self._record_items("versions/")})

        def blobs(version_id: str) -> set[str]:
            try:
                return layout.blobs_of(self.manifest("", version_id)) | {version_id}
            except (ModelNotFoundError, FormatError) as exc:
                raise StorageError(f"gc stopped before deleting anything: the manifest of version {version_id[:12]} "
                                   f"in {self.location} cannot be read ({str(exc)[:200]}); remove that version "
                                   "(`modelkeep rm NAME:ID`) or put its manifest back") from None

        with ThreadPoolExecutor(max(1, min(PARALLEL_REQUESTS, len(ids)))) as pool:
            return set().union(*pool.map(blobs, ids))

    def _modified(self, item: str, info: dict[str, Any]) -> float:
        """When ``item`` was last written (POSIX seconds), from its listing or asked; unknown is *now* (spared)."""
        value = info.get("LastModified") or info.get("mtime") or info.get("created")
        try:
            value = value if value is not None else self.fs.modified(f"{self.root}/{item}")
            if isinstance(value, _dt.datetime):
                value = (value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)).timestamp()
            return float(value)
        except (NotImplementedError, OSError, TypeError, ValueError):
            return time.time()

    def storage_bytes(self) -> int:
        """Bytes held by committed blobs (records, aliases, markers and locks not counted)."""
        return sum(int(info.get("size") or 0) for info in self._committed("blobs/").values())


def _record_item(name: str, version_id: str) -> str:
    return f"versions/{name}/{version_id}.json"


def _alias_item(name: str, alias: str) -> str:
    return f"aliases/{name}/{alias}.json"


def _parse(data: Any) -> dict[str, Any] | None:
    try:
        doc = json.loads(data) if isinstance(data, (bytes, bytearray)) and len(data) <= MAX_RECORD_BYTES else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _version(name: str, version_id: str, doc: dict[str, Any]) -> Version | None:
    """The ``Version`` a record describes, or ``None`` when it does not describe ``name:version_id``."""
    if doc.get("name") != name or doc.get("id") != version_id:
        return None
    try:
        return Version(name=name, id=version_id, created=float(doc["created"]), size=int(doc["size"]),
                       metrics=doc.get("metrics") or {}, hyperparameters=doc.get("hyperparameters") or {},
                       lineage=doc.get("lineage"), parent=doc.get("parent"), content_hash=doc.get("content_hash"))
    except (KeyError, TypeError, ValueError):
        return None

