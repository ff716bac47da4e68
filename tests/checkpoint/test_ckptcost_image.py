"""The asynchronous checkpoint written from a file image: snapshot buffers laid out as the file, written in one pass.

What must hold: the file is the one ``write_tensors`` makes (same tensors, same integrity record and
content hash; only the header has more trailing spaces, so the data starts on a 4 KiB boundary), it is
read back with every hash checked, a header that outgrows its room falls back to the ordinary writer
and the next snapshot makes room, and ``atomic_write_image`` keeps every promise of ``atomic_write``
(all or nothing, the previous file intact on failure) whether or not the file system takes O_DIRECT.
"""
from __future__ import annotations

import errno
import os

import pytest
import safetensors.torch
import torch

import modelkeep.io.atomic as atomic
from modelkeep.artifact.format import read_header
from modelkeep.artifact.integrity import content_hash
from modelkeep.artifact.tensors import read_tensors, write_tensors
from modelkeep.checkpoint import CheckpointManager, CheckpointState, KeepLastN, Position
from modelkeep.checkpoint._image import ALIGN
from modelkeep.checkpoint.reading import read_checkpoint
from modelkeep.errors import CheckpointError


@pytest.fixture
def direct_writes(monkeypatch):
    """Record whether each ``atomic_write_image`` went past the page cache (the real function still runs)."""
    outcomes: list[bool] = []
    real = atomic._write_direct

    def recording(*args):
        outcomes.append(real(*args))
        return outcomes[-1]

    monkeypatch.setattr(atomic, "_write_direct", recording)
    return outcomes


def make_state(width=24):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, width), torch.nn.BatchNorm1d(width), torch.nn.ReLU(),
                                torch.nn.Linear(width, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_step(CheckpointState(model, optimizer))
    return CheckpointState(model, optimizer)


def train_step(state):
    state.optimizer.zero_grad(set_to_none=True)
    state.model(torch.randn(16, 7)).pow(2).mean().backward()
    state.optimizer.step()


def snapshot_of(state):
    return ({k: v.clone() for k, v in state.model.state_dict().items()},
            {k: v.clone() for k, v in state.optimizer.state[next(iter(state.model.parameters()))].items()})


def test_async_checkpoint_is_the_file_write_tensors_makes_with_aligned_data(tmp_path, direct_writes):
    state = make_state()
    weights, moments = snapshot_of(state)
    with CheckpointManager(tmp_path / "ckpt", keep=KeepLastN(2)) as manager:
        manager.save(state, Position(0, 1, 1))
        train_step(state)  # races the background copy: the checkpoint must still hold the state at save()
    path = manager.list()[-1].path
    header = read_header(path)
    assert header.data_start % ALIGN == 0
    _, tensors, _ = read_checkpoint(path)  # every hash checked
    for name, value in weights.items():
        assert torch.equal(tensors[f"model/{name}"], value), name
    assert any(torch.equal(t, moments["exp_avg"]) for n, t in tensors.items() if n.endswith("exp_avg"))
    # The same tensors and metadata through the ordinary writer give the same integrity record.
    plain = write_tensors(tmp_path / "plain.safetensors", read_tensors(path),
                          {k: v for k, v in header.metadata.items() if k != "modelkeep.integrity"})
    assert content_hash(read_header(plain)) == content_hash(header)
    assert read_header(plain).metadata["modelkeep.integrity"] == header.metadata["modelkeep.integrity"]
    assert safetensors.torch.load_file(str(path)).keys() == tensors.keys()  # plain safetensors still reads it
    assert len(direct_writes) == 1, "the asynchronous save did not write its file image"


def test_header_that_outgrows_its_room_falls_back_then_room_grows(tmp_path, direct_writes):
    state = make_state()
    big_history = {"loss": [float(i) for i in range(12000)]}  # about 100 KB of JSON: more than the room
    with CheckpointManager(tmp_path, keep=KeepLastN(3)) as manager:
        room = manager._buffers.header_room
        manager.save(state, Position(0, 1, 1), history=big_history)
        manager.wait()
        assert direct_writes == []  # the ordinary writer took it
        manager.save(state, Position(0, 2, 2), history=big_history)
        manager.wait()
        assert manager._buffers.header_room == 2 * room
        assert len(direct_writes) == 1
    for info in manager.list():
        _, _, document = read_checkpoint(info.path)
        assert len(document["history"]["loss"]) == 12000
    assert read_header(manager.list()[-1].path).data_start % ALIGN == 0


def test_a_model_that_changes_shape_gets_a_new_image(tmp_path):
    with CheckpointManager(tmp_path, keep=KeepLastN(3)) as manager:
        for step, width in enumerate([24, 40, 40], start=1):
            state = make_state(width)
            manager.save(state, Position(0, step, step))
            manager.wait()
            _, tensors, _ = read_checkpoint(manager.list()[-1].path)
            assert torch.equal(tensors["model/0.weight"], state.model[0].weight.detach())


def test_a_tensor_the_format_cannot_hold_is_still_reported(tmp_path):
    model = torch.nn.Linear(3, 2)
    model.register_buffer("phase", torch.ones(2, dtype=torch.complex64))
    manager = CheckpointManager(tmp_path, keep=KeepLastN(1))
    manager.save(CheckpointState(model, torch.optim.SGD(model.parameters(), lr=0.1)), Position(0, 1, 1))
    with pytest.raises(CheckpointError, match="complex64"):
        manager.close()
    assert manager.list() == []


@pytest.mark.parametrize("length", [1, ALIGN - 1, ALIGN, 3 * ALIGN + 17])
def test_atomic_write_image_writes_exactly_the_bytes(tmp_path, length):
    block = torch.empty(8 * ALIGN, dtype=torch.uint8)
    shift = -block.data_ptr() % ALIGN
    aligned = block[shift:shift + 4 * ALIGN].numpy()
    aligned[:] = torch.randint(0, 256, (4 * ALIGN,), dtype=torch.uint8).numpy()
    target = tmp_path / "image.bin"
    target.write_bytes(b"old" * 10000)
    atomic.atomic_write_image(target, memoryview(aligned), length)
    assert target.read_bytes() == aligned[:length].tobytes()
    # An unaligned buffer (or one too short to pad) takes the ordinary write, with the same result.
    unaligned = block[shift + 1:shift + 1 + length].numpy()
    unaligned[:] = 7
    atomic.atomic_write_image(target, memoryview(unaligned), length)
    assert target.read_bytes() == b"\x07" * length
    assert [p.name for p in tmp_path.iterdir()] == ["image.bin"]


def test_a_failed_image_write_leaves_the_previous_file(tmp_path, monkeypatch):
    block = torch.zeros(4 * ALIGN, dtype=torch.uint8)
    shift = -block.data_ptr() % ALIGN
    image = memoryview(block[shift:shift + 2 * ALIGN].numpy())
    target = tmp_path / "image.bin"
    target.write_bytes(b"previous")
    try:
        os.close(os.open(target, os.O_RDONLY | getattr(os, "O_DIRECT", 0)))
    except OSError:
        pytest.skip("this file system refuses O_DIRECT")

    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "pwrite", full_disk)
    with pytest.raises(OSError):
        atomic.atomic_write_image(target, image, 2 * ALIGN)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["image.bin"]


def test_odd_tensors_round_trip_through_the_image(tmp_path):
    from modelkeep.checkpoint.snapshot import SnapshotBuffers
    from modelkeep.checkpoint.storage import LocalStorage

    tensors = {"empty": torch.zeros(0, 3), "scalar": torch.tensor(5), "flags": torch.tensor([True, False, True]),
               "short": torch.arange(5, dtype=torch.int16), "transposed": torch.randn(4, 6).t(),
               "half": torch.randn(3, dtype=torch.float16)}
    copies = SnapshotBuffers().copy(tensors)
    assert copies.file_image is not None
    storage = LocalStorage(tmp_path)
    size = storage.write("checkpoint-000000001.safetensors", copies, {"note": "odd"})
    path = tmp_path / "checkpoint-000000001.safetensors"
    assert size == path.stat().st_size == read_header(path).file_size
    back = read_tensors(path)
    assert back.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
