"""The committers of modelkeep.io: all or nothing, leftovers cleaned, on a local folder and on fsspec stores."""
from __future__ import annotations

import contextlib
import io
import json
import os
import uuid

import pytest

from modelkeep.errors import ConfigError, ModelNotFoundError
from modelkeep.io.atomic import TEMP_MARKER, atomic_write_bytes, atomic_write_text
from modelkeep.io.committer import MARKER_SUFFIX, Committer, MarkerCommitter, RenameCommitter


@pytest.fixture()
def memory_url():
    import fsspec

    url = f"memory://committer-{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    with contextlib.suppress(FileNotFoundError):
        fs.rm(url[len("memory://"):], recursive=True)


@pytest.fixture(params=["rename", "marker-memory", "marker-local"])
def committer(request, tmp_path, memory_url):
    if request.param == "rename":
        return RenameCommitter(tmp_path / "store")
    if request.param == "marker-memory":
        return MarkerCommitter(memory_url)
    import fsspec

    return MarkerCommitter(str(tmp_path / "store"), filesystem=fsspec.filesystem("file"))


def read(committer, name):
    with committer.open(name) as handle:
        return handle.read()


def test_a_committed_item_is_listed_readable_and_replaceable(committer):
    with committer.writing("a/item.bin") as handle:
        handle.write(b"first")
        assert not committer.is_committed("a/item.bin")  # nothing visible before the commit
    assert committer.is_committed("a/item.bin") and read(committer, "a/item.bin") == b"first"
    with committer.writing("a/item.bin") as handle:
        handle.write(b"second, longer")
    assert read(committer, "a/item.bin") == b"second, longer"
    assert committer.names() == [] and committer.names("a") == ["a/item.bin"]
    assert committer.names(recursive=True) == ["a/item.bin"]


def test_a_failed_write_commits_nothing(committer):
    with pytest.raises(RuntimeError, match="boom"):
        with committer.writing("item.bin") as handle:
            handle.write(b"partial")
            raise RuntimeError("boom")
    assert not committer.is_committed("item.bin") and committer.names() == []
    with pytest.raises(ModelNotFoundError):
        committer.open("item.bin")


def test_the_writing_handle_is_seekable(committer):
    # write_tensors patches its header in place once the data is written
    with committer.writing("item.bin") as handle:
        handle.write(b"0000data")
        handle.seek(0)
        handle.write(b"HEAD")
    assert read(committer, "item.bin") == b"HEADdata"


def test_delete_move_and_delete_folder(committer):
    for name in ("one", "two", "old/stale"):
        with committer.writing(name) as handle:
            handle.write(name.encode())
    committer.delete_folder("old")
    committer.move("one", "old/one")
    committer.delete("two")
    committer.delete("two")  # a missing item is not an error
    assert committer.names(recursive=True) == ["old/one"] and read(committer, "old/one") == b"one"
    with committer.local_copy("old/one") as path:
        assert path.read_bytes() == b"one"


def test_item_names_cannot_escape_the_location(committer):
    for bad in ("../x", "/abs", "a//b", "a/./b", "", "a\\b"):
        with pytest.raises(ConfigError, match="relative path"):
            with committer.writing(bad):
                pass


def test_rename_committer_cleans_dead_writers_only(tmp_path):
    committer = RenameCommitter(tmp_path)
    (tmp_path / "ab").mkdir()
    dead = tmp_path / "ab" / f".item{TEMP_MARKER}999999999-dead"
    alive = tmp_path / f".item{TEMP_MARKER}{os.getpid()}-live"
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    assert committer.clean() == [f"ab/{dead.name}"]
    assert alive.exists() and not dead.exists()
    assert committer.names(recursive=True) == []  # temporaries are never listed


def test_marker_committer_treats_an_item_without_its_marker_as_absent(memory_url):
    committer = MarkerCommitter(memory_url)
    with committer.writing("kept") as handle:
        handle.write(b"whole")
    # a writer that died after uploading its payload but before its marker
    committer.fs.pipe_file(committer.path("crashed"), b"half")
    # a marker whose size does not match the payload (a payload replaced behind its back)
    with committer.writing("changed") as handle:
        handle.write(b"12345")
    committer.fs.pipe_file(committer.path("changed"), b"123")
    assert committer.names() == ["changed", "kept"]  # listing trusts the marker's presence ...
    assert not committer.is_committed("changed")      # ... validating also checks its size
    assert not committer.is_committed("crashed")
    with pytest.raises(ModelNotFoundError):
        committer.open("crashed")
    assert committer.clean() == ["crashed"]
    assert not committer.fs.exists(committer.path("crashed"))


def test_marker_is_written_last_and_removed_first(memory_url, monkeypatch):
    committer = MarkerCommitter(memory_url)
    fs, events = committer.fs, []
    real_open, real_pipe, real_rm = fs.open, fs.pipe_file, fs.rm_file

    def opening(path, mode="rb", **options):
        if "w" in mode:
            events.append(("write", path.rsplit("/", 1)[-1]))
        return real_open(path, mode, **options)

    monkeypatch.setattr(fs, "open", opening)
    monkeypatch.setattr(fs, "pipe_file", lambda path, data, **options: (
        events.append(("marker", path.rsplit("/", 1)[-1])), real_pipe(path, data, **options))[1])
    monkeypatch.setattr(fs, "rm_file", lambda path, **options: (
        events.append(("rm", path.rsplit("/", 1)[-1])), real_rm(path, **options))[1])
    with committer.writing("item") as handle:
        handle.write(b"x")
    committer.delete("item")
    marker = "item" + MARKER_SUFFIX
    events = [event for event in events if event != ("write", marker)]  # pipe_file opens the marker itself
    assert events == [("rm", marker), ("write", "item"), ("marker", marker), ("rm", marker), ("rm", "item")]


def test_marker_records_the_size(memory_url):
    committer = MarkerCommitter(memory_url)
    with committer.writing("item") as handle:
        handle.write(b"abc")
    marker = json.loads(committer.fs.cat_file(committer.path("item") + MARKER_SUFFIX))
    assert marker == {"modelkeep_commit": 1, "size": 3}


def test_clean_with_older_than_spares_recent_writes(memory_url):
    committer = MarkerCommitter(memory_url)
    committer.fs.pipe_file(committer.path("in-progress"), b"half")
    assert committer.clean(older_than=3600) == []
    assert committer.clean() == ["in-progress"]


def test_the_docstring_example_satisfies_the_protocol():
    class DictCommitter:
        def __init__(self):
            self.items = {}

        @contextlib.contextmanager
        def writing(self, name):
            buffer = io.BytesIO()
            yield buffer
            self.items[name] = buffer.getvalue()

        def is_committed(self, name):
            return name in self.items

        def clean(self):
            return []

    committer: Committer = DictCommitter()
    with committer.writing("x") as handle:
        handle.write(b"1")
    assert committer.is_committed("x") and committer.clean() == []


def test_atomic_write_bytes_and_text(tmp_path):
    target = tmp_path / "file.txt"
    assert atomic_write_text(target, "héllo\n") == target
    assert target.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(target, b"\x00\x01", durable=False)
    assert target.read_bytes() == b"\x00\x01" and os.listdir(tmp_path) == ["file.txt"]


def test_io_imports_nothing_from_modelkeep_but_errors():
    import subprocess
    import sys

    code = ("import sys, modelkeep; before = set(sys.modules); "
            "import modelkeep.io.atomic, modelkeep.io.committer, modelkeep.io.blobstore; "
            "print(','.join(sorted(m for m in set(sys.modules) - before if m.startswith('modelkeep')))); "
            "print('fsspec' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules, heavy = out.splitlines()
    assert set(modules.split(",")) <= {"modelkeep.errors", "modelkeep.io", "modelkeep.io.atomic",
                                  "modelkeep.io.blobstore", "modelkeep.io.committer", "modelkeep.io.committing"}
    assert heavy == "False False"  # fsspec only once a store on it is made; never torch
