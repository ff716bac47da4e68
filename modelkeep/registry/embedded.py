"""The embedded registry: blobs in a local folder, names, versions and aliases in a SQLite index.

Folder layout (``root`` from the argument, else ``MODELKEEP_REGISTRY``, else
``~/.modelkeep/registry``)::

    root/blobs/ab/cdef...   content-addressed blobs (``LocalBlobStore``), version manifests among them
    root/index.sqlite       versions(name, id, ...), aliases(name, alias, id)

Publishing is atomic in three steps: the blobs, then the version manifest (a
blob whose digest is the version id), then one SQLite transaction that adds the
index row (and moves the alias). A push that dies before the transaction
leaves only unreferenced blobs, which ``gc`` removes; readers see a version
only once its row exists, and by then everything it names is stored.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ConfigError, ModelNotFoundError
from ..io.blobstore import BlobStore, LocalBlobStore, blob_name
from . import layout
from .base import GC_GRACE_SECONDS, BlobsCollected, Version, check_name, matches, parse_ref
from .ops import Operations

ENV_VAR = "MODELKEEP_REGISTRY"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, id TEXT NOT NULL, created REAL NOT NULL,
    size INTEGER NOT NULL, metrics TEXT, hyperparameters TEXT, lineage TEXT, parent TEXT, content_hash TEXT,
    UNIQUE(name, id));
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL, alias TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY(name, alias));
CREATE TABLE IF NOT EXISTS attachments (
    name TEXT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY(name, id, kind));
"""
_COLUMNS = "name, id, created, size, metrics, hyperparameters, lineage, parent, content_hash"


def default_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".modelkeep" / "registry").expanduser()


class EmbeddedRegistry(Operations):
    """A registry in a local folder; safe for many processes at once (SQLite transactions, atomic blobs)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, durable: bool = True) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = LocalBlobStore(self.root / "blobs", durable=durable)
        self.durable = durable
        self.index = self.root / "index.sqlite"
        with self._transaction() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            if "content_hash" not in {row[1] for row in db.execute("PRAGMA table_info(versions)")}:
                db.execute("ALTER TABLE versions ADD COLUMN content_hash TEXT")  # an index from before 0.13

    @property
    def location(self) -> str:
        return str(self.root)

    def blob_store(self, name: str) -> BlobStore:
        return self.blobs

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction: ``write`` takes the write lock at once (writers queue, readers never wait)."""
        db = sqlite3.connect(self.index, timeout=120, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL" if self.durable else "PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def publish(self, name: str, manifest: dict[str, Any], record: dict[str, Any], *, alias: str | None = None,
                parent: str | None = None, resplit: Callable[[], dict[str, Any]] | None = None) -> Version:
        """Store the manifest (a blob; its digest is the version id), then add the index row in one transaction."""
        check_name(name)
        if alias is not None:
            check_name(alias, "alias")
        version_id = self.blobs.put(layout.encode(manifest))
        with self._transaction() as db:
            # gc runs inside a write transaction too, so blobs present now stay until this row commits. One
            # collected since it was put (older than gc's grace period, unreferenced) is put again here, under
            # the lock, by ``resplit``; without one the push fails and ``ops.push`` tries again.
            if not self._refresh(layout.blobs_of(manifest) | {version_id}):
                if resplit is None or self.blobs.put(layout.encode(resplit())) != version_id:
                    raise BlobsCollected(f"a blob of {name} was collected while it was pushed to {self.root}; "
                                         "push again")
            db.execute(f"INSERT OR IGNORE INTO versions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (name, version_id, time.time(), manifest["size"], json.dumps(record.get("metrics") or {}),
                        json.dumps(record.get("hyperparameters") or {}), json.dumps(record.get("lineage")),
                        parent, record.get("content_hash")))
            if alias is not None:
                db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (name, alias, version_id))
        return self.show(f"{name}:{version_id}")

    def _refresh(self, digests: set[str]) -> bool:
        """Mark blobs this push uses as fresh, so ``gc``'s grace period covers the push until its row lands.

        False when one has gone (removed by ``gc`` since it was put)."""
        try:
            for digest in digests:
                os.utime(self.blobs.committer.path(blob_name(digest)))
        except FileNotFoundError:
            return False
        return True

    def resolve(self, ref: str) -> tuple[str, str]:
        """``ref`` -> ``(name, full version id)``; ``NAME`` alone is its latest version."""
        name, version, alias = parse_ref(ref)
        with self._transaction(write=False) as db:
            if alias is not None:
                rows = db.execute("SELECT id FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchall()
            elif version is not None:
                rows = db.execute("SELECT id FROM versions WHERE name=? AND id LIKE ?", (name, version + "%")).fetchall()
            else:
                rows = db.execute("SELECT id FROM versions WHERE name=? ORDER BY seq DESC LIMIT 1", (name,)).fetchall()
        if not rows:
            raise ModelNotFoundError(f"no model {ref!r} in the registry at {self.root}; `modelkeep ls` lists them")
        if len(rows) > 1:
            raise ConfigError(f"version prefix in {ref!r} matches {len(rows)} versions; give more characters")
        return name, rows[0][0]

    def manifest(self, name: str, version_id: str) -> dict[str, Any]:
        return layout.decode(self.blobs.get(version_id, max_bytes=layout.MAX_MANIFEST_BYTES),
                             what=f"version manifest {version_id}")

    def show(self, ref: str) -> Version:
        name, version_id = self.resolve(ref)
        with self._transaction(write=False) as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM versions WHERE name=? AND id=?", (name, version_id)).fetchone()
            aliases = db.execute("SELECT alias FROM aliases WHERE name=? AND id=? ORDER BY alias",
                                 (name, version_id)).fetchall()
        return _version(row, tuple(a for (a,) in aliases))

    def list(self, query: str = "") -> list[Version]:
        """Versions, oldest first, filtered by ``query`` (see ``matches``)."""
        with self._transaction(write=False) as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM versions ORDER BY seq").fetchall()
            aliases: dict[tuple[str, str], list[str]] = {}
            for name, alias, version_id in db.execute("SELECT name, alias, id FROM aliases ORDER BY alias"):
                aliases.setdefault((name, version_id), []).append(alias)
        versions = [_version(row, tuple(aliases.get((row[0], row[1]), ()))) for row in rows]
        return [v for v in versions if matches(v, query)]

    def set_alias(self, name: str, version: str, alias: str) -> Version:
        """Point ``name@alias`` at ``version`` (moving it if it pointed elsewhere)."""
        check_name(alias, "alias")
        name, version_id = self.resolve(f"{name}:{version}")
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (name, alias, version_id))
        return self.show(f"{name}:{version_id}")

    def remove(self, ref: str) -> list[str]:
        """Remove a version (or, for ``NAME@ALIAS``, just the alias); blobs stay until ``gc``. Returns removed ids."""
        name, version, alias = parse_ref(ref)
        if alias is not None:
            self.resolve(ref)
            with self._transaction() as db:
                db.execute("DELETE FROM aliases WHERE name=? AND alias=?", (name, alias))
            return []
        ids = [self.resolve(ref)[1]] if version is not None else [v.id for v in self.list() if v.name == name]
        if not ids:
            raise ModelNotFoundError(f"no model {ref!r} in the registry at {self.root}")
        with self._transaction() as db:
            for version_id in ids:
                db.execute("DELETE FROM versions WHERE name=? AND id=?", (name, version_id))
                db.execute("DELETE FROM aliases WHERE name=? AND id=?", (name, version_id))
                db.execute("DELETE FROM attachments WHERE name=? AND id=?", (name, version_id))
        return ids

    def gc(self, *, grace_seconds: float = GC_GRACE_SECONDS) -> list[str]:
        """Delete blobs no version references and not touched for ``grace_seconds``; return their digests.

        Runs inside one write transaction, so no push commits its row meanwhile; a push whose blobs were
        deleted before its own transaction finds them missing there and puts them again."""
        removed = []
        with self._transaction() as db:
            ids = {version_id for (version_id,) in db.execute("SELECT DISTINCT id FROM versions")}
            referenced = set(ids)
            for version_id in ids:
                referenced |= layout.blobs_of(self.manifest("", version_id))
            now = time.time()
            for digest in self.blobs.list():
                if digest in referenced:
                    continue
                try:
                    age = now - os.stat(self.blobs.committer.path(blob_name(digest))).st_mtime
                except FileNotFoundError:
                    continue
                if age >= grace_seconds:
                    self.blobs.delete(digest)
                    removed.append(digest)
        self.blobs.clean()
        return removed

    def storage_bytes(self) -> int:
        """Bytes held by the blobs (the index not counted)."""
        return sum(os.stat(self.blobs.committer.path(blob_name(d))).st_size for d in self.blobs.list())


    def attach(self, name: str, version_id: str, kind: str, data: bytes) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO attachments VALUES (?, ?, ?, ?)", (name, version_id, kind, data))

    def attachment(self, name: str, version_id: str, kind: str) -> bytes | None:
        with self._transaction(write=False) as db:
            row = db.execute("SELECT data FROM attachments WHERE name=? AND id=? AND kind=?",
                             (name, version_id, kind)).fetchone()
        return bytes(row[0]) if row else None


def _version(row: tuple[Any, ...], aliases: tuple[str, ...]) -> Version:
    name, version_id, created, size, metrics, hyperparameters, lineage, parent, content = row
    return Version(name=name, id=version_id, created=created, size=size, metrics=json.loads(metrics or "{}"),
                   hyperparameters=json.loads(hyperparameters or "{}"), lineage=json.loads(lineage or "null"),
                   parent=parent, aliases=aliases, content_hash=content)
