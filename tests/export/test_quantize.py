"""int8 quantization of ONNX exports: the file shrinks, and given data with targets the accuracy change is
measured in onnxruntime, float against int8, on a real dataset (scikit-learn's digits)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from modelkeep import export_onnx, fit, save
from modelkeep.cli.main import main
from modelkeep.data import Standardize, load_dataset, split_dataset
from modelkeep.nn import build
from modelkeep.spec import load_spec

DENSE = {"layers": [{"kind": "Input", "name": "pixels", "shape": [64]},
                    {"kind": "Dense", "units": 128, "activation": "relu"},
                    {"kind": "Dense", "name": "logits", "units": 10}]}
CONV = {"layers": [{"kind": "Input", "name": "image", "shape": [1, 8, 8]},
                   {"kind": "Conv2D", "filters": 16, "kernel_size": 3, "padding": "same", "activation": "relu"},
                   {"kind": "MaxPool2D", "pool_size": 2},
                   {"kind": "Flatten"},
                   {"kind": "Dense", "units": 64, "activation": "relu"},
                   {"kind": "Dense", "name": "logits", "units": 10}]}


@pytest.fixture(scope="module")
def digits():
    return split_dataset(load_dataset("digits"), seed=0)


def _trained(spec, splits, folder, shape):
    from dataclasses import replace

    train = replace(splits.train, x=splits.train.x.reshape(len(splits.train), *shape))
    result = fit(build(load_spec(spec), seed=0), train, epochs=6, batch_size=32, learning_rate=0.01,
                 preprocessing=Standardize(per_feature=False), progress=False, seed=0)
    return save(result, folder / "model.safetensors")


@pytest.fixture(scope="module")
def dense_file(digits, tmp_path_factory):
    return _trained(DENSE, digits, tmp_path_factory.mktemp("dense"), (64,))


def test_dynamic_int8_shrinks_a_dense_model_and_reports_the_accuracy_change(dense_file, digits, tmp_path):
    test = digits.test
    result = export_onnx(dense_file, tmp_path / "int8.onnx", quantize="int8", data=(test.x, test.y))
    report = result.quantization
    assert report.method == "dynamic"
    assert report.int8_bytes < 0.4 * report.float_bytes and result.size_bytes == report.int8_bytes
    assert result.path.stat().st_size == report.int8_bytes
    assert report.metric == "accuracy" and report.samples == len(test)
    assert report.float_metric > 0.85 and abs(report.int8_metric - report.float_metric) < 0.05
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert "MatMulInteger" in ops
    text = "\n".join(result.summary())
    assert "accuracy on" in text and "change" in text


def test_a_conv_model_given_data_is_calibrated_statically(digits, tmp_path):
    path = _trained(CONV, digits, tmp_path, (1, 8, 8))
    result = export_onnx(path, tmp_path / "int8.onnx", quantize="int8", data=digits.test)  # a Dataset: by class name
    report = result.quantization
    assert report.method == "static" and report.int8_bytes < 0.5 * report.float_bytes
    assert report.float_metric > 0.85 and abs(report.int8_metric - report.float_metric) < 0.05
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert meta["modelkeep.quantization"].startswith("int8 static")


def test_without_targets_the_size_change_is_reported_and_accuracy_is_not(dense_file, tmp_path):
    result = export_onnx(dense_file, tmp_path / "int8.onnx", quantize="int8")
    assert result.quantization.metric is None and result.quantization.size_ratio < 0.4
    assert any("give data with targets" in line for line in result.summary())


def test_cli_quantize_with_data_reports_the_accuracy_change_on_digits(dense_file, tmp_path, capsys):
    out = tmp_path / "int8.onnx"
    assert main(["export", str(dense_file), "--format", "onnx", str(out), "--quantize", "int8", "--data", "digits",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    quantization = printed["quantization"]
    assert quantization["samples"] == 1797 and quantization["metric"] == "accuracy"
    assert quantization["int8_bytes"] < quantization["float_bytes"] and out.stat().st_size == quantization["int8_bytes"]
    assert quantization["metric_change"] == pytest.approx(quantization["int8_metric"] - quantization["float_metric"])
    assert printed["check_inputs"] == "data" and printed["max_abs_diff"] <= 1e-4
    assert main(["export", str(dense_file), str(tmp_path / "b.onnx"), "--quantize", "int8", "--data", "digits"]) == 0
    lines = capsys.readouterr().out
    assert "int8 (dynamic quantization)" in lines and "accuracy on 1797 samples: float" in lines
