"""Re-saving a loaded model keeps every section of its file (issue 10, item 9)."""
from __future__ import annotations

import json

import torch

from modelkeep.artifact import load, read_tensors, save
from modelkeep.artifact.format import KEY_MANIFEST, read_header
from modelkeep.artifact.manifest_builder import manifest_metadata
from modelkeep.artifact.manifest import Manifest
from modelkeep.artifact.tensors import write_tensors


def _manifest(path) -> dict:
    return json.loads(read_header(path).metadata[KEY_MANIFEST])


def _with_unknown_section(path, out):
    """The same file with a section a newer modelkeep might write."""
    document = _manifest(path)
    document["x_future_section"] = {"kept": [1, 2, 3]}
    metadata = manifest_metadata(Manifest.from_document(document))
    return write_tensors(out, {k: v.clone() for k, v in read_tensors(path).items()}, metadata)


def test_load_then_save_keeps_every_section(trained, tmp_path):
    optimizer_state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.arange(4.0)}},
                       "param_groups": [{"lr": 0.01, "params": [0]}]}
    first = save(trained, tmp_path / "first.safetensors", card={"license": "MIT"}, optimizer=optimizer_state,
                 scheduler={"last_epoch": 3}, parent="xxh3-128:" + "0" * 32)
    original = _with_unknown_section(first, tmp_path / "original.safetensors")
    copy = save(load(original), tmp_path / "copy.safetensors")

    before, after = _manifest(original), _manifest(copy)
    for section in ("hyperparameters", "metrics", "history", "labels", "preprocessing", "postprocessing", "task",
                    "signature", "card", "lineage", "scheduler", "optimizer", "architecture", "x_future_section"):
        assert section in before, section
        assert after.get(section) == before[section], section
    assert set(after) == set(before)
    assert after["provenance"]["data_fingerprint"] == before["provenance"]["data_fingerprint"]
    assert load(copy).content_hash == load(original).content_hash
    restored = load(copy).optimizer_state()
    assert torch.equal(restored["state"][0]["exp_avg"], torch.arange(4.0))
    assert restored["param_groups"] == [{"lr": 0.01, "params": [0]}]


def test_a_section_given_at_re_save_replaces_the_carried_one(trained, tmp_path):
    original = save(trained, tmp_path / "a.safetensors")
    copy = save(load(original), tmp_path / "b.safetensors", metrics={"test_accuracy": 0.5})
    assert _manifest(copy)["metrics"] == {"test_accuracy": 0.5}
    assert _manifest(copy)["hyperparameters"] == _manifest(original)["hyperparameters"]
