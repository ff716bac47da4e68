"""End to end: a Keras file through ``modelkeep.import_model`` and ``modelkeep import``, then ``modelkeep.load``."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import modelkeep

DATA = Path(__file__).resolve().parent / "data"


def test_import_model_writes_a_file_that_predicts_like_tensorflow(tmp_path):
    source = DATA / "keras2_cnn.h5"
    report = modelkeep.import_model(source, tmp_path / "cnn.safetensors", strict=True)
    assert report.format == "keras-h5" and report.complete
    assert report.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    model = modelkeep.load(tmp_path / "cnn.safetensors")
    inputs = np.load(DATA / "keras2_cnn_inputs.npy")
    got = model.predict(inputs)
    got = np.asarray(getattr(got, "probabilities", got))
    np.testing.assert_allclose(got, np.load(DATA / "keras2_cnn_outputs.npy"), atol=1e-5, rtol=0)


def test_cli_imports_a_keras_archive(keras, tmp_path):
    from modelkeep.cli.main import main

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "small.keras")
    assert main(["import", str(tmp_path / "small.keras"), str(tmp_path / "small.safetensors")]) == 0
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    got = modelkeep.load(tmp_path / "small.safetensors").predict(x)
    got = np.asarray(getattr(got, "probabilities", got))
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5, rtol=0)


def test_cli_refuses_a_lambda_in_one_line_and_writes_nothing(keras, tmp_path, capsys):
    from modelkeep.cli.main import main

    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x + 1, name="plus_one")])
    model.save(tmp_path / "lambda.keras")
    status = main(["import", str(tmp_path / "lambda.keras"), str(tmp_path / "out.safetensors")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "'plus_one'" in err and "Lambda" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("suffix", ["keras", "h5"])
def test_the_compiled_loss_tells_a_one_output_regression_from_a_binary_classifier(keras, tmp_path, suffix):
    """A Dense(1) head is a score for mse and a logit for binary cross-entropy: the file's loss says which."""
    x = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
    for loss, task, post in (("mse", "regression", "identity"), ("binary_crossentropy", "classification", "sigmoid")):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
        model.compile(loss=loss, optimizer="adam")
        model.save(tmp_path / f"m.{suffix}")
        modelkeep.import_model(tmp_path / f"m.{suffix}", tmp_path / f"{loss}.safetensors")
        loaded = modelkeep.load(tmp_path / f"{loss}.safetensors")
        assert (loaded.manifest.task, loaded.manifest.postprocessing["type"]) == (task, post)
        if task == "regression":
            np.testing.assert_allclose(np.asarray(loaded.predict(x).values).reshape(-1),
                                       model.predict(x, verbose=0).reshape(-1), atol=1e-5)
