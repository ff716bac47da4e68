"""The object-store registry: on ``memory://`` (fast, every behaviour) and on a real Ceph radosgw (S3) on loopback.

The real-server tests cover what only a real store shows: many processes pushing at once, gc racing pushes,
a blob damaged in the bucket by hand, configuration from the environment through ``open_registry``.
"""
from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from servers import s3_server  # noqa: F401  (fixture)

from modelkeep import registry
from modelkeep.errors import ConfigError, IntegrityError, ModelNotFoundError, StorageError
from modelkeep.io.blobstore import blob_name
from modelkeep.registry import layout
from modelkeep.registry.locks import host_identity
from modelkeep.registry.objectstore import MAX_RECORD_BYTES, ObjectStoreRegistry

from registry_files import fine_tune


@pytest.fixture()
def reg():
    location = f"memory://modelkeep-{uuid.uuid4().hex[:12]}/registry"
    store = ObjectStoreRegistry(location, gc_wait_seconds=0.5)
    yield store
    if store.fs.exists(store.root):
        store.fs.rm(store.root, recursive=True)


def _count_blob_writes(store: ObjectStoreRegistry, monkeypatch) -> list[str]:
    """Record every blob the store actually writes (``put`` skips blobs already committed)."""
    written: list[str] = []
    real_writing = store.blobs.committer.writing

    def writing(name):
        written.append(name)
        return real_writing(name)

    monkeypatch.setattr(store.blobs.committer, "writing", writing)
    return written


# ---------------------------------------------------------------- the verbs, on memory://


def test_push_then_pull_is_byte_identical(reg, tmp_path):
    original = fine_tune(tmp_path / "m.safetensors", 1, metrics={"accuracy": 0.91})
    version = reg.push(original, "digits", alias="production", card="# Digits\n")
    assert version.name == "digits" and len(version.id) == 64 and version.aliases == ("production",)
    assert version.metrics == {"accuracy": 0.91} and version.size == original.stat().st_size
    for ref in ("digits", f"digits:{version.id}", f"digits:{version.id[:8]}", "digits@production"):
        out = reg.pull(ref, tmp_path / f"out-{ref.replace(':', '_').replace('@', '_')}.safetensors")
        assert out.read_bytes() == original.read_bytes()
    folder = tmp_path / "pulled"
    folder.mkdir()
    assert reg.pull("digits", folder) == folder / "digits.safetensors"
    assert reg.card("digits") == "# Digits\n"
    assert reg.push(original, "digits", card="# Digits\n").created == version.created  # the first record stays
    assert len(reg.list()) == 1


def test_aliases_move_and_name_alone_is_the_latest(reg, tmp_path):
    first = reg.push(fine_tune(tmp_path / "a.safetensors", 1), "m", alias="production")
    second = reg.push(fine_tune(tmp_path / "b.safetensors", 2), "m", alias="best", parent=f"m:{first.id}")
    assert reg.show("m").id == second.id and reg.show("m").parent == first.id
    assert reg.show("m@production").id == first.id
    reg.set_alias("m", second.id[:10], "production")
    assert reg.show("m@production").id == second.id
    assert reg.show(f"m:{first.id}").aliases == ()
    assert reg.show("m").aliases == ("best", "production")
    assert reg.remove("m@best") == []
    with pytest.raises(ModelNotFoundError, match="m@best"):
        reg.show("m@best")
    assert [node.version.id for node in reg.lineage("m")] == [first.id]


def test_list_filters_by_name_and_metrics(reg, tmp_path):
    reg.push(fine_tune(tmp_path / "a.safetensors", 1, metrics={"accuracy": 0.8}, hyperparameters={"lr": 0.1}), "cats")
    reg.push(fine_tune(tmp_path / "b.safetensors", 2, metrics={"accuracy": 0.95}), "dogs")
    assert [v.name for v in reg.list()] == ["cats", "dogs"]
    assert [v.name for v in reg.list("accuracy>0.9")] == ["dogs"]
    assert [v.name for v in reg.list("cat")] == ["cats"]
    assert [v.name for v in reg.list("lr=0.1 accuracy<=0.8")] == ["cats"]
    assert reg.list("dogs accuracy<0.5") == []


def test_bad_refs_are_config_errors(reg):
    for ref in ("bad name", "m:xyz", "m@", "../escape"):
        with pytest.raises(ConfigError):
            reg.show(ref)
    with pytest.raises(ModelNotFoundError, match="ls"):
        reg.show("missing")


def test_remove_and_gc_keep_only_what_versions_reference(reg, tmp_path):
    keep = reg.push(fine_tune(tmp_path / "a.safetensors", 1), "m", alias="production")
    gone = reg.push(fine_tune(tmp_path / "b.safetensors", 2), "m", alias="old")
    reg.attach("m", gone.id, "signature", b"sig")
    assert reg.gc() == []  # unreferenced blobs within the grace period stay
    assert reg.remove(f"m:{gone.id}") == [gone.id]
    assert reg.attachment("m", gone.id, "signature") is None
    assert not reg.fs.exists(f"{reg.root}/aliases/m/old.json")
    assert reg.gc() == []
    removed = set(reg.gc(grace_seconds=0))
    assert gone.id in removed and len(removed) == 4  # manifest, header, head weight and bias
    assert keep.id not in removed
    assert reg.pull("m", tmp_path / "o.safetensors").read_bytes() == (tmp_path / "a.safetensors").read_bytes()
    reg.remove("m")
    assert reg.list() == [] and len(reg.gc(grace_seconds=0)) > 0 and reg.blobs.list() == []
    assert reg.storage_bytes() == 0


def test_shared_blobs_are_stored_once(reg, tmp_path):
    files = [fine_tune(tmp_path / f"ft{i}.safetensors", i, width=128) for i in range(4)]
    for path in files:
        reg.push(path, "ft")
    one = files[0].stat().st_size
    assert reg.storage_bytes() < one + 3 * (one // 8)


def test_attachments_are_small_and_bounded(reg, tmp_path):
    version = reg.push(fine_tune(tmp_path / "m.safetensors", 1), "m")
    reg.attach("m", version.id, "signature", b"bundle")
    assert reg.attachment("m", version.id, "signature") == b"bundle"
    with pytest.raises(ConfigError, match="at most"):
        reg.attach("m", version.id, "signature", b"x" * (MAX_RECORD_BYTES + 1))
    with pytest.raises(ModelNotFoundError):
        reg.attach("m", "0" * 64, "signature", b"bundle")


def test_a_hostile_record_is_skipped_not_read(reg, tmp_path):
    reg.push(fine_tune(tmp_path / "m.safetensors", 1), "m")
    with reg.items.writing(f"versions/evil/{'ab' * 32}.json") as handle:
        handle.write(b"[" * (MAX_RECORD_BYTES + 10))
    with reg.items.writing(f"versions/odd/{'cd' * 32}.json") as handle:
        handle.write(b"not json")
    with pytest.warns(RuntimeWarning) as caught:
        assert [v.name for v in reg.list()] == ["m"]
    assert sorted(str(w.message).split()[3].split("/")[1] for w in caught) == ["evil", "odd"]
    assert any(f"{MAX_RECORD_BYTES + 10} bytes" in str(w.message) for w in caught)


# ---------------------------------------------------------------- faults and the gc protocol, on memory://


def test_an_interrupted_push_resumes_without_resending(reg, tmp_path, monkeypatch):
    original = fine_tune(tmp_path / "m.safetensors", 1)
    reg.transfer_workers = 1  # one blob at a time, so exactly three arrive
    real_put, puts = reg.blobs.put, []

    def put_three_then_fail(data, **options):
        if len(puts) == 3:
            raise ConnectionError("network gone")
        puts.append(real_put(data, **options))
        return puts[-1]

    monkeypatch.setattr(reg.blobs, "put", put_three_then_fail)
    with pytest.raises(ConnectionError):
        reg.push(original, "m")
    monkeypatch.undo()
    assert reg.list() == [] and reg.locks.held() == []
    written = _count_blob_writes(reg, monkeypatch)
    version = reg.push(original, "m")
    assert len(written) == 12 - 3  # 11 blobs + the manifest, less the 3 that arrived
    assert reg.pull(f"m:{version.id}", tmp_path / "o.safetensors").read_bytes() == original.read_bytes()


def test_a_blob_collected_before_publish_is_put_again(reg, tmp_path, monkeypatch):
    original = fine_tune(tmp_path / "m.safetensors", 1)
    real_publish = reg.publish

    def lose_a_blob_then_publish(name, manifest, record, **options):
        reg.blobs.delete(sorted(layout.blobs_of(manifest))[0])  # as if gc took it after the push put it
        return real_publish(name, manifest, record, **options)

    monkeypatch.setattr(reg, "publish", lose_a_blob_then_publish)
    version = reg.push(original, "m")
    assert reg.pull(f"m:{version.id}", tmp_path / "o.safetensors").read_bytes() == original.read_bytes()


def test_a_corrupted_blob_is_refused_on_pull(reg, tmp_path):
    version = reg.push(fine_tune(tmp_path / "m.safetensors", 1), "m")
    digest = reg.manifest("m", version.id)["segments"][-1]["digest"]
    path = f"{reg.root}/blobs/{blob_name(digest)}"
    data = reg.fs.cat_file(path)
    reg.fs.pipe_file(path, bytes([data[0] ^ 0xFF]) + data[1:])
    out = tmp_path / "out.safetensors"
    with pytest.raises(IntegrityError, match=digest):
        reg.pull("m", out)
    assert not out.exists()


def test_gc_gives_way_to_a_push_in_flight(reg, tmp_path):
    reg.push(fine_tune(tmp_path / "m.safetensors", 1), "m")
    with reg.locks.pushing("other"):
        with pytest.raises(StorageError, match="push is in flight"):
            reg.gc(grace_seconds=0)
    assert reg.locks.held() == []
    _hand_written_lock(reg, "push", time=time.time() - 7 * 3600)  # a publisher that died 7 h ago
    _hand_written_lock(reg, "push", pid=_dead_pid())  # one that died on this host
    reg.gc(grace_seconds=0)
    assert reg.locks.held() == []


def test_a_push_waits_while_gc_holds_its_lock(reg, tmp_path):
    lock = _hand_written_lock(reg, "gc", until=time.time() + 300)
    threading.Timer(0.6, reg.items.delete, (lock,)).start()
    started = time.monotonic()
    reg.push(fine_tune(tmp_path / "m.safetensors", 1), "m")
    assert time.monotonic() - started >= 0.5
    _hand_written_lock(reg, "gc", until=time.time() - 120)  # past its budget and the clock margin: stale
    started = time.monotonic()
    reg.push(fine_tune(tmp_path / "n.safetensors", 2), "n")
    assert time.monotonic() - started < 0.5


def test_gc_refuses_when_a_manifest_is_unreadable(reg, tmp_path):
    version = reg.push(fine_tune(tmp_path / "m.safetensors", 1), "m")
    reg.blobs.delete(version.id)
    with pytest.raises(StorageError, match="remove that version"):
        reg.gc(grace_seconds=0)
    assert len(reg.blobs.list()) == 11  # nothing deleted


def _hand_written_lock(reg, kind, **fields):
    doc = {"kind": kind, "time": time.time(), "host": host_identity(), "pid": os.getpid(), **fields}
    item = f"locks/{kind}-{uuid.uuid4().hex}.json"
    with reg.items.writing(item) as handle:
        handle.write(json.dumps(doc).encode())
    return item


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_copy_from_a_folder_registry_and_back(reg, tmp_path):
    folder = registry.EmbeddedRegistry(tmp_path / "folder", durable=False)
    folder.push(fine_tune(tmp_path / "a.safetensors", 1), "m", alias="production", card="# M\n",
                signature=b"bundle")
    folder.push(fine_tune(tmp_path / "b.safetensors", 2), "m")
    report = registry.copy(folder, reg, "m")
    assert [v.id for v in reg.list()] == [v.id for v in folder.list()] and report.blobs_skipped > 0
    assert reg.show("m@production").id == folder.show("m@production").id and reg.card("m@production") == "# M\n"
    assert reg.attachment("m", reg.show("m@production").id, "signature") == b"bundle"
    back = registry.copy(reg, registry.EmbeddedRegistry(tmp_path / "back", durable=False), "m")
    assert back.blobs_sent == report.blobs_sent


# ---------------------------------------------------------------- configuration


def test_a_missing_s3fs_says_what_to_install(monkeypatch):
    known = importlib.import_module("fsspec.registry")._registry  # the classes fsspec imported already

    monkeypatch.delitem(known, "s3", raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(ConfigError, match=r"pip install modelkeep\[s3\]"):
        ObjectStoreRegistry("s3://bucket/models")
    with pytest.raises(ConfigError, match="bucket or path"):
        ObjectStoreRegistry("memory://")


def test_open_registry_dispatches_urls(reg):
    opened = registry.open_registry(reg.location)
    assert isinstance(opened, ObjectStoreRegistry) and opened.root == reg.root


# ---------------------------------------------------------------- a real S3 server (Ceph radosgw)


@pytest.fixture()
def s3_location(s3_server):  # noqa: F811
    pytest.importorskip("s3fs", reason="needs the s3fs package (pip install modelkeep[s3])")
    bucket = f"mk-{uuid.uuid4().hex[:12]}"
    s3_server.filesystem().mkdir(bucket)
    return f"s3://{bucket}/registry", s3_server.storage_options()


def test_s3_round_trip_and_a_damaged_blob(s3_server, s3_location, tmp_path):  # noqa: F811
    location, options = s3_location
    reg = ObjectStoreRegistry(location, storage_options=options)
    other = ObjectStoreRegistry(location, filesystem=s3_server.filesystem())  # s3fs as made, listing cache on
    assert other.list() == []
    first = fine_tune(tmp_path / "a.safetensors", 1, metrics={"accuracy": 0.8})
    v1 = reg.push(first, "m", alias="production", card="# M\n")
    v2 = reg.push(fine_tune(tmp_path / "b.safetensors", 2, metrics={"accuracy": 0.9}), "m")
    assert [v.id for v in other.list()] == [v1.id, v2.id] and other.show("m").id == v2.id
    assert [v.id for v in reg.list("accuracy>0.85")] == [v2.id]
    assert other.pull("m@production", tmp_path / "o.safetensors").read_bytes() == first.read_bytes()
    assert reg.card(f"m:{v1.id[:6]}") == "# M\n"
    reg.remove(f"m:{v2.id}")
    assert len(other.gc(grace_seconds=0)) == 4 and [v.id for v in reg.list()] == [v1.id]
    digest = reg.manifest("m", v1.id)["segments"][0]["digest"]
    fs = ObjectStoreRegistry(location, storage_options=options).fs  # as if by hand, with s3fs
    path = f"{reg.root}/blobs/{blob_name(digest)}"
    data = fs.cat_file(path)
    fs.pipe_file(path, bytes([data[0] ^ 0xFF]) + data[1:])
    with pytest.raises(IntegrityError, match=digest):
        reg.pull("m", tmp_path / "damaged.safetensors")
    assert not (tmp_path / "damaged.safetensors").exists()


def test_s3_configured_from_the_environment(s3_server, s3_location, tmp_path, monkeypatch):  # noqa: F811
    location, _ = s3_location
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION", "FSSPEC_S3"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("FSSPEC_S3_KEY", s3_server.key)
    monkeypatch.setenv("FSSPEC_S3_SECRET", s3_server.secret)
    original = fine_tune(tmp_path / "m.safetensors", 1)
    version = registry.push(original, "m", alias="production", registry=location)
    assert registry.show("m@production", registry=location).id == version.id
    assert registry.pull("m", tmp_path / "o.safetensors", registry=location).read_bytes() == original.read_bytes()


def test_s3_an_interrupted_push_resumes_without_resending(s3_location, tmp_path, monkeypatch):
    location, options = s3_location
    reg = ObjectStoreRegistry(location, storage_options=options)
    original = fine_tune(tmp_path / "m.safetensors", 1)
    real_put, puts = reg.blobs.put, []

    def put_five_then_fail(data, **kwargs):
        if len(puts) >= 5:
            raise ConnectionError("network gone")
        puts.append(real_put(data, **kwargs))
        return puts[-1]

    monkeypatch.setattr(reg.blobs, "put", put_five_then_fail)
    with pytest.raises(ConnectionError):
        reg.push(original, "m")
    monkeypatch.undo()
    assert ObjectStoreRegistry(location, storage_options=options).list() == []
    written = _count_blob_writes(reg, monkeypatch)
    reg.push(original, "m")
    arrived = set(puts)  # five, or a few more: the push sends blobs eight at a time
    assert len(arrived) >= 5 and len(written) == 12 - len(arrived)
    assert not {name.replace("/", "") for name in written} & arrived
    assert reg.pull("m", tmp_path / "o.safetensors").read_bytes() == original.read_bytes()


def _push_many(location, options, paths, name):
    reg = ObjectStoreRegistry(location, storage_options=options)
    return [reg.push(path, name).id for path in paths]


def _collect_repeatedly(location, options, seconds):
    reg = ObjectStoreRegistry(location, storage_options=options, gc_wait_seconds=0.5)
    done = refused = removed = 0
    deadline = time.monotonic() + seconds
    # for `seconds`, and on until one collection has run (on a busy machine every try may meet a push in flight)
    while time.monotonic() < deadline or (done == 0 and time.monotonic() < deadline + 60):
        try:
            removed += len(reg.gc(grace_seconds=0))
            done += 1
        except StorageError:
            refused += 1
    return done, refused, removed


def _pull_all(reg, tmp_path, expected):
    """Pull every version (eight at a time) and compare it with the file pushed."""
    def pull(ref):
        return reg.pull(ref, tmp_path / f"pulled-{ref.replace(':', '-')}.safetensors").read_bytes()

    refs = {f"{name}:{version_id}": path for (name, version_id), path in expected.items()}
    with ThreadPoolExecutor(8) as pool:
        for (ref, path), data in zip(refs.items(), pool.map(pull, refs)):
            assert data == path.read_bytes(), ref


def test_s3_four_processes_pushing_at_once_lose_nothing(s3_location, tmp_path):
    location, options = s3_location
    jobs = [[fine_tune(tmp_path / f"p{p}-{i}.safetensors", 100 * p + i) for i in range(5)] for p in range(4)]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap(_push_many, [(location, options, paths, f"m{p}") for p, paths in enumerate(jobs)])
    reg = ObjectStoreRegistry(location, storage_options=options)
    assert len(reg.list()) == 20
    _pull_all(reg, tmp_path, {(f"m{p}", vid): jobs[p][i] for p, ids in enumerate(results) for i, vid in enumerate(ids)})


def test_s3_gc_while_pushing_loses_nothing(s3_location, tmp_path):
    location, options = s3_location
    paths = [fine_tune(tmp_path / f"g{i}.safetensors", i) for i in range(8)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        collecting = pool.apply_async(_collect_repeatedly, (location, options, 4.0))
        pushing = pool.starmap_async(_push_many, [(location, options, paths[:4], "a"),
                                                  (location, options, paths[4:], "b")])
        results = pushing.get(timeout=120)
        done, refused, removed = collecting.get(timeout=120)
    print(f"\ngc while pushing: {done} collections ({removed} blobs deleted), {refused} refused (a push in flight)")
    assert done > 0
    reg = ObjectStoreRegistry(location, storage_options=options)
    assert len(reg.list()) == 8 and reg.locks.held() == []
    _pull_all(reg, tmp_path, {**{("a", v): p for v, p in zip(results[0], paths[:4])},
                              **{("b", v): p for v, p in zip(results[1], paths[4:])}})


def _move_back_and_forth(location, options, ids, times):
    reg = ObjectStoreRegistry(location, storage_options=options)
    for i in range(times):
        reg.set_alias("m", ids[i % 2], "production")


def test_s3_a_moving_alias_is_never_absent(s3_location, tmp_path):
    """Readers resolving an alias while another client moves it back and forth see one version or the other,
    never no alias (the alias document is replaced in place, not removed and rewritten)."""
    location, options = s3_location
    reg = ObjectStoreRegistry(location, storage_options=options)
    ids = [reg.push(fine_tune(tmp_path / f"{i}.safetensors", i), "m", alias="production").id for i in range(2)]
    mover = multiprocessing.get_context("fork").Process(target=_move_back_and_forth, args=(location, options, ids, 150))
    mover.start()
    seen = set()
    try:
        while mover.is_alive():
            seen.add(reg.resolve("m@production")[1])  # raises ModelNotFoundError if the alias were absent
    finally:
        mover.join(timeout=60)
    assert mover.exitcode == 0 and seen <= set(ids) and seen
