"""Write the TensorFlow SavedModel fixtures of tests/importers/savedmodel/data/ (run by hand, never by the tests).

Needs real TensorFlow with the legacy Keras 2 (``pip install tensorflow tf-keras``); the tests read the files it
writes without TensorFlow. Run from the repository root:

    TF_USE_LEGACY_KERAS=1 /tmp/tfvenv/bin/python tests/importers/savedmodel/make_fixtures.py

Each model ``NAME`` becomes ``data/NAME/`` (the SavedModel folder, written by ``model.save(dir, save_format="tf")``)
and ``data/NAME.npz`` holding ``inputs``, ``outputs`` (``model.predict(inputs)``) and every variable of the bundle
under its checkpoint key (``var:<key>``), read back with ``tf.train.load_checkpoint``, and every layer's
``get_weights()`` (``layer:<name>:<i>``). ``data/keras3_export/`` is a Keras 3 ``model.export()`` folder. The models
are saved with ``save_traces=False`` to keep ``saved_model.pb`` small; that changes no variable and no metadata.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def randomize(model: keras.Model, rng: np.random.Generator) -> None:
    """Give every weight random values (batch-norm variances positive), so no weight is trivially zero or one."""
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = [rng.normal(0.0, 0.5, w.shape).astype(w.dtype) for w in weights]
        if isinstance(layer, keras.layers.BatchNormalization):
            new[3] = rng.uniform(0.5, 1.5, weights[3].shape).astype(weights[3].dtype)
        layer.set_weights(new)


def mlp() -> keras.Model:
    """A Sequential Dense network trained one step, so the bundle also holds optimizer slots."""
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="relu", name="hidden"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(3, activation="softmax", name="probs"),
    ], name="mlp")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((4, 6), "float32"), np.zeros(4, "int64"), epochs=1, verbose=0)
    return model


def cnn() -> keras.Model:
    """A functional Conv2D + BatchNormalization + pooling + Flatten + Dense network (channels last)."""
    inputs = keras.Input((6, 6, 2), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu", name="act")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn")


def rnn() -> keras.Model:
    """A Sequential Embedding + LSTM + GRU (reset_after) + Dense sequence model."""
    return keras.Sequential([
        keras.Input((5,), dtype="int32"),
        keras.layers.Embedding(10, 4, name="embed"),
        keras.layers.LSTM(3, return_sequences=True, name="lstm"),
        keras.layers.GRU(3, name="gru"),
        keras.layers.Dense(1, name="out"),
    ], name="rnn")


def inputs_for(name: str, rng: np.random.Generator) -> np.ndarray:
    if name == "rnn":
        return rng.integers(0, 10, (4, 5)).astype("int32")
    shape = {"mlp": (4, 6), "cnn": (4, 6, 6, 2)}[name]
    return rng.normal(0.0, 1.0, shape).astype("float32")


def write(name: str, model: keras.Model, rng: np.random.Generator) -> None:
    randomize(model, rng)
    folder = DATA / name
    shutil.rmtree(folder, ignore_errors=True)
    model.save(str(folder), save_format="tf", save_traces=False)
    inputs = inputs_for(name, rng)
    outputs = model.predict(inputs, verbose=0)
    reloaded = keras.models.load_model(str(folder))
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0), outputs, rtol=0, atol=1e-6)
    reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
    variables = {f"var:{key}": reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
    variables = {k: v for k, v in variables.items() if not isinstance(v, bytes)}
    layers = {f"layer:{layer.name}:{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())}
    np.savez(DATA / f"{name}.npz", inputs=inputs, outputs=outputs, **variables, **layers)


def keras3_export() -> None:
    """A Keras 3 ``model.export()`` folder: a SavedModel with no Keras config, which the importer must refuse."""
    import keras as keras3

    model = keras3.Sequential([keras3.Input((6,)), keras3.layers.Dense(3, name="dense")])
    folder = DATA / "keras3_export"
    shutil.rmtree(folder, ignore_errors=True)
    model.export(str(folder), verbose=False)


def main() -> None:
    rng = np.random.default_rng(11)
    keras.utils.set_random_seed(11)
    DATA.mkdir(exist_ok=True)
    for name, build in [("mlp", mlp), ("cnn", cnn), ("rnn", rnn)]:
        write(name, build(), rng)
    keras3_export()
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    print(f"wrote {DATA} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
