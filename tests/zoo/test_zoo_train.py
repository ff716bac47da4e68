"""Every zoo model is trained and used to predict on a small input of its own kind: token ids for the
token models, images for the image models, feature rows for the MLP — through the API (fit → save →
load → predict) and through the CLI (``modelkeep train CONFIG`` then ``modelkeep predict``).

Sizes are overridden through each model's options so the suite stays fast; adding a model to the
zoo adds it here (a model without an entry in ``TINY`` fails ``test_every_zoo_model_has_a_tiny_form``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from modelkeep import Dataset, fit, load, save
from modelkeep.cli.main import main
from modelkeep.nn import build
from modelkeep.zoo import ZOO, list_models

TOKENS = {"vocab_size": 30}
TINY = {
    "mlp": {"input_features": 12, "hidden": [8], "num_classes": 3},
    "lenet5": {"input_shape": (1, 32, 32), "num_classes": 3},
    "alexnet": {"input_shape": (3, 63, 63), "num_classes": 3, "width": 8, "hidden": 16},
    "vgg11": {"input_shape": (3, 32, 32), "num_classes": 3, "width": 8, "hidden": 16},
    "vgg16": {"input_shape": (3, 32, 32), "num_classes": 3, "width": 8, "hidden": 16},
    "resnet18": {"input_shape": (3, 32, 32), "num_classes": 3, "width": 4},
    "resnet50": {"input_shape": (3, 32, 32), "num_classes": 3, "width": 4},
    "resnet34": {"input_shape": (3, 32, 32), "num_classes": 3, "width": 4},
    "mobilenet_v2": {"input_shape": (3, 32, 32), "num_classes": 3, "width": 0.25},
    "efficientnet_b0": {"input_shape": (3, 32, 32), "num_classes": 3, "width": 0.25, "depth": 0.25},
    "lstm_classifier": {**TOKENS, "seq_len": 7, "embedding_dim": 8, "hidden": 6, "num_classes": 3},
    "transformer_classifier": {**TOKENS, "seq_len": 6, "d_model": 8, "n_head": 2, "ff_dim": 16, "n_layer": 1,
                               "num_classes": 3},
    "gpt2": {**TOKENS, "context": 6, "d_model": 8, "n_head": 2, "n_layer": 1},
    "bert": {**TOKENS, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
             "max_position_embeddings": 8, "seq_len": 6, "num_classes": 3},
    "all_minilm_l6_v2": {**TOKENS, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 16, "max_position_embeddings": 8, "seq_len": 6, "num_classes": 3},
    "gpt3_175b": {**TOKENS, "context": 6, "d_model": 8, "n_head": 2, "n_layer": 1},
}
LANGUAGE_MODELS = ("gpt2", "gpt3_175b")  # a (T, vocab) output: next-token targets, one per position
SAMPLES = 12


def _spec(name):
    return ZOO.get(name).spec(**TINY[name])


def _inputs(spec, n: int = SAMPLES, seed: int = 0) -> np.ndarray:
    """Samples of the model's own kind: int64 token ids below the vocabulary, or float images/rows."""
    rng = np.random.default_rng(seed)
    if spec.inputs[0].kind.fields.dtype == "int64":
        return rng.integers(0, TOKENS["vocab_size"], (n, *spec.input_shape)).astype(np.int64)
    return rng.standard_normal((n, *spec.input_shape)).astype(np.float32)


def _dataset(name: str, spec) -> Dataset:
    x = _inputs(spec)
    if name in LANGUAGE_MODELS:
        y = np.roll(x, -1, axis=1)  # the next token at every position
        return Dataset(name, x.astype(np.float32), y, tuple(str(i) for i in range(TOKENS["vocab_size"])))
    y = np.arange(SAMPLES) % 3
    return Dataset(name, x.astype(np.float32), y.astype(np.int64), ("a", "b", "c"))


def test_every_zoo_model_has_a_tiny_form():
    assert sorted(TINY) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_fit_save_load_predict_through_the_api(name, tmp_path):
    spec = _spec(name)
    model = build(spec, seed=0)
    data = _dataset(name, spec)
    result = fit(model, data, data, epochs=1, batch_size=6, progress=False, seed=0)
    assert np.isfinite(result.history.records[-1]["loss"])
    path = save(result, tmp_path / "model.safetensors")
    loaded = load(path)
    x = _inputs(spec, 4, seed=1)
    if name in LANGUAGE_MODELS:  # the next token at every position, with its probability
        out = loaded.module(torch.from_numpy(x))
        assert tuple(out.shape) == (4, *spec.output_shape) and torch.isfinite(out).all()
        prediction = loaded.predict(x)
        positions, vocabulary = spec.output_shape
        assert prediction.probabilities.shape == (4, positions, vocabulary)
        np.testing.assert_allclose(prediction.probabilities, torch.softmax(out, dim=-1).detach().numpy(), rtol=1e-5)
        assert [len(row) for row in prediction.labels] == [positions] * 4
        assert prediction.labels == [[str(i) for i in row] for row in out.argmax(-1).tolist()]
        assert loaded.predict(x).labels == prediction.labels
        return
    prediction = loaded.predict(x)
    assert len(prediction.labels) == 4 and set(prediction.labels) <= {"a", "b", "c"}
    again = loaded.predict(x)
    assert list(again.labels) == list(prediction.labels)


@pytest.mark.parametrize("name", list_models())
def test_train_and_predict_through_the_cli(name, tmp_path, capsys):
    spec = _spec(name)
    x = _inputs(spec, 20)
    # a language model's targets: the next token at every position (N, T), token ids as class indices
    np.savez(tmp_path / "data.npz", x=x, y=np.roll(x, -1, axis=1) if name in LANGUAGE_MODELS else np.arange(20) % 3)
    np.save(tmp_path / "input.npy", _inputs(spec, 3, seed=1))
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in TINY[name].items() if k != "num_classes"}
    config = {"model": {"zoo": name, **options}, "data": {"path": "data.npz", "split": [0.6, 0.2, 0.2]},
              "epochs": 1, "batch_size": 6, "checkpoint": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    assert main(["train", str(tmp_path / "config.yaml"), "--run-dir", str(run_dir), "--quiet", "--json"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run_dir / "model.safetensors"), str(tmp_path / "input.npy"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed if isinstance(printed, list) else printed["predictions"]) == 3
    if name in LANGUAGE_MODELS:  # per row: the predicted token and its probability at each position
        records = printed if isinstance(printed, list) else printed["predictions"]
        positions, vocabulary = spec.output_shape
        for record in records:
            assert len(record["labels"]) == len(record["probabilities"]) == len(record["top"]) == positions
            assert all(0 <= int(label) < vocabulary for label in record["labels"])
        assert main(["predict", str(run_dir / "model.safetensors"), str(tmp_path / "input.npy")]) == 0
        assert records[0]["labels"][0] in capsys.readouterr().out
    assert main(["evaluate", str(run_dir / "model.safetensors"), "--data", str(tmp_path / "data.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 4  # the run's own test split
