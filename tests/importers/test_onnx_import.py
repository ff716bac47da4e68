"""ONNX files in: real third-party graphs (the ONNX package's own PyTorch-made test models) and hostile ones."""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelkeep import build  # noqa: E402
from modelkeep.data.limits import DEFAULT_LIMITS, ReaderLimits  # noqa: E402
from modelkeep.errors import FormatError, ModelkeepError  # noqa: E402
from modelkeep.importers.onnx_file import READER  # noqa: E402

CORPUS = Path(onnx.__file__).parent / "backend" / "test" / "data"
MODELS = sorted(glob.glob(str(CORPUS / "pytorch-*" / "*" / "model.onnx")))


def _run(imported, inputs):
    module = build(imported.spec)
    module.load_state_dict(imported.tensors, strict=True)
    module.eval()
    with torch.no_grad():
        out = module(*[torch.from_numpy(x) for x in inputs])
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _test_data(model_path: str):
    folder = Path(model_path).parent / "test_data_set_0"
    load = lambda pattern: [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(folder.glob(pattern))]
    return load("input_*.pb"), load("output_*.pb")


@pytest.mark.skipif(not MODELS, reason="the onnx package ships no backend test data here")
def test_the_onnx_packages_pytorch_models_import_with_their_recorded_outputs():
    """Every model either imports and reproduces the outputs recorded beside it, or is refused by a typed error."""
    reproduced, refused = [], []
    for path in MODELS:
        try:
            imported = READER.read(Path(path), DEFAULT_LIMITS)
        except ModelkeepError as exc:
            assert str(exc) and "\n" not in str(exc)
            refused.append(Path(path).parent.name)
            continue
        inputs, expected = _test_data(path)
        outputs = _run(imported, inputs)
        for got, want in zip(outputs, expected):
            np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=1e-4, err_msg=path)
        reproduced.append(Path(path).parent.name)
    assert len(reproduced) >= 45, reproduced
    for name in ("test_Conv2d_depthwise_with_multiplier", "test_Linear_no_bias", "test_Embedding",
                 "test_BatchNorm2d_eval", "test_operator_concat2", "test_operator_flatten"):
        assert name in reproduced


def test_a_graph_exported_by_torch_comes_back_as_the_same_function(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3, stride=2, groups=2), torch.nn.Flatten(), torch.nn.Linear(6 * 1 * 1, 5),
        torch.nn.Softmax(dim=-1),
    ).eval()
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    x = torch.randn(3, 1, 6, 6)
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["image"], output_names=["probs"], dynamo=False,
                      dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}})
    imported = READER.read(path, DEFAULT_LIMITS)
    assert imported.spec.final_activation() == "softmax"
    assert READER.sniff(path, path.read_bytes()[:64])
    (out,) = _run(imported, [x.numpy()])
    np.testing.assert_allclose(out.numpy(), net(x).detach().numpy(), atol=1e-6)


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _float(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _raw(name, dims, data):
    """A tensor that declares ``dims`` but carries ``data`` (onnx.helper would refuse to make it)."""
    tensor = TensorProto()
    tensor.name, tensor.data_type, tensor.raw_data = name, TensorProto.FLOAT, data
    tensor.dims.extend(dims)
    return tensor


def test_an_initializer_that_declares_more_than_it_carries_is_refused_before_allocating(tmp_path):
    weight = _raw("w", [100_000, 100_000], b"\0" * 16)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_float("x", ["n", 100_000])],
                   [_float("y", ["n", 100_000])], [weight])
    path = tmp_path / "giant.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(FormatError, match="10,000,000,000 elements"):
        READER.read(path, DEFAULT_LIMITS)
    small = _raw("w", [4, 4], b"\0" * 16)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_float("x", ["n", 4])], [_float("y", ["n", 4])],
                   [small])
    path.write_bytes(model.SerializeToString())
    with pytest.raises(FormatError, match="carries 16 bytes instead of 64"):
        READER.read(path, ReaderLimits())


def test_external_data_is_never_followed(tmp_path):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], vals=[1.0, 2.0, 3.0, 4.0])
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../../etc/passwd"
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_float("x", ["n", 2])], [_float("y", ["n", 2])],
                   [weight])
    path = tmp_path / "external.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(FormatError, match="external data file"):
        READER.read(path, DEFAULT_LIMITS)


def test_unknown_operators_and_garbage_are_refused_with_one_line(tmp_path):
    model = _model([helper.make_node("Exp", ["x"], ["y"], name="exp_node")], [_float("x", ["n", 3])],
                   [_float("y", ["n", 3])])
    path = tmp_path / "exp.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(FormatError, match="'exp_node' \\(Exp\\): operator 'Exp' has no modelkeep layer"):
        READER.read(path, DEFAULT_LIMITS)
    path.write_bytes(b"\x08\x07\x3a" + b"\xff" * 100)
    with pytest.raises(FormatError, match="not a readable ONNX model"):
        READER.read(path, DEFAULT_LIMITS)


def test_a_scikit_learn_pipeline_from_onnxruntime_is_refused_by_name():
    """onnxruntime ships logreg_iris.onnx: ONNX-ML operators, not a neural network."""
    ort = pytest.importorskip("onnxruntime")
    path = Path(ort.__file__).parent / "datasets" / "logreg_iris.onnx"
    if not path.exists():
        pytest.skip("onnxruntime ships no datasets here")
    with pytest.raises(FormatError, match="LinearClassifier"):
        READER.read(path, DEFAULT_LIMITS)


class _Gate(torch.nn.Module):
    """Squeeze-and-excitation style: x * sigmoid(conv(mean(x))) — ONNX Mul of two computed values."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.squeeze = torch.nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.squeeze(torch.nn.functional.adaptive_avg_pool2d(x, 1)))


def test_padding_gates_and_global_max_pooling_come_back_too(tmp_path):
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.ZeroPad2d((1, 0, 2, 1)), torch.nn.Conv2d(2, 4, 3), _Gate(4),
        torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 1),
    ).eval()
    x = torch.randn(2, 2, 9, 7)
    path = tmp_path / "gated.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, dynamic_axes={"input": {0: "batch"}}, input_names=["input"])
    imported = READER.read(path, DEFAULT_LIMITS)
    kinds = {layer.kind_name for layer in imported.spec.layers}
    assert {"ZeroPadding2D", "Multiply", "GlobalMaxPool", "AvgPool2D"} <= kinds, kinds
    (out,) = _run(imported, [x.numpy()])
    np.testing.assert_allclose(out.numpy(), net(x).detach().numpy(), atol=1e-6)


@pytest.mark.parametrize("nodes, constants", [
    ([helper.make_node("ConstantOfShape", ["shape"], ["big"])], {"shape": np.array([100_000, 100_000])}),
    ([helper.make_node("Mul", ["col", "row"], ["big"])],
     {"col": np.ones((50_000, 1), np.float32), "row": np.ones((1, 50_000), np.float32)}),
])
def test_constant_folding_that_would_expand_is_refused_before_allocating(tmp_path, nodes, constants):
    """Broadcasting two small constants, or a declared shape, could make gigabytes: refused from the shapes."""
    initializers = [numpy_helper.from_array(value, name) for name, value in constants.items()]
    graph_nodes = nodes + [helper.make_node("Add", ["x", "big"], ["y"])]
    model = _model(graph_nodes, [_float("x", ["n", 4])], [_float("y", ["n", 4])], initializers)
    path = tmp_path / "expanding.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(FormatError, match="would fold to 2,500,000,000 elements|would fold to 10,000,000,000 elements"):
        READER.read(path, DEFAULT_LIMITS)
