"""The speed paths of tensor I/O: parallel verification, hash/write overlap, early write-back.

They must be invisible: the same files, the same tensors, the same errors, and no threads left behind.
"""
from __future__ import annotations

import threading

import pytest
import torch

import modelkeep.artifact.integrity as integrity
import modelkeep.artifact.tensors as tensors
from modelkeep.artifact.format import read_header
from modelkeep.artifact.integrity import verify_file
from modelkeep.artifact.tensors import TensorFile, read_tensors, write_tensors
from modelkeep.io import atomic
from modelkeep.errors import IntegrityError


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "big": torch.randn(300, 257, generator=g),
        "mid": torch.randn(64, 33, generator=g),
        "small": torch.randn(7, generator=g),
        "half": torch.randn(5, 3, generator=g).half(),
        "ints": torch.arange(11, dtype=torch.int64),
        "empty": torch.empty(0, 4),
        "strided": torch.randn(40, 30, generator=g).t(),
    }


def _our_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("modelkeep-")]


@pytest.fixture
def parallel(monkeypatch):
    """Force every speed path on, even for tiny files and on small machines."""
    monkeypatch.setattr(integrity, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(integrity, "MIN_PARALLEL_CPUS", 1)
    monkeypatch.setattr(integrity, "hash_threads", lambda jobs, nbytes: max(1, min(4, jobs)))
    monkeypatch.setattr(tensors, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(tensors, "WRITEBACK_STEP", 4096)


@pytest.fixture
def serial(monkeypatch):
    monkeypatch.setattr(integrity, "PARALLEL_MIN_BYTES", 1 << 62)
    monkeypatch.setattr(tensors, "PARALLEL_MIN_BYTES", 1 << 62)
    monkeypatch.setattr(tensors, "start_writeback", lambda *args: False)


def _corrupt(path, name: str) -> None:
    header = read_header(path)
    entry = header.tensors[name]
    offset = header.data_start + entry.begin + entry.nbytes // 2
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("durable", [True, False])
def test_fast_write_is_byte_identical_to_serial_write(tmp_path, monkeypatch, durable):
    sd = _state()
    with monkeypatch.context() as m:
        m.setattr(tensors, "PARALLEL_MIN_BYTES", 1 << 62)
        m.setattr(tensors, "start_writeback", lambda *args: False)
        write_tensors(tmp_path / "serial.safetensors", sd, {"k": "v"}, durable=durable)
    calls = []
    real = atomic.start_writeback
    monkeypatch.setattr(tensors, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(tensors, "WRITEBACK_STEP", 4096)
    monkeypatch.setattr(tensors, "start_writeback", lambda *a: calls.append(a) or real(*a))
    write_tensors(tmp_path / "fast.safetensors", sd, {"k": "v"}, durable=durable)
    assert (tmp_path / "fast.safetensors").read_bytes() == (tmp_path / "serial.safetensors").read_bytes()
    assert bool(calls) == durable  # early write-back only for durable writes
    assert _our_threads() == []


def test_write_without_sync_file_range_falls_back_silently(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_sync_file_range", False)
    assert atomic.start_writeback(0, 0, 4096) is False
    monkeypatch.setattr(tensors, "WRITEBACK_STEP", 4096)
    sd = _state()
    write_tensors(tmp_path / "m.safetensors", sd)
    got = read_tensors(tmp_path / "m.safetensors")
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_start_writeback_on_a_real_file(tmp_path):
    with open(tmp_path / "f", "wb") as handle:
        handle.write(b"x" * 10000)
        handle.flush()
        assert isinstance(atomic.start_writeback(handle.fileno(), 0, 10000), bool)
        assert atomic.start_writeback(handle.fileno(), 0, 0) is False


def test_parallel_verify_loads_the_same_tensors(tmp_path, parallel):
    sd = _state()
    path = write_tensors(tmp_path / "m.safetensors", sd)
    got = read_tensors(path)
    assert set(got) == set(sd)
    for name, tensor in sd.items():
        assert torch.equal(got[name], tensor), name
    with TensorFile(path) as handle:
        part = handle.tensors(["mid", "big"])
        assert handle._verified == {"mid", "big"}
        assert torch.equal(part["big"], sd["big"])
    report = verify_file(read_header(path))
    assert report.tensors == len(sd)
    assert report.tensor_bytes == sum(t.numel() * t.element_size() for t in sd.values())
    assert _our_threads() == []


@pytest.mark.parametrize("mode", ["parallel", "serial"])
def test_mismatch_names_the_tensor_in_every_mode(tmp_path, request, mode):
    request.getfixturevalue(mode)
    path = write_tensors(tmp_path / "m.safetensors", _state())
    _corrupt(path, "mid")
    message = "tensor 'mid' does not match its recorded hash; the file is corrupt"
    with pytest.raises(IntegrityError, match=message):
        read_tensors(path)
    with pytest.raises(IntegrityError, match=message):
        verify_file(read_header(path))
    with TensorFile(path) as handle:
        with pytest.raises(IntegrityError, match=message):
            handle.tensors()
        assert "mid" not in handle._verified
        assert torch.equal(handle.tensor("small"), _state()["small"])  # lazy access to good tensors still works
    assert read_tensors(path, verify=False)["mid"].shape == (64, 33)
    assert _our_threads() == []


def test_parallel_mismatch_reports_first_corrupt_tensor_in_file_order(tmp_path, parallel):
    path = write_tensors(tmp_path / "m.safetensors", _state())
    header = read_header(path)
    order = [name for name in header.tensors if name in ("big", "mid")]
    for name in order:
        _corrupt(path, name)
    with pytest.raises(IntegrityError, match=f"tensor {order[0]!r}"):
        read_tensors(path)
    with pytest.raises(IntegrityError, match=f"tensor {order[0]!r}"):
        verify_file(read_header(path))


def test_hash_threads_policy(monkeypatch):
    assert integrity.hash_threads(100, 0) == 1  # small files: no pool
    assert integrity.hash_threads(1, 1 << 40) == 1  # one tensor: no pool
    monkeypatch.setattr(integrity.os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert integrity.hash_threads(100, 1 << 40) == 1  # 2 CPUs: measured slower with a pool
    monkeypatch.setattr(integrity.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert integrity.hash_threads(100, 1 << 40) == integrity.MAX_HASH_THREADS
    assert integrity.hash_threads(3, 1 << 40) == 3
