"""Keras 3 models written here by real Keras (torch backend), read back by modelkeep without Keras: same predictions.

Every layer family, both formats (``.keras`` archive and legacy ``.h5``): the
imported spec is built by modelkeep, loads the converted tensors strictly, and
predicts what Keras predicts on the same inputs, within 1e-5.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import modelkeep
from modelkeep.importers.base import SNIFF_BYTES, READERS

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras_models  # noqa: E402  (tests/importers/keras/keras_models.py)

ATOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras's own np.array(copy=) notice


def read(path: Path, format: str):
    """What the reader of ``format`` makes of ``path``, after checking it claims the file from its content."""
    reader = READERS.get(format)
    head = path.read_bytes()[:SNIFF_BYTES]
    assert reader.sniff(path, head), f"{format} reader does not recognise {path.name}"
    others = [r.format for r in modelkeep.importers.readers() if r.format != format and r.sniff(path, head)]
    assert not others, f"{path.name} is also claimed by {others}"
    return reader.read(path, None)


def predict(imported, inputs):
    net = modelkeep.build(imported.spec)
    result = net.load_state_dict(imported.tensors, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    net.eval()
    xs = [torch.from_numpy(np.asarray(x)) for x in (inputs if isinstance(inputs, list) else [inputs])]
    xs = [x if x.dtype == torch.float32 else x.long() for x in xs]
    with torch.no_grad():
        out = net(*xs)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [o.numpy() for o in outs]


def assert_same(keras_out, ours):
    keras_outs = keras_out if isinstance(keras_out, list) else [keras_out]
    assert len(keras_outs) == len(ours)
    for want, got in zip(keras_outs, ours):
        want = np.asarray(want)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def saved_models(keras, tmp_path_factory):
    """Each builder's model saved as .keras and .h5 once, with Keras's predictions."""
    folder = tmp_path_factory.mktemp("keras_models")
    out = {}
    for builder in keras_models.BUILDERS:
        model, inputs = builder(keras)
        if not getattr(builder, "own_weights", False):
            keras_models.randomize(model)
        expected = model.predict(inputs, verbose=0)
        paths = {"keras": folder / f"{builder.__name__}.keras", "keras-h5": folder / f"{builder.__name__}.h5"}
        model.save(paths["keras"])
        model.save(paths["keras-h5"])
        out[builder.__name__] = (paths, inputs, expected)
    return out


@pytest.mark.parametrize("format", ["keras", "keras-h5"])
@pytest.mark.parametrize("name", [b.__name__ for b in keras_models.BUILDERS])
def test_predictions_equal_keras(saved_models, name, format):
    paths, inputs, expected = saved_models[name]
    imported = read(paths[format], format)
    assert imported.format == format
    assert imported.spec is not None
    assert_same(expected, predict(imported, inputs))


def test_flatten_after_convolutions_keeps_keras_order(saved_models):
    """The Dense after Flatten loads Keras's kernel unchanged: only the Permute before Flatten makes that right."""
    paths, inputs, expected = saved_models["conv_flatten_dense"]
    imported = read(paths["keras"], "keras")
    kinds = [layer.kind_name for layer in imported.spec.layers]
    assert kinds[:2] == ["Input", "Permute"]
    assert kinds[kinds.index("Flatten") - 1] == "Permute"
    assert imported.spec.input_shape == (8, 7, 2)        # the Keras model's own input, channels last


def test_batch_norm_statistics_and_settings(saved_models):
    paths, _, _ = saved_models["batch_norm"]
    imported = read(paths["keras"], "keras")
    layers = imported.spec.by_name
    first = layers["batch_normalization"].kind.fields
    assert first.epsilon == pytest.approx(1e-2) and first.momentum == pytest.approx(0.1)
    assert not torch.all(imported.tensors["layers.batch_normalization.running_var"] == 1)


def test_token_model_takes_int_ids(saved_models):
    paths, inputs, expected = saved_models["token_lstm"]
    imported = read(paths["keras-h5"], "keras-h5")
    assert imported.spec.inputs[0].kind.fields.dtype == "int64"
    assert imported.spec.final_activation() == "sigmoid"
    assert imported.details["keras_version"].startswith("3.")


def test_gru_reset_after_false_is_refused(keras, tmp_path):
    L = keras.layers
    model = keras.Sequential([keras.Input((4, 2)), L.GRU(3, reset_after=False)])
    model.save(tmp_path / "gru.keras")
    with pytest.raises(modelkeep.errors.FormatError, match="reset_after=False"):
        read(tmp_path / "gru.keras", "keras")


def test_mask_zero_and_variable_length_are_refused_with_reasons(keras, tmp_path):
    L = keras.layers
    keras.Sequential([keras.Input((5,)), L.Embedding(9, 2, mask_zero=True), L.LSTM(2)]).save(tmp_path / "m.keras")
    with pytest.raises(modelkeep.errors.FormatError, match="mask_zero"):
        read(tmp_path / "m.keras", "keras")
    keras.Sequential([keras.Input((None, 3)), L.LSTM(2)]).save(tmp_path / "v.keras")
    with pytest.raises(modelkeep.errors.FormatError, match="variable"):
        read(tmp_path / "v.keras", "keras")


def test_unsupported_layer_lists_what_is_supported(keras, tmp_path):
    L = keras.layers
    keras.Sequential([keras.Input((4, 4, 1)), L.Conv2DTranspose(2, 3)]).save(tmp_path / "u.keras")
    with pytest.raises(modelkeep.errors.FormatError, match="Conv2DTranspose.*supported: .*Conv2D"):
        read(tmp_path / "u.keras", "keras")
