"""``modelkeep export FILE --format hf OUT_DIR``: a Hugging Face-style folder (weights, a self-describing
config.json, a model card with YAML front matter) that ``modelkeep import`` turns back into the same model."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import yaml

from export_tasks import fresh_inputs, train_and_save
from modelkeep import load, save
from modelkeep.artifact.tensors import read_tensors
from modelkeep.cli.main import main
from modelkeep.errors import ExportError
from modelkeep.export.hf import export_hf
from modelkeep.importers import import_model
from modelkeep.importers.api import choose_reader
from modelkeep.importers.huggingface import HuggingFaceReader
from modelkeep.nn import build
from modelkeep.spec import load_spec

CARD = {"license": "apache-2.0", "intended_use": "tests", "training_data": "synthetic-blobs",
        "limitations": "tiny", "tags": ["demo"], "metrics": {"f1": 0.75}}


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    head, _, _ = readme[4:].partition("\n---\n")
    return yaml.safe_load(head)


def _weights(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in read_tensors(path).items() if not k.startswith("__")}


@pytest.mark.parametrize("task", ["multiclass", "regression", "token_sequence"])
def test_round_trip_gives_the_same_tensors_and_predictions(task, tmp_path):
    path = train_and_save(task, tmp_path / "model.safetensors")
    folder = export_hf(path, tmp_path / "hf")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert choose_reader(folder).format == "modelkeep-hf"
    assert not HuggingFaceReader().sniff(folder, b"")  # the generic reader leaves the folder to ours
    report = import_model(folder, tmp_path / "back.safetensors")
    assert report.complete and report.format == "modelkeep-hf"
    original, back = _weights(path), _weights(tmp_path / "back.safetensors")
    assert original.keys() == back.keys()
    for name in original:
        assert original[name].dtype == back[name].dtype
        assert original[name].numpy().tobytes() == back[name].numpy().tobytes(), name
    x = fresh_inputs(task)
    first, second = load(path).predict(x), load(tmp_path / "back.safetensors").predict(x)
    for field in ("probabilities", "values"):
        if getattr(first, field) is not None:
            np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert first.labels == second.labels and first.class_names == second.class_names
    assert load(tmp_path / "back.safetensors").labels == load(path).labels


def test_config_describes_the_model_and_the_card_front_matter_is_yaml(tmp_path):
    spec = load_spec({"name": "tiny", "layers": [{"kind": "Input", "name": "features", "shape": [4]},
                                                 {"kind": "Dense", "name": "head", "units": 3}]})
    parent = save(build(spec, seed=0), tmp_path / "base.safetensors")
    path = save(build(spec, seed=1), tmp_path / "model.safetensors", labels=["a", "b", "c"],
                metrics={"test_accuracy": 0.9}, card=CARD, parent=parent,
                lineage={"base_model": "org/tiny-base"})
    folder = export_hf(path, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "modelkeep" and config["architectures"] == ["tiny"]
    assert config["id2label"] == {"0": "a", "1": "b", "2": "c"} and config["label2id"]["c"] == 2
    assert config["modelkeep"]["manifest"]["architecture"]["type"] == "spec"
    assert config["modelkeep"]["content_hash"].startswith("xxh3-128:")
    readme = (folder / "README.md").read_text()
    meta = _front_matter(readme)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "modelkeep"
    assert meta["tags"] == ["modelkeep", "classification", "demo"]
    assert meta["datasets"] == ["synthetic-blobs"] and meta["base_model"] == "org/tiny-base"
    assert meta["metrics"] == ["test_accuracy", "f1"]
    values = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert values == {"test_accuracy": 0.9, "f1": 0.75}
    assert "## Intended use" in readme and "## Lineage" in readme and "content hash `xxh3-128:" in readme
    plain = read_tensors(folder / "model.safetensors", verify=True)  # plain safetensors, with its hashes
    assert plain.keys() == _weights(path).keys()


def test_exporting_twice_gives_the_same_bytes_and_refuses_a_folder_with_other_files(tmp_path):
    path = save(build(load_spec({"layers": [{"kind": "Input", "shape": [2]}, {"kind": "Dense", "units": 1}]}),
                      seed=0), tmp_path / "m.safetensors", task="regression")
    digests = []
    for out in ("a", "b"):
        folder = export_hf(path, tmp_path / out)
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()})
    assert digests[0] == digests[1]
    export_hf(path, tmp_path / "a")  # a re-export over an earlier one is fine
    (tmp_path / "a" / "pytorch_model.bin").write_bytes(b"stale")
    with pytest.raises(ExportError, match="already holds other files.*pytorch_model.bin"):
        export_hf(path, tmp_path / "a")


def test_a_plain_hugging_face_folder_is_not_claimed(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (folder / "model.safetensors").write_bytes(b"")
    assert choose_reader(folder).format == "huggingface"


def test_cli_export_then_import(tmp_path, capsys):
    path = train_and_save("binary_one_logit", tmp_path / "model.safetensors")
    assert main(["export", path, "--format", "hf", str(tmp_path / "hf")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "hf" / "README.md").is_file()
    assert main(["import", str(tmp_path / "hf"), str(tmp_path / "back.safetensors")]) == 0
    x = fresh_inputs("binary_one_logit")
    first, second = load(path).predict(x), load(tmp_path / "back.safetensors").predict(x)
    np.testing.assert_array_equal(np.asarray(first.probabilities), np.asarray(second.probabilities))
    assert main(["export", path, "--format", "hf", str(tmp_path / "hf"), "--opset", "17"]) == 2
    assert "apply to --format onnx only" in capsys.readouterr().err
