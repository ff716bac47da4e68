"""The atomic committer: all or nothing, and crash leftovers cleaned."""
from __future__ import annotations

import os

import pytest

from modelkeep.io.atomic import TEMP_MARKER, atomic_write, clean_leftovers


def test_commit_replaces_destination(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as handle:
        handle.write(b"new")
        assert target.read_bytes() == b"old"  # nothing visible before the commit
    assert target.read_bytes() == b"new"


def test_exception_keeps_old_file_and_removes_temporary(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write(b"partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_clean_leftovers_removes_dead_writers_only(tmp_path):
    dead = tmp_path / f".model{TEMP_MARKER}999999999-abcd"
    alive = tmp_path / f".model{TEMP_MARKER}{os.getpid()}-abcd"
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    assert clean_leftovers(tmp_path) == [dead]
    assert alive.exists()
