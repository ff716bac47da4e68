"""Checkpoint storage backends: the manager, listing and set-aside work the same on a folder and on fsspec stores."""
from __future__ import annotations

import contextlib
import uuid

import pytest
import torch

from modelkeep.checkpoint import (CheckpointManager, CheckpointWarning, FsspecStorage, KeepLastN, LocalStorage,
                                  Position, list_checkpoints, set_aside_checkpoints)
from modelkeep.checkpoint.state import CheckpointState
from modelkeep.checkpoint.storage import checkpoint_storage
from modelkeep.io.committer import MARKER_SUFFIX


@pytest.fixture()
def memory_url():
    import fsspec

    root = f"/run-{uuid.uuid4().hex}"
    yield f"memory://{root}"
    with contextlib.suppress(FileNotFoundError):
        fsspec.filesystem("memory").rm(root, recursive=True)


def make_state(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(6, 3)
    return CheckpointState(model, torch.optim.SGD(model.parameters(), lr=0.1))


def save_steps(manager, state, steps):
    for step in steps:
        state.model(torch.randn(4, 6)).sum().backward()
        state.optimizer.step()
        state.optimizer.zero_grad()
        manager.save(state, Position(0, step, step), metrics={"val_loss": 1.0 / step})
    manager.wait()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_manager_on_a_memory_store_saves_keeps_and_restores(memory_url, asynchronous):
    state = make_state()
    manager = CheckpointManager(memory_url, keep=KeepLastN(2), asynchronous=asynchronous)
    assert isinstance(manager.storage, FsspecStorage)
    save_steps(manager, state, [1, 2, 3])
    manager.close()
    expected = {k: v.clone() for k, v in state.model.state_dict().items()}
    listed = list_checkpoints(memory_url, verify=True)
    assert [(c.step, c.verified) for c in listed] == [(2, True), (3, True)]
    assert listed[-1].path == f"{memory_url}/checkpoint-000000003.safetensors"
    fresh = make_state(seed=1)
    restored = CheckpointManager(memory_url).restore(fresh)
    assert restored.position.step == 3 and restored.metrics == {"val_loss": pytest.approx(1 / 3)}
    assert all(torch.equal(expected[k], v) for k, v in fresh.model.state_dict().items())


def test_a_checkpoint_without_its_marker_is_absent_and_cleaned(memory_url):
    manager = CheckpointManager(memory_url, asynchronous=False)
    save_steps(manager, make_state(), [1, 2])
    storage = manager.storage
    # a writer that died after uploading step 2 but before writing its marker
    storage.committer.fs.rm_file(storage.committer.path("checkpoint-000000002.safetensors") + MARKER_SUFFIX)
    assert [c.step for c in list_checkpoints(memory_url)] == [1]
    resumer = CheckpointManager(memory_url)
    assert resumer.cleaned == ["checkpoint-000000002.safetensors"]
    assert resumer.restore(make_state()).position.step == 1


def test_a_damaged_remote_checkpoint_is_named_by_its_url(memory_url):
    manager = CheckpointManager(memory_url, keep=KeepLastN(5), asynchronous=False)
    save_steps(manager, make_state(), [1, 2])
    committer = manager.storage.committer
    with committer.writing("checkpoint-000000002.safetensors") as handle:  # a committed, but truncated, file
        handle.write(committer.fs.cat_file(committer.path("checkpoint-000000002.safetensors"))[:200])
    damaged = list_checkpoints(memory_url, verify=True)[-1]
    assert damaged.verified is False and "modelkeep-read-" not in damaged.error
    with pytest.warns(CheckpointWarning, match="checkpoint-000000002"):
        assert CheckpointManager(memory_url).restore(make_state()).position.step == 1


@pytest.mark.parametrize("where", ["local", "memory"])
def test_set_aside_moves_checkpoints_into_previous_through_the_storage(tmp_path, memory_url, where):
    location = str(tmp_path / "run") if where == "local" else memory_url
    manager = CheckpointManager(location, keep=KeepLastN(5), asynchronous=False)
    save_steps(manager, make_state(), [1, 2])
    first = set_aside_checkpoints(location)
    assert str(first) == f"{location}/previous"
    save_steps(manager, make_state(), [7])
    set_aside_checkpoints(location)  # the generation before is deleted
    storage = checkpoint_storage(location)
    assert storage.names() == [] and set_aside_checkpoints(location) is None
    assert storage.committer.names("previous") == ["previous/checkpoint-000000007.safetensors"]


def test_local_storage_reads_in_place_and_lists_no_temporaries(tmp_path):
    storage = LocalStorage(tmp_path)
    manager = CheckpointManager(tmp_path, asynchronous=False, storage=storage)
    save_steps(manager, make_state(), [1])
    (tmp_path / ".checkpoint-000000009.safetensors.modelkeep-tmp-1-abcd").write_bytes(b"x")
    assert storage.names() == ["checkpoint-000000001.safetensors"]
    with storage.reading("checkpoint-000000001.safetensors") as path:
        assert path == tmp_path / "checkpoint-000000001.safetensors"  # no copy for a local folder
    assert storage.address("checkpoint-000000001.safetensors") == path


def test_checkpoint_storage_picks_the_backend():
    assert isinstance(checkpoint_storage("runs/a"), LocalStorage)
    assert isinstance(checkpoint_storage("file:///tmp/a"), LocalStorage)
    assert isinstance(checkpoint_storage("memory://a"), FsspecStorage)
    backend = LocalStorage("x")
    assert checkpoint_storage(backend) is backend
