"""``export_keras``: the .keras files it writes load in real Keras 3 (torch backend) and predict as modelkeep does.

Every supported layer kind is exported in a small model, loaded with
``keras.saving.load_model`` and run on random inputs; its predictions must
equal the modelkeep network's raw outputs within 1e-5 (batch-norm running
statistics randomised first, so they matter). Keras is only a test dependency.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from modelkeep.errors import FormatError  # noqa: E402
from modelkeep.export.to_keras import export_keras, keras_order  # noqa: E402
from modelkeep.nn import build  # noqa: E402
from modelkeep.spec import LAYER_KINDS, ModelSpec  # noqa: E402
from modelkeep.zoo import ZOO  # noqa: E402

ATOL = 1e-5
# Keras's torch backend calls np.array(tensor) in a way NumPy 2 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _spec(shape, *layers, dtype="float32", name="m", outputs=None):
    data = {"name": name, "layers": [{"kind": "Input", "name": "x", "shape": list(shape), "dtype": dtype}, *layers]}
    if outputs:
        data["outputs"] = outputs
    return ModelSpec.from_dict(data)


def _randomise_statistics(module: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm) and sub.running_mean is not None:
                sub.running_mean.copy_(torch.randn(sub.running_mean.shape, generator=generator))
                sub.running_var.copy_(torch.rand(sub.running_var.shape, generator=generator) + 0.5)


def _inputs(spec: ModelSpec, batch: int = 3, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for layer in spec.inputs:
        shape = (batch, *spec.shapes[layer.name])
        if layer.kind.fields.dtype == "int64":
            arrays.append(rng.integers(0, 10, size=shape).astype("int64"))
        else:
            arrays.append(rng.normal(size=shape).astype("float32"))
    return arrays


def _check(spec_or_module, path, *, atol=ATOL):
    """Export, load in Keras, compare predictions; return the Keras model."""
    module = spec_or_module if isinstance(spec_or_module, torch.nn.Module) else build(spec_or_module, seed=0)
    module.eval()
    _randomise_statistics(module)
    assert export_keras(module, path) == path
    loaded = keras.saving.load_model(path)
    inputs = _inputs(module.spec)
    with torch.no_grad():
        expected = module(*(torch.from_numpy(x) for x in inputs))
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    got = loaded.predict(inputs[0] if len(inputs) == 1 else inputs, verbose=0)
    got = [got] if not isinstance(got, (list, tuple)) else list(got)
    assert len(got) == len(expected)
    for want, have in zip(expected, got):
        assert np.asarray(have).shape == tuple(want.shape)
        np.testing.assert_allclose(np.asarray(have), want.numpy(), atol=atol, rtol=0)
    return loaded


CASES = {
    "dense": ((6,), [{"kind": "Dense", "units": 4, "activation": "tanh"}, {"kind": "Dense", "units": 3,
                                                                          "use_bias": False}]),
    "dense_on_sequence": ((3, 6), [{"kind": "Dense", "units": 5, "activation": "leaky_relu"}]),
    "conv1d": ((4, 16), [{"kind": "Conv1D", "filters": 6, "kernel_size": 3, "stride": 2, "padding": 1}]),
    "conv1d_same_groups": ((4, 10), [{"kind": "Conv1D", "filters": 8, "kernel_size": 4, "padding": "same",
                                      "dilation": 2, "groups": 2, "use_bias": False, "activation": "gelu"}]),
    "conv2d": ((3, 9, 9), [{"kind": "Conv2D", "filters": 4, "kernel_size": 3, "stride": 2, "padding": 1,
                            "activation": "relu"}]),
    "conv2d_same": ((4, 8, 8), [{"kind": "Conv2D", "filters": 4, "kernel_size": [3, 2], "padding": "same",
                                 "groups": 4, "use_bias": False}]),
    "conv2d_dilated": ((2, 12, 12), [{"kind": "Conv2D", "filters": 3, "kernel_size": 3, "dilation": 2,
                                      "activation": "elu"}]),
    "conv2d_asymmetric": ((2, 9, 7), [{"kind": "Conv2D", "filters": 5, "kernel_size": [3, 1], "stride": [2, 1],
                                       "padding": [1, 0]}]),
    "pools_1d": ((3, 9), [{"kind": "MaxPool1D"}, {"kind": "AvgPool1D", "pool_size": 3, "stride": 1,
                                                   "padding": 1}]),
    "pools_2d": ((3, 9, 7), [{"kind": "AvgPool2D", "pool_size": 3, "stride": 2, "padding": 1},
                             {"kind": "MaxPool2D", "pool_size": [2, 1]}]),
    "maxpool_padded_after_relu": ((2, 8, 8), [{"kind": "Conv2D", "filters": 3, "kernel_size": 1,
                                               "activation": "relu"},
                                              {"kind": "MaxPool2D", "pool_size": 3, "stride": 2, "padding": 1}]),
    "pool_ceil_same_shape": ((3, 8, 8), [{"kind": "MaxPool2D", "ceil_mode": True}]),
    "adaptive_pool": ((3, 6, 4), [{"kind": "AdaptiveAvgPool2D", "output_size": [3, 2]}]),
    "adaptive_pool_global": ((3, 5, 5), [{"kind": "AdaptiveAvgPool2D", "output_size": 1}, {"kind": "Flatten"}]),
    "adaptive_pool_upsample": ((2, 1, 1), [{"kind": "AdaptiveAvgPool2D", "output_size": [3, 2]}]),
    "adaptive_pool_mixed": ((2, 4, 1), [{"kind": "AdaptiveAvgPool2D", "output_size": [2, 3]}]),
    "global_avg_2d": ((3, 4, 5), [{"kind": "GlobalAvgPool"}]),
    "global_avg_1d": ((3, 7), [{"kind": "GlobalAvgPool"}]),
    "global_avg_channels_last": ((6, 4), [{"kind": "GlobalAvgPool", "data_format": "channels_last"}]),
    "flatten_after_conv": ((2, 5, 4), [{"kind": "Conv2D", "filters": 3, "kernel_size": 2}, {"kind": "Flatten"},
                                       {"kind": "Dense", "units": 4}]),
    "reshape": ((12,), [{"kind": "Reshape", "shape": [3, -1]}, {"kind": "Dense", "units": 2}]),
    "dropout": ((8,), [{"kind": "Dropout", "rate": 0.5}, {"kind": "Dense", "units": 2}]),
    "batch_norm_1d": ((6,), [{"kind": "BatchNorm1D", "momentum": 0.01}]),
    "batch_norm_1d_sequence": ((3, 5), [{"kind": "BatchNorm1D", "affine": False}]),
    "batch_norm_2d": ((3, 4, 4), [{"kind": "BatchNorm2D", "epsilon": 0.001}]),
    "layer_norm": ((4, 6), [{"kind": "LayerNorm"}, {"kind": "LayerNorm", "use_bias": False},
                            {"kind": "LayerNorm", "elementwise_affine": False, "epsilon": 1e-3}]),
    "leaky_relu_alpha": ((4,), [{"kind": "Activation", "function": "leaky_relu", "alpha": 0.2}]),
    "elu_alpha": ((4,), [{"kind": "Activation", "function": "elu", "alpha": 0.5}]),
    "lstm": ((5, 3), [{"kind": "LSTM", "units": 4}]),
    "lstm_stacked_bidirectional": ((5, 3), [{"kind": "LSTM", "units": 4, "num_layers": 2, "bidirectional": True,
                                             "return_sequences": True}]),
    "lstm_bidirectional_last": ((5, 3), [{"kind": "LSTM", "units": 3, "bidirectional": True, "use_bias": False}]),
    "gru_bidirectional": ((6, 3), [{"kind": "GRU", "units": 5, "bidirectional": True}]),
    "gru_stacked": ((6, 3), [{"kind": "GRU", "units": 2, "num_layers": 3, "return_sequences": True,
                              "use_bias": False}]),
    "embedding": ((7,), [{"kind": "Embedding", "num_embeddings": 20, "embedding_dim": 4, "padding_idx": 0},
                         {"kind": "GRU", "units": 3}]),
}
ACTIVATION_FUNCTIONS = ["relu", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "tanh", "softmax", "silu", "linear",
                        "relu6", "hard_sigmoid", "hard_silu", "softplus", "softsign", "mish"]
SHORTHANDS = ["ReLU", "LeakyReLU", "ELU", "SELU", "GELU", "Sigmoid", "Tanh", "Softmax", "SiLU", "ReLU6",
              "HardSigmoid", "HardSwish", "Softplus", "Mish"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_kind_predicts_as_modelkeep(case, tmp_path):
    shape, layers = CASES[case]
    dtype = "int64" if layers[0]["kind"] == "Embedding" else "float32"
    _check(_spec(shape, *layers, dtype=dtype), tmp_path / "m.keras")


def test_every_activation_function_and_shorthand(tmp_path):
    layers = [{"kind": "Activation", "function": fn} for fn in ACTIVATION_FUNCTIONS]
    layers += [{"kind": kind} for kind in SHORTHANDS]
    layers += [{"kind": "Dense", "units": 4, "activation": fn} for fn in ACTIVATION_FUNCTIONS]
    for index, layer in enumerate(layers):  # each on its own branch, so no function sees another's output only
        layer.update(name=f"a{index}", inputs=["x"])
    names = [layer["name"] for layer in layers]
    _check(_spec((3, 4), *layers, {"kind": "Concatenate", "name": "all", "axis": -1, "inputs": names}),
           tmp_path / "m.keras")


def test_graph_with_add_concatenate_and_two_outputs(tmp_path):
    spec = _spec((4, 6, 6),
                 {"kind": "Conv2D", "name": "a", "filters": 4, "kernel_size": 3, "padding": 1},
                 {"kind": "Conv2D", "name": "b", "filters": 2, "kernel_size": 1, "inputs": ["x"]},
                 {"kind": "Add", "name": "sum", "inputs": ["x", "a"]},
                 {"kind": "Concatenate", "name": "cat", "inputs": ["sum", "b"]},
                 {"kind": "GlobalAvgPool", "name": "pool"},
                 {"kind": "Dense", "name": "head", "units": 3},
                 {"kind": "Dense", "name": "aux", "units": 2, "inputs": ["pool"]},
                 outputs=["head", "aux"])
    loaded = _check(spec, tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:  # the order written is the order Keras rebuilds
        import json

        written = [layer["name"] for layer in json.loads(archive.read("config.json"))["config"]["layers"]]
    assert [layer.name for layer in loaded.layers] == written


@pytest.mark.skipif("Multiply" not in LAYER_KINDS or "Permute" not in LAYER_KINDS, reason="kinds not in this tree")
def test_multiply_permute_zero_padding_global_max(tmp_path):
    spec = _spec((3, 5, 4),
                 {"kind": "ZeroPadding2D", "name": "pad", "padding": [[0, 1], [2, 1]]},
                 {"kind": "GlobalMaxPool", "name": "gate"},
                 {"kind": "Multiply", "name": "scaled", "inputs": ["pad", "gate"]},
                 {"kind": "Permute", "name": "hwc", "dims": [1, 2, 0]},
                 {"kind": "Reshape", "name": "seq", "shape": [-1, 3]},
                 {"kind": "Permute", "name": "cl", "dims": [1, 0]},
                 {"kind": "ZeroPadding1D", "name": "pad1", "padding": [1, 2]},
                 {"kind": "GlobalMaxPool", "name": "last", "data_format": "channels_last"})
    _check(spec, tmp_path / "m.keras")


@pytest.mark.parametrize("name", ["lenet5", "mlp", "lstm_classifier", "resnet18"])
def test_zoo_model(name, tmp_path):
    entry = ZOO.get(name)
    _check(build(entry.spec(**entry.small), seed=0), tmp_path / f"{name}.keras")


def test_from_a_saved_file_and_a_loaded_model(tmp_path):
    from modelkeep.artifact import load, save

    entry = ZOO.get("lenet5")
    module = build(entry.spec(**entry.small), seed=3).eval()
    path = save(module, tmp_path / "lenet.safetensors")
    x = _inputs(module.spec)[0]
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    for source, out in ((path, tmp_path / "a.keras"), (load(path), tmp_path / "b.keras")):
        export_keras(source, out)
        got = keras.saving.load_model(out).predict(x, verbose=0)
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_keras_order_matches_keras_for_branches():
    # Keras orders layers by depth from the outputs, not as they were declared
    from modelkeep.export.to_keras import convert

    spec = _spec((5,), {"kind": "Embedding", "name": "e", "num_embeddings": 10, "embedding_dim": 4},
                 {"kind": "GRU", "name": "g", "units": 2},
                 {"kind": "LayerNorm", "name": "ln", "inputs": ["e"]},
                 {"kind": "GlobalAvgPool", "name": "gap", "data_format": "channels_last"},
                 {"kind": "Concatenate", "name": "cat", "axis": -1, "inputs": ["g", "gap"]}, dtype="int64")
    graph, inputs, outputs = convert(spec, build(spec, seed=0))
    assert keras_order(graph.layers, inputs, outputs) == ["x", "e", "ln", "g", "gap", "cat"]


REFUSED = {
    "attention": ((5, 8), [{"kind": "MultiHeadAttention", "name": "bad", "num_heads": 2}], "MultiHeadAttention"),
    "transformer": ((5, 8), [{"kind": "TransformerEncoder", "name": "bad", "num_heads": 2, "ff_dim": 8}],
                    "TransformerEncoder"),
    "positional": ((5, 4), [{"kind": "PositionalEmbedding", "name": "bad", "max_length": 8}], "PositionalEmbedding"),
    "gelu_tanh": ((4,), [{"kind": "Dense", "name": "bad", "units": 2, "activation": "gelu_tanh"}], "exactly"),
    "maxpool_padding": ((2, 6, 6), [{"kind": "MaxPool2D", "name": "bad", "pool_size": 3, "padding": 1}], "-inf"),
    "ceil_mode": ((3, 9, 9), [{"kind": "MaxPool2D", "name": "bad", "ceil_mode": True}], "ceil_mode"),
    "stride_and_dilation": ((2, 12, 12), [{"kind": "Conv2D", "name": "bad", "filters": 2, "stride": 2,
                                           "dilation": 2}], "dilation"),
    "batch_statistics": ((4,), [{"kind": "BatchNorm1D", "name": "bad", "track_running_stats": False}],
                         "track_running_stats"),
    "adaptive_unequal": ((2, 5, 5), [{"kind": "AdaptiveAvgPool2D", "name": "bad", "output_size": 3}], "unequal"),
    "tied": ((4,), [{"kind": "Embedding", "name": "emb", "num_embeddings": 10, "embedding_dim": 6},
                    {"kind": "Dense", "name": "bad", "units": 10, "tied_to": "emb"}], "tied"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unsupported_layer_is_refused_and_nothing_is_written(case, tmp_path):
    shape, layers, words = REFUSED[case]
    dtype = "int64" if layers[0]["kind"] == "Embedding" else "float32"
    module = build(_spec(shape, *layers, dtype=dtype), seed=0)
    with pytest.raises(FormatError, match=words) as caught:
        export_keras(module, tmp_path / "m.keras")
    assert "'bad'" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_kept_when_refused(tmp_path):
    out = tmp_path / "m.keras"
    out.write_bytes(b"before")
    module = build(_spec((5, 8), {"kind": "MultiHeadAttention", "num_heads": 2}), seed=0)
    with pytest.raises(FormatError):
        export_keras(module, out)
    assert out.read_bytes() == b"before"
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


def test_shared_layer_user_class_and_suffix_are_refused(tmp_path):
    shared = _spec((4,), {"kind": "Dense", "name": "a", "units": 4},
                   {"kind": "Dense", "name": "b", "units": 4, "shares": "a"})
    with pytest.raises(FormatError, match="shares the weights of 'a'"):
        export_keras(build(shared, seed=0), tmp_path / "m.keras")
    with pytest.raises(FormatError, match="only models built from a spec"):
        export_keras(torch.nn.Linear(3, 2), tmp_path / "m.keras")
    with pytest.raises(FormatError, match=r"ends in \.keras"):
        export_keras(build(_spec((4,), {"kind": "Dense", "units": 2}), seed=0), tmp_path / "m.h5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["resnet18", "lstm_classifier"])
def test_round_trip_through_the_keras_importer(name, tmp_path):
    importers = pytest.importorskip("modelkeep.importers")
    if not hasattr(importers, "import_model"):
        pytest.skip("the Keras importer is not in this tree")
    from modelkeep.artifact import load

    entry = ZOO.get(name)
    module = build(entry.spec(**entry.small), seed=0).eval()
    _randomise_statistics(module)
    export_keras(module, tmp_path / "m.keras")
    importers.import_model(tmp_path / "m.keras", tmp_path / "back.safetensors")
    back = load(tmp_path / "back.safetensors").module
    x = torch.from_numpy(_inputs(module.spec)[0])
    with torch.no_grad():
        np.testing.assert_allclose(back(x).numpy(), module(x).numpy(), atol=ATOL, rtol=0)


def _pipeline(kind, x):
    from modelkeep.processing.preprocess import MinMaxScale, Pipeline, Rescale, Standardize

    steps = {"standardize": [Standardize()], "standardize_global": [Standardize(per_feature=False)],
             "min_max": [MinMaxScale()], "rescale_then_standardize": [Rescale(1 / 16, 0.5), Standardize()]}[kind]
    pipeline = Pipeline(steps) if len(steps) > 1 else steps[0]
    return pipeline.fit(x)


@pytest.mark.parametrize("kind", ["standardize", "standardize_global", "min_max", "rescale_then_standardize"])
def test_saved_preprocessing_is_folded_in(kind, tmp_path):
    from modelkeep.artifact import load, save

    module = build(_spec((2, 6, 6), {"kind": "Conv2D", "filters": 3, "kernel_size": 3, "activation": "relu"},
                         {"kind": "Flatten"}, {"kind": "Dense", "units": 4}), seed=0).eval()
    raw = np.random.default_rng(2).uniform(0, 16, size=(20, 2, 6, 6)).astype("float32")
    preprocessing = _pipeline(kind, raw)
    path = save(module, tmp_path / "m.safetensors", preprocessing=preprocessing)
    model = load(path)
    with torch.no_grad():
        expected = model.module(torch.from_numpy(model.preprocessing.transform(raw))).numpy()
    export_keras(path, tmp_path / "raw.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "raw.keras").predict(raw, verbose=0), expected,
                               atol=ATOL, rtol=0)
    export_keras(model, tmp_path / "bare.keras", preprocessing=False)  # the bare network takes preprocessed inputs
    bare = keras.saving.load_model(tmp_path / "bare.keras")
    np.testing.assert_allclose(bare.predict(model.preprocessing.transform(raw), verbose=0), expected, atol=ATOL, rtol=0)


def test_from_a_fit_result_with_its_preprocessing(tmp_path):
    from modelkeep.processing.preprocess import Standardize
    from modelkeep.train import fit

    rng = np.random.default_rng(4)
    x = rng.normal(5.0, 3.0, size=(48, 6)).astype("float32")
    y = (x[:, 0] > 5.0).astype("int64")
    module = build(_spec((6,), {"kind": "Dense", "units": 5, "activation": "relu"}, {"kind": "Dense", "units": 2}),
                   seed=0)
    result = fit(module, (x, y), epochs=1, batch_size=16, preprocessing=Standardize(), progress=False, seed=0)
    export_keras(result, tmp_path / "m.keras")
    result.model.eval()
    with torch.no_grad():
        expected = result.model(torch.from_numpy(result.preprocessing.transform(x))).numpy()
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "m.keras").predict(x, verbose=0), expected,
                               atol=ATOL, rtol=0)


def test_two_inputs(tmp_path):
    spec = ModelSpec.from_dict({"name": "two", "layers": [
        {"kind": "Input", "name": "tokens", "shape": [6], "dtype": "int64"},
        {"kind": "Input", "name": "extra", "shape": [3]},
        {"kind": "Embedding", "name": "embed", "num_embeddings": 10, "embedding_dim": 4, "inputs": ["tokens"]},
        {"kind": "LSTM", "name": "lstm", "units": 5},
        {"kind": "Dense", "name": "side", "units": 2, "activation": "sigmoid", "inputs": ["extra"]},
        {"kind": "Concatenate", "name": "both", "axis": -1, "inputs": ["side", "lstm"]},
        {"kind": "Dense", "name": "head", "units": 1},
    ]})
    loaded = _check(spec, tmp_path / "m.keras")
    assert [tensor.name for tensor in loaded.inputs] == ["tokens", "extra"]


def test_the_archive_is_laid_out_as_keras_writes_it(tmp_path):
    import io
    import json

    import h5py

    spec = _spec((3, 8, 8), {"kind": "Conv2D", "name": "a", "filters": 4, "kernel_size": 3, "padding": 1},
                 {"kind": "BatchNorm2D", "name": "bn"}, {"kind": "ReLU", "name": "relu"},
                 {"kind": "Conv2D", "name": "b", "filters": 4, "kernel_size": 1, "inputs": ["x"]},
                 {"kind": "Add", "name": "sum", "inputs": ["relu", "b"]}, {"kind": "Flatten", "name": "flat"},
                 {"kind": "Dense", "name": "fc", "units": 3})
    ours = tmp_path / "ours.keras"
    export_keras(build(spec, seed=0), ours)
    theirs = tmp_path / "theirs.keras"
    keras.saving.load_model(ours).save(theirs)  # what Keras itself writes for the same model

    def layout(path):
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            datasets = {}
            with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
                h5.visititems(lambda name, item: datasets.update({name: item.shape}) if isinstance(item, h5py.Dataset)
                              else None)
            return sorted(archive.namelist()), [(layer["class_name"], layer["name"])
                                                for layer in config["config"]["layers"]], datasets

    assert layout(ours)[2]['layers/conv2d/vars/0'] == (3, 3, 3, 4)  # HWIO
    assert layout(ours) == layout(theirs)
