"""A fine-tuned file records its lineage: the base file's content hash, the relation, the transfer settings, which
layers trained and at which rates; the manifest stays valid against the format's schema."""
from __future__ import annotations

import json

import jsonschema
import pytest
from safetensors import safe_open

from modelkeep.artifact import load, save
from modelkeep.artifact.format import KEY_MANIFEST
from modelkeep.artifact.manifest import manifest_schema
from modelkeep.cli.main import main
from modelkeep.nn import build
from modelkeep.transfer import finetune
from transfer_helpers import BASE_SPEC, QUICK

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _manifest(path):
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()[KEY_MANIFEST])


def test_the_saved_file_records_parent_settings_and_trained_layers(iris, base_file, tmp_path):
    result = finetune(base_file, iris.train, iris.validation, head=3, freeze=["hidden"], l2sp={"alpha": 0.01},
                      discriminative=0.5, learning_rate=0.02, **QUICK)
    child = save(result, tmp_path / "child.safetensors")
    manifest = _manifest(child)
    jsonschema.validate(manifest, manifest_schema(), format_checker=jsonschema.FormatChecker())
    lineage = load(child).lineage
    assert lineage["relation"] == "fine-tuned"
    assert lineage["parent"] == {"content_hash": load(base_file).content_hash, "source": str(base_file)}
    assert lineage["transfer"]["head"] == 3 and lineage["transfer"]["freeze"] == ["hidden"]
    assert lineage["transfer"]["l2sp"] == {"alpha": 0.01, "beta": 0.0} and lineage["transfer"]["discriminative"] == 0.5
    assert lineage["trained_layers"] == ["bn", "mid", "out"] and lineage["frozen_layers"] == ["hidden"]
    assert lineage["learning_rates"] == pytest.approx({"hidden": None, "bn": 0.005, "mid": 0.01, "out": 0.02})
    assert manifest["hyperparameters"]["frozen"] == ["layers.hidden.0.weight", "layers.hidden.0.bias"]
    # w0 is not stored again: the child holds its own weights only
    with safe_open(str(child), framework="pt") as handle:
        assert sorted(k for k in handle.keys() if not k.startswith("__")) == sorted(result.model.state_dict())


def test_lineage_chains_and_survives_a_resave(iris, base_file, tmp_path):
    first = save(finetune(base_file, iris.train, head=3, **QUICK), tmp_path / "first.safetensors")
    second = save(finetune(first, iris.train, freeze="all_but_head", **QUICK), tmp_path / "second.safetensors")
    assert load(second).lineage["parent"]["content_hash"] == load(first).content_hash
    assert load(first).lineage["parent"]["content_hash"] == load(base_file).content_hash
    resaved = save(load(second), tmp_path / "resaved.safetensors")
    assert load(resaved).lineage == load(second).lineage


def test_a_base_without_a_file_records_where_it_came_from(iris, tmp_path):
    from_zoo = finetune({"zoo": "mlp", "input_features": 4, "hidden": [8]}, iris.train, head=3, **QUICK)
    assert from_zoo.lineage["base"] == "zoo:mlp" and "parent" not in from_zoo.lineage
    from_module = finetune(build(BASE_SPEC, seed=0), iris.train, **QUICK)
    assert "parent" not in from_module.lineage and from_module.lineage["relation"] == "fine-tuned"
    assert load(save(from_module, tmp_path / "m.safetensors")).lineage["trained_layers"] == ["hidden", "bn", "mid",
                                                                                              "out"]


def test_inspect_shows_the_lineage(iris, base_file, tmp_path, capsys):
    child = save(finetune(base_file, iris.train, head=3, freeze="all_but_head", **QUICK), tmp_path / "c.safetensors")
    assert main(["inspect", str(child)]) == 0
    out = capsys.readouterr().out
    assert f"fine-tuned of {load(base_file).content_hash}" in out
