"""``modelkeep.export_onnx`` on the four kinds of task: the file computes what ``predict`` computes.

Each task's model is trained briefly and saved; the export is checked in onnxruntime by the exporter
itself (the maximum absolute difference it reports) and again here, on fresh inputs, against the loaded
model's raw outputs and, with ``probabilities=True``, against ``predict``'s probabilities. The affine
preprocessing of three tasks is folded into the graph: the ONNX file takes the raw inputs ``predict`` takes.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import onnx
import pytest

import modelkeep
from export_tasks import TASKS, fresh_inputs, raw_outputs, run_onnx, train_and_save
from modelkeep import ExportError, export_onnx, load


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    return {task: train_and_save(task, folder / f"{task}.safetensors") for task in TASKS}


@pytest.fixture(scope="module")
def exports(task_files, tmp_path_factory):
    """Each task exported once, with the probabilities output where there are classes."""
    folder = tmp_path_factory.mktemp("onnx")
    return {task: export_onnx(path, folder / f"{task}.onnx", probabilities=task != "regression")
            for task, path in task_files.items()}


@pytest.mark.parametrize("task", list(TASKS))
def test_onnx_outputs_equal_the_models_raw_outputs_and_predicts_probabilities(task, task_files, exports):
    result = exports[task]
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-5
    assert result.check_rows > 0 and result.path.is_file()
    model = load(task_files[task])
    x = fresh_inputs(task, n=7)
    outputs = run_onnx(result.path, x)
    name = model.manifest.signature["outputs"][0]["name"]
    np.testing.assert_allclose(outputs[name], raw_outputs(model, x), atol=1e-5, rtol=0)
    prediction = model.predict(x)
    if prediction.probabilities is None:
        np.testing.assert_allclose(outputs[name], prediction.values, atol=1e-5, rtol=0)
    else:
        np.testing.assert_allclose(outputs["probabilities"], prediction.probabilities, atol=1e-5, rtol=0)


@pytest.mark.parametrize("task", list(TASKS))
def test_names_batch_axis_and_metadata_come_from_the_model(task, task_files, exports):
    result, model = exports[task], load(task_files[task])
    proto = onnx.load(str(result.path))
    signature = model.manifest.signature
    assert [i.name for i in proto.graph.input] == [entry["name"] for entry in signature["inputs"]]
    assert [o.name for o in proto.graph.output][0] == signature["outputs"][0]["name"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    expected_type = onnx.TensorProto.INT64 if task == "token_sequence" else onnx.TensorProto.FLOAT
    assert proto.graph.input[0].type.tensor_type.elem_type == expected_type
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["modelkeep.postprocessing"]) == model.postprocessor.to_dict()
    assert json.loads(meta["modelkeep.labels"]) == (list(model.labels) if model.labels else None)
    assert meta["modelkeep.source.content_hash"] == model.content_hash
    assert meta["modelkeep.preprocessing_folded"] == ("none" if task == "token_sequence" else "true")
    for rows in (1, 33):  # the batch axis is dynamic
        x = fresh_inputs(task, n=rows, seed=rows)
        assert next(iter(run_onnx(result.path, x).values())).shape[0] == rows


def test_folded_preprocessing_takes_raw_inputs(task_files, exports):
    """Regression's preprocessing (standardize, then x * 2 + 0.5) sits in the graph: fed raw inputs, the file
    equals predict on raw inputs, and differs from the bare network fed raw inputs."""
    model = load(task_files["regression"])
    x = fresh_inputs("regression", n=9)
    onnx_values = run_onnx(exports["regression"].path, x)["head"]
    np.testing.assert_allclose(onnx_values, model.predict(x).values, atol=1e-5, rtol=0)
    import torch

    with torch.no_grad():
        bare = model.module(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(bare - onnx_values)) > 1.0
    ops = {node.op_type for node in onnx.load(str(exports["regression"].path)).graph.node}
    assert {"Sub", "Div", "Mul"} <= ops


def test_preprocessing_that_cannot_be_folded_is_recorded_and_said(tmp_path):
    """A feature step that is not affine stays out of the graph: the file takes preprocessed inputs, the export
    says so, and its metadata carries the steps."""
    from modelkeep import fit
    from modelkeep.data import dataset_from_arrays
    from modelkeep.nn import build
    from modelkeep.spec import load_spec

    class Log1p:
        def fit(self, x):
            return self

        def transform(self, x):
            return np.log1p(np.asarray(x, dtype=np.float32))

        def to_dict(self):
            return {"type": "log1p"}

    make, spec, loss, _ = TASKS["multiclass"]
    x, y = make(np.random.default_rng(0), 64)
    result = fit(build(load_spec(spec), seed=0), dataset_from_arrays(x, y), epochs=1, loss=loss, progress=False)
    result = replace(result, preprocessing=Log1p())
    exported = export_onnx(result, tmp_path / "m.onnx")
    assert exported.preprocessing_folded is False
    assert any("could not be folded" in note for note in exported.notes)
    meta = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    assert meta["modelkeep.preprocessing_folded"] == "false"
    assert json.loads(meta["modelkeep.preprocessing"]) == {"type": "log1p"}
    fresh = fresh_inputs("multiclass")
    import torch

    with torch.no_grad():
        expected = result.model.eval()(torch.from_numpy(Log1p().transform(fresh))).numpy()
    np.testing.assert_allclose(run_onnx(exported.path, Log1p().transform(fresh))["head"], expected, atol=1e-5)


def test_a_difference_beyond_the_tolerance_fails_loudly_and_writes_nothing(task_files, tmp_path):
    out = tmp_path / "lm.onnx"
    with pytest.raises(ExportError, match=r"max abs diff .* tolerance 0\b.*nothing was written"):
        export_onnx(task_files["token_sequence"], out, tolerance=0.0, data=fresh_inputs("token_sequence", n=64))
    assert os.listdir(tmp_path) == []  # neither the file nor a temporary (test_export_cli: an earlier file stays)


def test_static_batch_real_data_and_no_check(task_files, tmp_path):
    x = fresh_inputs("multiclass", n=20, seed=5)
    fixed = export_onnx(task_files["multiclass"], tmp_path / "fixed.onnx", dynamic_batch=False, data=x)
    assert fixed.check_inputs == "data" and fixed.check_rows == 20 and fixed.max_abs_diff <= 1e-5
    dims = onnx.load(str(fixed.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 4]
    unchecked = export_onnx(task_files["multiclass"], tmp_path / "unchecked.onnx", check=False, opset=18)
    assert unchecked.max_abs_diff is None and unchecked.opset == 18
    assert "parity not checked" in "\n".join(unchecked.summary())


def test_a_built_module_and_a_loaded_model_export_too(task_files, tmp_path):
    from modelkeep.nn import build
    from modelkeep.zoo import get_spec

    loaded = export_onnx(load(task_files["binary_one_logit"]), tmp_path / "loaded.onnx")
    assert loaded.preprocessing_folded is True and loaded.max_abs_diff <= 1e-5
    module = build(get_spec("mlp", input_features=6, hidden=[5], num_classes=3), seed=0)
    result = modelkeep.export_onnx(module, tmp_path / "mlp.onnx")
    assert result.inputs and result.max_abs_diff <= 1e-5 and result.preprocessing_folded is None
    assert module.training  # the caller's module keeps its mode
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert meta["modelkeep.postprocessing"] == "null"


def test_bad_arguments_are_refused_before_anything_is_written(task_files, tmp_path):
    from modelkeep.errors import ConfigError, DataError

    with pytest.raises(ConfigError, match="quantize"):
        export_onnx(task_files["multiclass"], tmp_path / "a.onnx", quantize="int4")
    with pytest.raises(ConfigError, match="probabilities"):
        export_onnx(task_files["regression"], tmp_path / "a.onnx", probabilities=True)
    with pytest.raises(DataError, match="shape"):
        export_onnx(task_files["multiclass"], tmp_path / "a.onnx", data=np.zeros((3, 5), np.float32))
    with pytest.raises(DataError, match="fractional"):
        export_onnx(task_files["token_sequence"], tmp_path / "a.onnx", data=np.full((2, 5), 0.5))
    assert os.listdir(tmp_path) == []


class TwoLayer(__import__("torch").nn.Module):
    """A user-defined class (no spec): its file records the signature measured on an example input."""

    def __init__(self, features: int = 4, classes: int = 3) -> None:
        import torch

        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(features, 8), torch.nn.Tanh(), torch.nn.Linear(8, classes))

    def forward(self, x):
        return self.body(x)


def test_a_user_class_file_exports_with_its_recorded_signature(tmp_path):
    import torch

    from modelkeep import save

    torch.manual_seed(0)
    path = save(TwoLayer(), tmp_path / "user.safetensors", example_input=torch.zeros(2, 4))
    model = load(path, model_class=TwoLayer)
    result = export_onnx(model, tmp_path / "user.onnx", data=fresh_inputs("multiclass", n=10))
    assert result.inputs == ("input",) and result.outputs == ("output",) and result.max_abs_diff <= 1e-5
    x = fresh_inputs("multiclass", n=3, seed=1)
    np.testing.assert_allclose(run_onnx(result.path, x)["output"], raw_outputs(model, x), atol=1e-5)
    with pytest.raises(modelkeep.errors.ConfigError, match="pass data="):
        export_onnx(TwoLayer(), tmp_path / "bare.onnx")
    assert export_onnx(TwoLayer(), tmp_path / "bare.onnx", data=x).max_abs_diff <= 1e-5
