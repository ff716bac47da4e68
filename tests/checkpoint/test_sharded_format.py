"""Sharded checkpoints in one process: the commit protocol, the JSON manifest and every refusal of a bad folder.

The multi-process (FSDP2, gloo) side is in ``test_sharded_distributed.py``.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from modelkeep.checkpoint import sharded as sharded_module
from modelkeep.checkpoint.sharded import (latest_sharded, list_sharded, load_sharded, open_sharded, read_sharded,
                                          save_sharded, verify_sharded)
from modelkeep.checkpoint.sharded_storage import RawShardWriter
from modelkeep.errors import CheckpointError, FormatError, IntegrityError
from sharded_worker import folder_pickles


def _trained(seed: int = 0, lr: float = 0.01):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.8, 0.95))
    model(torch.randn(4, 5)).pow(2).mean().backward()
    optimizer.step()
    return model, optimizer


def _state(model, optimizer):
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def _save(folder: Path, step: int, **kwargs) -> Path:
    model, optimizer = _trained(step)
    return save_sharded(folder, step, _state(model, optimizer), {"position": {"step": step}, "note": (1, 2)},
                        **kwargs)


@pytest.fixture()
def no_unpickling(monkeypatch):
    """Any unpickling in this process fails the test: proof that a path reads no pickle."""
    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    class RefusingUnpickler(pickle.Unpickler):  # still a class: modules imported later may subclass it
        def __init__(self, *args, **kwargs):
            refuse()

    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse)


def test_round_trip_restores_tensors_values_and_document(tmp_path, no_unpickling):
    model, optimizer = _trained(0)
    saved = _state(model, optimizer)
    path = save_sharded(tmp_path, 5, saved, {"position": {"step": 5}, "note": (1, float("inf"))})
    assert path == tmp_path / "step-000000005" and sorted(p.name for p in path.iterdir()) == [
        "__0_0.distcp", "manifest.json"]
    fresh_model, fresh_optimizer = _trained(1, lr=0.5)
    target = _state(fresh_model, fresh_optimizer)
    document = load_sharded(tmp_path, target)
    assert document == {"position": {"step": 5}, "note": (1, float("inf"))}
    for name, tensor in saved["model"].items():
        assert torch.equal(target["model"][name], tensor)
    for name, moments in saved["optim"]["state"].items():
        assert all(torch.equal(target["optim"]["state"][name][k], v) for k, v in moments.items())
    group = target["optim"]["param_groups"][0]
    assert group["lr"] == 0.01 and group["betas"] == (0.8, 0.95)
    assert folder_pickles(path) == {}


def test_manifest_is_versioned_json_with_hashes(tmp_path):
    path = _save(tmp_path, 3)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "modelkeep.sharded-checkpoint" and manifest["format_version"] == 1
    chunk = manifest["tensors"]["model.0.weight"]["chunks"][0]
    assert chunk["sizes"] == [7, 5] and chunk["xxh3"].startswith("xxh3-128:")
    assert manifest["values"]["optim.param_groups.0.betas"] == {"__tuple__": [0.8, 0.95]}
    assert manifest["files"]["__0_0.distcp"]["size"] == (path / "__0_0.distcp").stat().st_size
    assert manifest["paths"]["model.0.weight"] == ["model", "0.weight"]


def test_manifest_validates_against_its_json_schema(tmp_path):
    import jsonschema

    import modelkeep.checkpoint

    schema = json.loads((Path(modelkeep.checkpoint.__file__).parent / "sharded_manifest.schema.json").read_text())
    path = _save(tmp_path, 3)
    jsonschema.validate(json.loads((path / "manifest.json").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**json.loads((path / "manifest.json").read_text()), "format_version": 2}, schema)


def test_read_sharded_assembles_full_tensors_without_a_process_group(tmp_path):
    model, optimizer = _trained(0)
    save_sharded(tmp_path, 1, _state(model, optimizer), {})
    manifest, tensors = read_sharded(tmp_path)
    assert manifest.step == 1 and torch.equal(tensors["model.2.bias"], model[2].bias.detach())


def test_non_tensor_objects_are_refused_not_pickled(tmp_path):
    with pytest.raises(CheckpointError, match="never pickles|cannot store"):
        save_sharded(tmp_path, 1, {"model": {"w": torch.ones(2)}, "thing": object()}, {})
    with pytest.raises(CheckpointError, match="put tensors in the state dict"):
        save_sharded(tmp_path, 1, {"w": torch.ones(2)}, {"rng": torch.get_rng_state()})
    writer = RawShardWriter(tmp_path, lambda metadata: b"")
    from torch.distributed.checkpoint.default_planner import create_default_local_save_plan

    plan = create_default_local_save_plan({"blob": b"bytes"}, True)  # what DCP would torch.save
    with pytest.raises(CheckpointError, match="never pickles"):
        writer.prepare_local_plan(plan)


def test_crash_before_the_manifest_leaves_the_previous_checkpoint_newest(tmp_path, monkeypatch):
    first = _save(tmp_path, 1)

    def crash(self, metadata, results):
        raise KeyboardInterrupt("killed before the manifest")

    monkeypatch.setattr(RawShardWriter, "finish", crash)
    with pytest.raises(BaseException, match="killed before the manifest"):
        _save(tmp_path, 2)
    monkeypatch.undo()
    assert (tmp_path / "step-000000002.tmp" / "__0_0.distcp").is_file()
    assert latest_sharded(tmp_path) == first and list_sharded(tmp_path) == [first]
    _save(tmp_path, 3)  # the next save removes what the crashed one left
    assert not (tmp_path / "step-000000002.tmp").exists()


def test_crash_after_the_manifest_before_the_rename_is_not_committed(tmp_path, monkeypatch):
    first = _save(tmp_path, 1)
    monkeypatch.setattr(sharded_module.RenameCommitter, "move", lambda *a: (_ for _ in ()).throw(OSError("power")))
    with pytest.raises(CheckpointError, match="cannot commit"):
        _save(tmp_path, 2)
    assert (tmp_path / "step-000000002.tmp" / "manifest.json").is_file()
    assert latest_sharded(tmp_path) == first


def test_retention_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep=2)
    assert [p.name for p in list_sharded(tmp_path)] == ["step-000000003", "step-000000004"]


def test_a_dcp_pickle_metadata_folder_is_refused_unread(tmp_path, no_unpickling):
    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "step-000000009"
    with pytest.warns(UserWarning):
        dcp.save({"w": torch.ones(3)}, checkpoint_id=folder, no_dist=True)  # DCP's own writer: pickles
    assert ".metadata" in folder_pickles(folder)  # the detector finds what the check looks for
    with pytest.raises(CheckpointError, match="no manifest.json"):
        load_sharded(folder, {"w": torch.zeros(3)})
    path = _save(tmp_path, 1)
    (path / ".metadata").write_bytes((folder / ".metadata").read_bytes())
    with pytest.raises(FormatError, match="pickle"):
        load_sharded(path, _state(*_trained(1)))


def test_a_tampered_shard_is_refused(tmp_path, no_unpickling):
    path = _save(tmp_path, 1)
    shard = path / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match its hash"):
        load_sharded(path, _state(*_trained(1)))
    with pytest.raises(IntegrityError):
        verify_sharded(path)
    with pytest.warns(UserWarning, match="damaged"):
        assert latest_sharded(tmp_path, verify=True) is None


def test_a_truncated_shard_or_unknown_file_is_refused(tmp_path):
    path = _save(tmp_path, 1)
    (path / "notes.txt").write_text("hi")
    with pytest.raises(FormatError, match="unknown file"):
        open_sharded(path)
    (path / "notes.txt").unlink()
    (path / "__7_0.distcp").write_bytes(b"")
    with pytest.raises(FormatError, match="does not list"):
        open_sharded(path)
    (path / "__7_0.distcp").unlink()
    shard = path / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-4])
    with pytest.raises(IntegrityError, match="manifest records"):
        open_sharded(path)


def _rewrite(path: Path, change) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _first_chunk(manifest):
    return manifest["tensors"]["model.0.weight"]["chunks"][0]


@pytest.mark.parametrize("lie, message", [
    (lambda m: _first_chunk(m).update(length=_first_chunk(m)["length"] + 4), "claims"),
    (lambda m: _first_chunk(m).update(start=10**12), "claims"),
    (lambda m: _first_chunk(m).update(sizes=[700, 5]), "outside its tensor"),
    (lambda m: m["tensors"]["model.0.weight"].update(size=[8, 5]), "hold 35 elements"),
    (lambda m: m["tensors"]["model.0.weight"].update(size=[10**6, 10**6]), "hold 35 elements"),  # no allocation
    (lambda m: m["tensors"]["model.0.weight"].update(dtype="object"), "unknown dtype"),
    (lambda m: _first_chunk(m).update(file="../../etc/passwd"), "plain"),
    (lambda m: m["files"]["__0_0.distcp"].update(size=1), "manifest records"),
    (lambda m: m.update(format_version=99), "version 99"),
    (lambda m: m.update(format="something else"), "format"),
    (lambda m: m["tensors"]["model.0.weight"].update(chunks=m["tensors"]["model.0.weight"]["chunks"] * 2),
     "overlap|hold 70"),
])
def test_a_lying_manifest_is_refused_before_reading_shards(tmp_path, no_unpickling, lie, message):
    path = _save(tmp_path, 1)
    _rewrite(path, lie)
    with pytest.raises(FormatError, match=message):
        load_sharded(path, _state(*_trained(1)))


@pytest.mark.parametrize("text, message", [
    ('{"format": 1, "format": 2}', "duplicate key"),
    ('{"format": NaN}', "not JSON"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
    ("[]", "not a JSON object"),
])
def test_malformed_manifest_json_is_refused(tmp_path, text, message):
    path = _save(tmp_path, 1)
    (path / "manifest.json").write_text(text)
    with pytest.raises(FormatError, match=message):
        open_sharded(path)


def test_an_oversize_manifest_is_refused_before_parsing(tmp_path, monkeypatch):
    path = _save(tmp_path, 1)
    monkeypatch.setattr(sharded_module, "MAX_MANIFEST_BYTES", 1000)
    with pytest.raises(FormatError, match="over the limit of 1000"):
        open_sharded(path)
