"""Training configs with ``base:`` and a ``transfer:`` section (``modelkeep.transfer.config``), over the task matrix.

A saved base gets a new head and learns new data; what ``freeze`` keeps is bit-identical to the base file; the
run folder is the one ``modelkeep train`` writes; ``modelkeep train CONFIG`` dispatches to it; bad configs fail
before any data is read, with one line.
"""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from modelkeep import load
from modelkeep.artifact.tensors import read_tensors
from modelkeep.cli.main import main
from modelkeep.errors import ConfigError, ModelNotFoundError
from modelkeep.transfer.config import is_transfer_config, load_training_config, run_transfer, transfer_settings

from transfer_matrix import TASKS, make_base, score, write_data


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bases")
    return {task: make_base(task, folder) for task in TASKS}


def _config(base, data, task, **transfer):
    _, _, loss, head, _ = TASKS[task]
    return {"base": str(base), "data": {"path": str(data)}, "loss": loss, "epochs": 25, "batch_size": 64,
            "learning_rate": 0.02, "checkpoint": False, "transfer": {"head": head, **transfer}}


@pytest.mark.parametrize("task", list(TASKS))
def test_a_saved_base_with_a_new_head_learns_the_new_task(task, bases, tmp_path):
    data, test_x, test_y = write_data(task, tmp_path)
    config = load_training_config(_config(bases[task], data, task))
    run = run_transfer(config, tmp_path / "run", progress=False)
    model = load(run.model_path)
    assert score(task, model, test_x, test_y) >= TASKS[task][4]
    lineage = model.lineage
    assert lineage["parent"]["content_hash"] == load(bases[task]).content_hash
    assert lineage["relation"] == "fine-tuned"
    assert {"history.csv", "history.json", "metrics.json", "config.yaml"} <= {p.name for p in run.files}
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["transfer"]["head"] == TASKS[task][3]


@pytest.mark.parametrize("task", ["multiclass", "token_sequence"])
def test_frozen_layers_stay_bit_identical_to_the_base_file(task, bases, tmp_path):
    data, _, _ = write_data(task, tmp_path)
    config = load_training_config({**_config(bases[task], data, task, freeze="all_but_head"), "epochs": 3})
    run = run_transfer(config, tmp_path / "run", progress=False)
    before, after = read_tensors(bases[task]), read_tensors(run.model_path)
    body = [name for name in before if not name.startswith("__") and "head" not in name]
    assert body and all(torch.equal(before[name], after[name]) for name in body)
    head = [name for name in after if "head" in name and name.endswith("weight")]
    assert head and not any(before[name].shape == after[name].shape and torch.equal(before[name], after[name])
                            for name in head)


def test_modelkeep_train_dispatches_a_config_with_base(bases, tmp_path, capsys):
    data, test_x, test_y = write_data("multiclass", tmp_path)
    document = {**_config(bases["multiclass"], data, "multiclass", freeze=[0], l2sp=0.001), "epochs": 4}
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(document))
    assert main(["train", str(tmp_path / "finetune.yaml"), "--run-dir", str(tmp_path / "run"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    model = load(printed["model"])
    assert model.lineage["relation"] == "fine-tuned"
    assert model.lineage["parent"]["content_hash"] == load(bases["multiclass"]).content_hash
    before, after = read_tensors(bases["multiclass"]), read_tensors(printed["model"])
    # freeze [0]: the first layer with parameters, the hidden Dense
    assert torch.equal(before["layers.dense_1.0.weight"], after["layers.dense_1.0.weight"])


def test_a_plain_config_is_not_a_transfer_config(tmp_path):
    config = load_training_config({"model": "mlp", "data": "digits"})
    assert not is_transfer_config(config)
    config = load_training_config({"base": "mlp", "data": "digits", "transfer": {"head": 10}})
    assert is_transfer_config(config) and transfer_settings(config).head == 10


def test_a_model_with_a_transfer_section_starts_from_that_fresh_model(tmp_path):
    data, _, _ = write_data("multiclass", tmp_path)
    document = {"model": TASKS["multiclass"][1], "data": {"path": str(data)}, "epochs": 2, "checkpoint": False,
                "transfer": {"freeze": ["head"], "head": 3}}
    run = run_transfer(load_training_config(document), tmp_path / "run", progress=False)
    assert load(run.model_path).lineage.get("parent") is None  # nothing to descend from


@pytest.mark.parametrize("document, error, fragment", [
    ({"base": "x.safetensors", "model": "mlp", "data": "digits"}, ConfigError, "both 'model'"),
    ({"transfer": {"head": 3}, "data": "digits"}, ConfigError, "needs a 'base'"),
    ({"base": "missing.safetensors", "data": "digits"}, ModelNotFoundError, "'missing.safetensors' does not exist"),
    ({"base": {"registry": "x"}, "data": "digits"}, ConfigError, "base must be a model file"),
    ({"base": "mlp", "data": "digits", "transfer": {"hed": 3}}, ConfigError, "did you mean 'head'"),
    ({"base": "mlp", "data": "digits", "transfer": {"head": 0}}, ConfigError, "head must be a whole number"),
    ({"base": "mlp", "data": "digits", "transfer": [1]}, ConfigError, "transfer must be a mapping"),
    ({"base": "mlp", "data": "digits", "tranfser": {}}, ConfigError, "did you mean 'transfer'"),
    ({"model": "mlp"}, ConfigError, "has no 'data'"),
    ({"data": "digits"}, ConfigError, "has no 'model'"),
])
def test_bad_configs_fail_before_any_data_is_read(document, error, fragment):
    with pytest.raises(error, match=None) as caught:
        load_training_config(document)
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_a_folder_as_base_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_training_config({"base": str(tmp_path), "data": "digits"})


def test_modelkeep_train_reports_a_bad_transfer_config_in_one_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"base": "mlp", "data": "digits",
                                                        "transfer": {"batchnorm": "sometimes"}}))
    assert main(["train", str(tmp_path / "bad.yaml"), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batchnorm must be one of frozen, train, reestimate" in err[0]
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_the_example_config_is_a_valid_transfer_config(bases):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "finetune_mnist.yaml"
    config = load_training_config(example, [f"base={bases['multiclass']}"])  # its real base is trained first
    settings = transfer_settings(config)
    assert settings.head == 10 and settings.freeze == ("conv1",) and settings.l2sp == {"alpha": 0.01, "beta": 0.0001}


def test_a_zoo_base_is_built_for_the_data_and_frozen_as_asked(tmp_path):
    data, _, _ = write_data("multiclass", tmp_path)
    document = {"base": {"zoo": "mlp", "hidden": [8, 8]}, "data": {"path": str(data)}, "epochs": 2, "seed": 5,
                "checkpoint": False, "transfer": {"freeze": "all_but_head"}}
    run = run_transfer(load_training_config(document), tmp_path / "run", progress=False)
    from modelkeep.nn import build
    from modelkeep.zoo import resolve_spec

    fresh = build(resolve_spec("mlp", overrides={"hidden": [8, 8], "num_classes": 3}, input_shape=[4]), seed=5)
    after = read_tensors(run.model_path)
    body = {name: tensor for name, tensor in fresh.state_dict().items() if "head" not in name}
    assert body and all(torch.equal(after[name], tensor) for name, tensor in body.items())
    assert load(run.model_path).lineage["relation"] == "fine-tuned"
