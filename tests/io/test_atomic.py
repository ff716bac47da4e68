"""The atomic committer: all or nothing, crash leftovers cleaned, modes kept, unwritable destinations named."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from modelkeep.errors import StorageError
from modelkeep.io.atomic import TEMP_MARKER, atomic_write, atomic_write_bytes, clean_leftovers, temporary_name


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


def test_a_killed_writers_temporary_is_removed_by_the_next_write_to_the_folder(tmp_path):
    """A save killed mid-write leaves a hidden temporary; the next write there removes it, sparing live writers'."""
    script = ("import os, sys; from modelkeep.io.atomic import atomic_write\n"
              f"with atomic_write({str(tmp_path / 'model.bin')!r}) as handle:\n"
              "    handle.write(b'x' * 1_000_000); handle.flush(); os._exit(9)  # killed inside the save\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    [leftover] = [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]
    live = tmp_path / temporary_name(tmp_path / "other.bin").name  # this process's: a live writer
    live.write_bytes(b"in progress")
    elsewhere = tmp_path / f".model.bin{TEMP_MARKER}999999999-zzzzzz-abcd1234"  # a writer on another host
    elsewhere.write_bytes(b"in progress")
    atomic_write_bytes(tmp_path / "notes.txt", b"next save")
    assert not leftover.exists()
    assert live.exists() and elsewhere.exists()


def test_an_overwrite_keeps_the_mode_and_owner_of_the_replaced_file(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    target.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(target, 4321, 4321)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    if os.geteuid() == 0:
        assert (target.stat().st_uid, target.stat().st_gid) == (4321, 4321)
    fresh = atomic_write_bytes(tmp_path / "fresh.bin", b"x")  # nothing replaced: the umask decides, as for open()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask


def test_a_folder_at_the_destination_is_a_storage_error_naming_it(tmp_path):
    (tmp_path / "model.safetensors").mkdir()
    (tmp_path / "model.safetensors" / "kept").write_bytes(b"kept")
    with pytest.raises(StorageError, match=r"cannot write .*model.safetensors: it is a folder; give a file name"):
        atomic_write_bytes(tmp_path / "model.safetensors", b"new")
    assert (tmp_path / "model.safetensors" / "kept").read_bytes() == b"kept"
    assert not [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]


def test_an_unwritable_folder_is_a_storage_error_naming_the_destination(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere chmod allows: use a folder the kernel refuses even to root
        destination = Path("/sys/model.safetensors")
        if not Path("/sys").is_dir():
            pytest.skip("no /sys")
    else:
        (tmp_path / "locked").mkdir()
        destination = tmp_path / "locked" / "model.safetensors"
        destination.write_bytes(b"old")
        (tmp_path / "locked").chmod(0o500)
    try:
        with pytest.raises(StorageError) as refused:
            atomic_write_bytes(destination, b"new")
    finally:
        if os.geteuid() != 0:
            (tmp_path / "locked").chmod(0o700)
    message = str(refused.value)
    assert message.startswith(f"cannot write {destination}: the folder {destination.parent} is not writable")
    assert TEMP_MARKER not in message and refused.value.errno == errno.EACCES
    if os.geteuid() != 0:
        assert destination.read_bytes() == b"old"


def test_save_onto_a_folder_or_into_an_unwritable_one_raises_a_storage_error_and_keeps_the_old_file(tmp_path):
    """Through the API: ``modelkeep.save`` names the destination and says how to fix it; the old file stays."""
    import modelkeep
    from modelkeep.nn import build
    from modelkeep.quickstart import DIGITS_CNN

    model = build(DIGITS_CNN, seed=0)
    target = modelkeep.save(model, tmp_path / "model.safetensors")
    before = target.read_bytes()
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(StorageError, match=r"cannot write .*folder.safetensors: it is a folder"):
        modelkeep.save(model, tmp_path / "folder.safetensors")
    unwritable = Path("/sys/model.safetensors") if os.geteuid() == 0 else tmp_path / "locked" / "model.safetensors"
    if os.geteuid() != 0:
        unwritable.parent.mkdir(mode=0o500)
    with pytest.raises(StorageError, match=rf"cannot write {unwritable}: the folder .* is not writable"):
        modelkeep.save(model, unwritable)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.safetensors", "model.safetensors"] + (
        [] if os.geteuid() == 0 else ["locked"])
