"""The locks that keep ``gc`` from deleting a blob a publish is about to reference, on stores without transactions.

Two kinds of lock live as small JSON items under ``locks/`` of an object-store
registry, each written and deleted through the registry's ``MarkerCommitter``
(so a lock is visible exactly when its marker is):

* ``locks/push-<uuid>.json`` -- ``{"kind": "push", "time", "host", "pid", "name"}``,
  held by a publish from before it checks its blobs until its version record is
  committed (seconds, unless the check finds a blob gone and puts it again);
* ``locks/gc-<uuid>.json`` -- ``{"kind": "gc", "time", "host", "pid", "until"}``,
  held by a ``gc`` while it decides and deletes; ``gc`` stops deleting at ``until``.

Exclusion without a create-only write (Dekker's argument): each side first
commits its own lock, then lists the other kind. On a store with strong
read-after-write and list-after-write consistency (S3 since 2020, radosgw,
GCS, ``memory://``) at least one of two racing parties sees the other's lock:
whichever listed second listed after the other's lock was committed. A
publish that sees a live gc lock waits (keeping its own lock) until it goes;
a gc that sees a live push lock withdraws its own lock, waits a little and
tries again, and gives up with ``StorageError`` after ``wait_seconds``. A gc
never waits while holding its lock, so the two never wait for each other.
Several gcs at once are harmless (each deletes only blobs no version names),
so gc locks need unique names, not a create-only ``gc.json``; that keeps every
write on the committer, on every fsspec store.

A lock of a process that died is *stale*: a push lock older than
``PUSH_STALE_SECONDS`` (6 h), a gc lock past its ``until`` (at most
``MAX_GC_SECONDS`` after its ``time``) plus ``CLOCK_MARGIN_SECONDS``, or any
lock written on this host by a process that no longer runs. Stale locks are
ignored, and ``gc`` deletes them (a pid is judged only by a client with the same
``host_identity``). This module never touches blobs or records.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import StorageError

FOLDER = "locks"
#: A push lock older than this belongs to a publish that died (a live one lasts seconds to minutes).
PUSH_STALE_SECONDS = 6 * 3600.0
#: How long one ``gc`` may delete before it stops (the next ``gc`` goes on); a publish waits at most this long.
GC_BUDGET_SECONDS = 300.0
#: No gc lock is honoured longer than this after it was written, whatever its ``until`` says.
MAX_GC_SECONDS = 3600.0
#: Slack for clocks of different clients and for a delete request still in flight at ``until``.
CLOCK_MARGIN_SECONDS = 60.0
#: How long ``gc`` tries to find a moment without a publish in flight before it gives up.
GC_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.1
MAX_LOCK_BYTES = 4096


@dataclass(frozen=True)
class Lock:
    """One lock item: who holds it and since when."""

    item: str
    kind: str
    time: float
    host: str
    pid: int
    until: float | None = None

    def live(self, now: float) -> bool:
        """Whether the lock still counts (see the module docstring for what makes one stale)."""
        if self.host == host_identity() and not _running(self.pid):
            return False
        if self.kind == "gc":
            until = min(self.until if self.until is not None else self.time, self.time + MAX_GC_SECONDS)
            return now <= until + CLOCK_MARGIN_SECONDS
        return now - self.time < PUSH_STALE_SECONDS


def host_identity() -> str:
    """This machine and process namespace: the host name, the boot id and the pid namespace where Linux tells them.

    Two clients judge each other's pids only when these agree: containers sharing a host name (host networking)
    or cloned machines have different pid namespaces or boot ids, so a live remote lock is never taken for dead."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as handle:
            parts.append(handle.read(64).strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return " ".join(parts)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


class StoreLocks:
    """The push and gc locks of one registry location, kept through ``committer`` (a ``MarkerCommitter``)."""

    def __init__(self, committer: Any, *, gc_budget_seconds: float = GC_BUDGET_SECONDS,
                 gc_wait_seconds: float = GC_WAIT_SECONDS) -> None:
        self.committer = committer
        self.gc_budget_seconds = gc_budget_seconds
        self.gc_wait_seconds = gc_wait_seconds

    def held(self) -> list[Lock]:
        """Every committed lock (stale ones included); an unreadable lock item is skipped."""
        found = []
        for item in self.committer.names(FOLDER):
            with contextlib.suppress(FileNotFoundError, ValueError, TypeError, KeyError):
                with self.committer.open(item) as handle:
                    raw = handle.read(MAX_LOCK_BYTES + 1)
                doc = json.loads(raw) if len(raw) <= MAX_LOCK_BYTES else {}
                found.append(Lock(item, str(doc["kind"]), float(doc["time"]), str(doc["host"]), int(doc["pid"]),
                                  float(doc["until"]) if doc.get("until") is not None else None))
        return found

    def _write(self, kind: str, **extra: Any) -> str:
        item = f"{FOLDER}/{kind}-{uuid.uuid4().hex}.json"
        doc = {"kind": kind, "time": time.time(), "host": host_identity(), "pid": os.getpid(), **extra}
        with self.committer.writing(item) as handle:
            handle.write(json.dumps(doc, sort_keys=True).encode())
        return item

    def _live(self, kind: str, *, besides: str) -> list[Lock]:
        now = time.time()
        return [lock for lock in self.held() if lock.kind == kind and lock.item != besides and lock.live(now)]

    @contextlib.contextmanager
    def pushing(self, name: str) -> Iterator[None]:
        """Hold a push lock for the block, entered once no live gc lock remains (waiting while one does)."""
        own = self._write("push", name=name)
        try:
            while self._live("gc", besides=own):
                time.sleep(POLL_SECONDS)
            yield
        finally:
            self.committer.delete(own)

    @contextlib.contextmanager
    def collecting(self) -> Iterator[float]:
        """Hold a gc lock for the block, once no live push lock is seen; yields the time gc must stop by.

        ``StorageError`` when publishes kept the store busy for ``gc_wait_seconds``."""
        give_up = time.monotonic() + self.gc_wait_seconds
        while True:
            until = time.time() + self.gc_budget_seconds
            own = self._write("gc", until=until)
            pushes = self._live("push", besides=own)
            if not pushes:
                break
            self.committer.delete(own)
            if time.monotonic() >= give_up:
                raise StorageError(f"a push is in flight at {self.committer.location} ({len(pushes)} push lock(s), "
                                   f"e.g. {pushes[0].item} from {pushes[0].host} pid {pushes[0].pid}); "
                                   "gc deleted nothing: try later")
            time.sleep(POLL_SECONDS * 5)
        try:
            yield until
        finally:
            self.committer.delete(own)

    def remove_stale(self) -> list[str]:
        """Delete locks whose holders are gone (see ``Lock.live``); return their items."""
        now = time.time()
        stale = [lock.item for lock in self.held() if not lock.live(now)]
        for item in stale:
            self.committer.delete(item)
        return stale
