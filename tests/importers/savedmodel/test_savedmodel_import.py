"""TensorFlow SavedModel folders written by real tf.keras (fixtures in data/, made by make_fixtures.py).

Read without TensorFlow: the Keras config from keras_metadata.pb, the weights from the tensor bundle, matched
to layers through the checkpoint's object graph. Checked against what tf.keras itself reported when it wrote
them: every layer's get_weights(), and predictions within 1e-5.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import modelkeep
from bundle_writer import field
from modelkeep.data.limits import DEFAULT_LIMITS
from modelkeep.errors import FormatError
from modelkeep.importers.base import READERS, SNIFF_BYTES, readers
from modelkeep.importers.savedmodel import (SavedModelReader, layer_weight_keys, plain_json, read_keras_metadata,
                                            read_object_graph)
from modelkeep.importers.tf_bundle import BundleReader

DATA = Path(__file__).parent / "data"
FIXTURES = ["mlp", "cnn", "rnn"]
ATOL = 1e-5


def stored(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{name}.npz") as archive:
        return {key: archive[key] for key in archive.files}


def keras_weights(name: str) -> dict[str, list[np.ndarray]]:
    """Layer name -> get_weights(), as tf.keras reported it when writing the fixture."""
    out: dict[str, list[np.ndarray]] = {}
    for key, value in stored(name).items():
        if key.startswith("layer:"):
            _, layer, _ = key.split(":")
            out.setdefault(layer, []).append(value)
    return out


@pytest.mark.parametrize("name", [*FIXTURES, "keras3_export"])
def test_sniffed_from_the_folder_by_this_reader_only(name: str) -> None:
    folder = DATA / name
    claimed = [reader.format for reader in readers() if reader.sniff(folder, b"")]
    assert claimed == ["tf-savedmodel"]
    index = folder / "variables" / "variables.index"
    assert not READERS.get("tf-savedmodel").sniff(index, index.read_bytes()[:SNIFF_BYTES])


@pytest.mark.parametrize("name", FIXTURES)
def test_weights_match_layers_in_get_weights_order(name: str) -> None:
    folder = DATA / name
    bundle = BundleReader(folder / "variables" / "variables", DEFAULT_LIMITS)
    keys = layer_weight_keys(read_object_graph(bundle), read_keras_metadata(folder), name)
    expected = keras_weights(name)
    assert list(keys) == list(expected)
    for layer, arrays in expected.items():
        got = [bundle.read(key) for key in keys[layer]]
        assert len(got) == len(arrays), layer
        for ours, theirs in zip(got, arrays):
            np.testing.assert_array_equal(ours, theirs, err_msg=layer)


def _predict(imported, inputs: np.ndarray) -> np.ndarray:
    net = modelkeep.build(imported.spec)
    result = net.load_state_dict(imported.tensors, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    net.eval()
    x = torch.from_numpy(inputs)
    with torch.no_grad():
        return net(x.long() if x.dtype != torch.float32 else x).numpy()


@pytest.mark.parametrize("name", FIXTURES)
def test_predictions_equal_tf_keras(name: str) -> None:
    imported = SavedModelReader().read(DATA / name, None)
    assert imported.format == "tf-savedmodel" and imported.details["keras_version"].startswith("2.")
    data = stored(name)
    np.testing.assert_allclose(_predict(imported, data["inputs"]), data["outputs"], atol=ATOL, rtol=0)


def test_optimizer_state_is_left_out_with_a_note() -> None:
    imported = SavedModelReader().read(DATA / "mlp", None)
    assert imported.details["skipped_variables"] == 10
    assert any("optimizer/_iterations" in note for note in imported.notes)


def test_import_model_writes_a_modelkeep_file(tmp_path: Path) -> None:
    out = tmp_path / "cnn.safetensors"
    report = modelkeep.import_model(DATA / "cnn", out)
    assert report is not None and out.is_file()
    data = stored("cnn")
    model = modelkeep.load(out)
    with torch.no_grad():
        got = model.module(torch.from_numpy(data["inputs"])).numpy()
    np.testing.assert_allclose(got, data["outputs"], atol=ATOL, rtol=0)


def test_keras3_export_is_refused_with_what_to_do() -> None:
    with pytest.raises(FormatError, match=r"no keras_metadata.pb.*model.export\(\).*\.keras"):
        SavedModelReader().read(DATA / "keras3_export", None)


def _metadata(nodes: list[tuple[str, str, dict]]) -> bytes:
    return b"".join(field(1, field(3, path.encode()) + field(4, ident.encode()) + field(5, json.dumps(doc).encode()))
                    for path, ident, doc in nodes)


def _copy(tmp_path: Path, name: str = "mlp") -> Path:
    folder = tmp_path / name
    shutil.copytree(DATA / name, folder)
    return folder


def test_subclassed_model_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "keras_metadata.pb").write_bytes(_metadata([("root", "_tf_keras_model", {"class_name": "MyNet"})]))
    with pytest.raises(FormatError, match="'MyNet' without a Keras model config"):
        SavedModelReader().read(folder, None)


def test_metadata_naming_a_layer_missing_from_the_variables_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    original = read_keras_metadata(folder)
    root = json.loads(original[0].metadata)
    bogus = [("root", original[0].identifier, root), ("root.layer_with_weights-7", "_tf_keras_layer", {"name": "x"})]
    (folder / "keras_metadata.pb").write_bytes(_metadata(bogus))
    with pytest.raises(FormatError, match="not in the variables' object graph"):
        SavedModelReader().read(folder, None)


@pytest.mark.parametrize("damage, message", [(b"\xff" * 12, "varint"), (b"\x0a\x80\x80\x80\x80\x08", "declares")])
def test_damaged_metadata_is_refused(tmp_path: Path, damage: bytes, message: str) -> None:
    folder = _copy(tmp_path)
    (folder / "keras_metadata.pb").write_bytes(damage)
    with pytest.raises(FormatError, match=message):
        SavedModelReader().read(folder, None)


def test_saved_model_json_encodings_become_plain() -> None:
    encoded = {"shape": {"class_name": "__tuple__", "items": [None, {"class_name": "__tuple__", "items": [1]}]},
               "s": {"class_name": "TensorShape", "items": [None, 3]}, "b": {"class_name": "__bytes__", "value": "x"},
               "layer": {"class_name": "Dense", "config": {"units": 2}}}
    assert plain_json(encoded) == {"shape": [None, [1]], "s": [None, 3], "b": "x",
                                   "layer": {"class_name": "Dense", "config": {"units": 2}}}
    deep: object = 1
    for _ in range(80):
        deep = [deep]
    with pytest.raises(FormatError, match="nested"):
        plain_json(deep)


def _legacy_saved_model(folder: Path) -> bytes:
    """``saved_model.pb`` as TensorFlow < 2.5 wrote it for ``folder``: the Keras metadata inside the object graph.

    Built from the fixture's own object graph and keras_metadata.pb (the field numbers are those of TensorFlow's
    saved_model.proto, meta_graph.proto and saved_object_graph.proto); a graph_def stands in for the graphs.
    """
    bundle = BundleReader(folder / "variables" / "variables", DEFAULT_LIMITS)
    graph = read_object_graph(bundle)
    metadata = {node.node_id: node for node in read_keras_metadata(folder)}
    objects = b""
    for node_id, node in enumerate(graph):
        body = b"".join(field(1, field(1, child) + field(2, name.encode())) for name, child in node.children)
        if node_id in metadata:
            meta = metadata[node_id]
            body += field(4, field(1, meta.identifier.encode()) + field(3, meta.metadata.encode()))
        objects += field(1, body)
    meta_graph = field(2, b"\x0a\x00" * 1000) + field(7, objects)
    return field(1, 1) + field(2, meta_graph)


@pytest.mark.parametrize("name", ["cnn", "rnn"])
def test_savedmodels_from_before_tensorflow_2_5_keep_metadata_in_saved_model_pb(tmp_path: Path, name: str) -> None:
    folder = _copy(tmp_path, name)
    (folder / "saved_model.pb").write_bytes(_legacy_saved_model(folder))
    (folder / "keras_metadata.pb").unlink()
    data = stored(name)
    imported = SavedModelReader().read(folder, None)
    np.testing.assert_allclose(_predict(imported, data["inputs"]), data["outputs"], atol=ATOL, rtol=0)


def test_tf_keras_model_saved_without_its_metadata_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """tf-keras's saved_model.pb names its Keras objects but (since TF 2.5) holds no config: as tf.saved_model.save
    leaves a tf.keras model when keras_metadata.pb is not written."""
    folder = _copy(tmp_path)
    (folder / "keras_metadata.pb").unlink()
    with pytest.raises(FormatError, match=r"tf.saved_model.save instead of model.save.*model.save\('model.keras'\)"):
        SavedModelReader().read(folder, None)


def test_random_damage_to_the_metadata_raises_only_modelkeep_errors(tmp_path: Path) -> None:
    folder = _copy(tmp_path, "cnn")
    original = (folder / "keras_metadata.pb").read_bytes()
    rng = np.random.default_rng(7)
    for _ in range(60):
        damaged = bytearray(original)
        for position in rng.integers(0, len(damaged), rng.integers(1, 4)):
            damaged[position] = int(rng.integers(0, 256))
        (folder / "keras_metadata.pb").write_bytes(bytes(damaged))
        try:
            SavedModelReader().read(folder, None)
        except modelkeep.errors.ModelkeepError:
            pass
