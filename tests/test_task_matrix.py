"""Every kind of task through the whole life of a model: fit → save → load → predict, and the same
config through ``modelkeep train`` and ``modelkeep predict``.

The kinds: binary with one logit (BCE), multi-class (softmax over several logits), regression, and
a token-sequence classifier (int64 token ids into an Embedding). Each is trained on data it can
learn, and the loaded file must give the right answers — not just run.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from modelkeep import fit, load, save
from modelkeep.cli.main import main
from modelkeep.data import dataset_from_arrays
from modelkeep.nn import build
from modelkeep.spec import load_spec

from task_specs import TOKEN_SPEC, binary_data as _binary, dense_spec as _dense  # noqa: E402
from task_specs import multiclass_data as _multiclass, regression_data as _regression, token_data as _tokens


TASKS = {
    #  name: (data, spec, loss, what a good model reaches)
    "binary_one_logit": (_binary, _dense(4, 1), "binary_crossentropy", 0.9),
    "multiclass": (_multiclass, _dense(4, 3), "categorical_crossentropy", 0.9),
    "regression": (_regression, _dense(3, 1), "mse", 0.9),
    "token_sequence": (_tokens, TOKEN_SPEC, "categorical_crossentropy", 0.9),
}


def _score(task, prediction, y):
    if task == "regression":
        values = np.asarray(prediction.values).reshape(-1)
        return 1 - np.sum((values - y[:, 0]) ** 2) / np.sum((y[:, 0] - y[:, 0].mean()) ** 2)
    return float(np.mean(np.asarray(prediction.labels) == np.asarray([str(v) for v in y])))


@pytest.mark.parametrize("task", list(TASKS))
def test_fit_save_load_predict_gives_right_answers(task, tmp_path):
    make, spec, loss, good = TASKS[task]
    rng = np.random.default_rng(0)
    train = dataset_from_arrays(*make(rng, 300), name=f"{task}-train")
    test_x, test_y = make(rng, 100)
    model = build(load_spec(spec), seed=0)
    result = fit(model, train, epochs=25, batch_size=64, learning_rate=0.02, loss=loss, progress=False, seed=0)
    loaded = load(save(result, tmp_path / "model.safetensors"))
    assert _score(task, loaded.predict(test_x), test_y) >= good


@pytest.mark.parametrize("task", list(TASKS))
def test_train_and_predict_through_the_cli(task, tmp_path, capsys):
    make, spec, loss, good = TASKS[task]
    rng = np.random.default_rng(1)
    x, y = make(rng, 300)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    test_x, test_y = make(rng, 100)
    np.save(tmp_path / "input.npy", test_x)
    config = {"model": spec, "data": {"path": "data.npz"}, "loss": loss, "epochs": 25, "batch_size": 64,
              "learning_rate": 0.02, "checkpoint": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "config.yaml"), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run" / "model.safetensors"), str(tmp_path / "input.npy"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    rows = printed if isinstance(printed, list) else printed["predictions"]
    assert len(rows) == len(test_y)
    loaded = load(tmp_path / "run" / "model.safetensors")
    assert _score(task, loaded.predict(test_x), test_y) >= good


@pytest.mark.parametrize("task", list(TASKS))
def test_share_through_the_registry_and_load_by_url(task, tmp_path, monkeypatch, capsys):
    """Push (CLI), pull (API, byte-identical) and load by registry URL (API and CLI) give the model's own answers."""
    from modelkeep import registry

    make, spec, loss, _ = TASKS[task]
    rng = np.random.default_rng(2)
    x, y = make(rng, 64)
    result = fit(build(load_spec(spec), seed=0), dataset_from_arrays(x, y, name=task), epochs=2, loss=loss,
                 progress=False, seed=0)
    path = save(result, tmp_path / "model.safetensors")
    monkeypatch.setenv("MODELKEEP_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("MODELKEEP_CACHE", str(tmp_path / "cache"))
    assert main(["push", str(path), task, "--alias", "production"]) == 0
    pulled = registry.pull(f"{task}@production", tmp_path / "pulled.safetensors")
    assert pulled.read_bytes() == path.read_bytes()
    expected = load(path).predict(x[:8])
    by_url = load(f"registry://{task}@production").predict(x[:8])
    assert np.array_equal(np.asarray(by_url.probabilities if task != "regression" else by_url.values),
                          np.asarray(expected.probabilities if task != "regression" else expected.values))
    np.save(tmp_path / "input.npy", x[:8])
    capsys.readouterr()
    assert main(["predict", f"registry://{task}@production", str(tmp_path / "input.npy"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed if isinstance(printed, list) else printed["predictions"]) == 8
