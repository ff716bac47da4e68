"""Every layer kind, through every example it declares: adding a kind adds its tests.

For each example: the spec validates and round-trips through JSON; the built
module runs forward and backward; the inferred shape equals the real one; the
analytic parameter count equals the real ``numel`` and that of a meta-device
build (nothing allocated); the module survives ``save``/``load``.
"""
from __future__ import annotations

import math

import pytest
import torch

from modelkeep.errors import ShapeError, SpecError
from modelkeep.nn import build
from modelkeep.nn.init import initialize
from modelkeep.spec import INITIALIZERS, LAYER_KINDS, ModelSpec, count_parameters

CASES = [(name, i) for name in LAYER_KINDS.names() for i in range(max(1, len(LAYER_KINDS.get(name).examples)))]


def example_spec(kind_name: str, index: int) -> tuple[ModelSpec, dict]:
    cls = LAYER_KINDS.get(kind_name)
    example = cls.examples[index]
    if cls.arity == 0:
        return ModelSpec.from_dict({"layers": [{"kind": kind_name, "name": "x", **example["fields"]}]}), example
    dtype = example.get("dtype", "float32")  # one for every input, or a list: one per input
    dtypes = dtype if isinstance(dtype, list) else [dtype] * len(example["inputs"])
    layers = [{"kind": "Input", "name": f"in{i}", "shape": shape, "dtype": dtypes[i]}
              for i, shape in enumerate(example["inputs"])]
    layers.append({"kind": kind_name, "name": "x", "inputs": [f"in{i}" for i in range(len(layers))],
                   **example["fields"]})
    return ModelSpec.from_dict({"name": f"{kind_name}_{index}", "layers": layers}), example


def example_inputs(spec: ModelSpec, example: dict, batch: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for layer in spec.inputs:
        shape = (batch, *spec.shapes[layer.name])
        if layer.kind.fields.dtype == "int64":
            out.append(torch.randint(0, 5, shape, generator=gen))
        else:
            out.append(torch.randn(shape, generator=gen, requires_grad=True))
    return out


def test_every_kind_declares_an_example():
    missing = [name for name in LAYER_KINDS.names() if not LAYER_KINDS.get(name).examples]
    assert not missing, f"add an example to the 'examples' of {missing}"


@pytest.mark.parametrize("kind_name, index", CASES)
def test_build_forward_backward_and_shape(kind_name, index):
    spec, example = example_spec(kind_name, index)
    module = build(spec, seed=0)
    xs = example_inputs(spec, example)
    y = module(*xs)
    assert tuple(y.shape) == (3, *spec.output_shape), "shape inference must equal the real output shape"
    y.float().sum().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None, f"no gradient reached {name}"
    for x in xs:
        if x.requires_grad and kind_name not in ("Input",):
            assert x.grad is not None


@pytest.mark.parametrize("kind_name, index", CASES)
def test_count_equals_built_and_meta_numel(kind_name, index):
    spec, _ = example_spec(kind_name, index)
    report = count_parameters(spec)
    real = build(spec, seed=0)
    assert report.total == sum(p.numel() for p in real.parameters())
    with torch.device("meta"):
        meta = build(spec)
    assert report.total == sum(p.numel() for p in meta.parameters())
    assert report.buffers == sum(b.numel() for b in meta.buffers())
    assert all(p.is_meta for p in meta.parameters())


@pytest.mark.parametrize("kind_name, index", CASES)
def test_spec_json_round_trip(kind_name, index):
    spec, _ = example_spec(kind_name, index)
    again = ModelSpec.from_json(spec.to_json())
    assert again.to_dict() == spec.to_dict()
    assert again.shapes == spec.shapes
    assert ModelSpec.from_yaml(spec.to_yaml()).to_dict() == spec.to_dict()


@pytest.mark.parametrize("kind_name, index", CASES)
def test_save_load_round_trip(kind_name, index, tmp_path):
    from modelkeep.artifact import load, save

    spec, example = example_spec(kind_name, index)
    module = build(spec, seed=0).eval()
    path = save(module, tmp_path / "m.safetensors", durable=False)
    loaded = load(path).module
    assert loaded.spec.to_dict() == spec.to_dict()
    xs = [x.detach() for x in example_inputs(spec, example)]
    with torch.no_grad():
        torch.testing.assert_close(loaded(*xs), module(*xs))


# --------------------------------------------------------------------------- initialisers

def dense(init: object, bias: object = "zeros", units: int = 64, features: int = 32) -> torch.nn.Module:
    spec = {"layers": [{"kind": "Input", "shape": [features]},
                       {"kind": "Dense", "name": "fc", "units": units, "kernel_initializer": init,
                        "bias_initializer": bias}]}
    return build(spec, seed=7).layers["fc"]


@pytest.mark.parametrize("name", INITIALIZERS.names())
def test_every_initializer_applies_and_is_seeded(name):
    init = {"name": name, "value": 0.5} if name == "constant" else name
    first, second = dense(init), dense(init)
    torch.testing.assert_close(first.weight, second.weight)
    assert torch.isfinite(first.weight).all()


def test_initializer_values():
    assert torch.all(dense("zeros").weight == 0)
    assert torch.all(dense("ones").weight == 1)
    assert torch.all(dense({"name": "constant", "value": 0.25}, bias="ones").weight == 0.25)
    assert torch.all(dense("zeros", bias={"name": "constant", "value": 3.0}).bias == 3.0)
    big = dense("standard_normal", units=400, features=500).weight
    assert abs(big.mean().item()) < 0.01 and abs(big.std().item() - 1.0) < 0.01
    he = dense("he_normal", units=400, features=500).weight
    assert abs(he.std().item() - math.sqrt(2 / 500)) < 0.003
    glorot = dense("glorot_uniform", units=400, features=500).weight
    assert glorot.abs().max().item() <= math.sqrt(6 / 900) + 1e-6
    uniform = dense({"name": "uniform", "low": -0.1, "high": 0.1}).weight
    assert uniform.min().item() >= -0.1 and uniform.max().item() <= 0.1
    ortho = dense("orthogonal", units=16, features=16).weight
    torch.testing.assert_close(ortho @ ortho.T, torch.eye(16), atol=1e-5, rtol=0)
    normal = dense({"name": "normal", "mean": 2.0, "std": 0.01}, units=100, features=100).weight
    assert abs(normal.mean().item() - 2.0) < 0.01


def test_default_initialisation_is_pytorchs_and_seeded():
    spec = {"layers": [{"kind": "Input", "shape": [8]}, {"kind": "Dense", "units": 4}]}
    a, b, c = build(spec, seed=1), build(spec, seed=1), build(spec, seed=2)
    torch.testing.assert_close(a.state_dict(), b.state_dict())
    assert not torch.equal(a.layers["dense_1"].weight, c.layers["dense_1"].weight)
    assert a.layers["dense_1"].weight.abs().max() <= 1 / math.sqrt(8)  # kaiming_uniform(a=sqrt(5)) bound


def test_recurrent_initializer_goes_to_recurrent_weights():
    spec = {"layers": [{"kind": "Input", "shape": [5, 3]},
                       {"kind": "LSTM", "name": "rnn", "units": 4, "kernel_initializer": "zeros",
                        "recurrent_initializer": "ones", "bias_initializer": {"name": "constant", "value": 2}}]}
    rnn = build(spec, seed=0).layers["rnn"]
    assert torch.all(rnn.weight_ih_l0 == 0) and torch.all(rnn.weight_hh_l0 == 1)
    assert torch.all(rnn.bias_ih_l0 == 2) and torch.all(rnn.bias_hh_l0 == 2)


@pytest.mark.parametrize("init, message", [
    ("he_norml", "unknown initializer 'he_norml'; did you mean 'he_normal'"),
    ({"name": "normal", "sd": 1}, "initializer 'normal' got unknown argument(s) ['sd']; it takes mean, std"),
    ({"name": "constant"}, "initializer 'constant' needs the argument 'value'"),
    ({"name": "uniform", "low": 1, "high": 0}, "needs low < high"),
    ({"name": "he_normal", "mode": "fan_middle"}, "mode must be one of ['fan_in', 'fan_out']"),
    (3, "an initializer is a name such as 'he_normal'"),
])
def test_bad_initializer_is_a_spec_error(init, message):
    with pytest.raises(SpecError, match="layer 1 'fc' \\(Dense\\)") as info:
        dense(init)
    assert message in str(info.value)


def test_initializer_rejects_vectors_for_matrix_rules():
    with pytest.raises(ValueError, match="two or more axes"):
        initialize(torch.empty(4), "orthogonal")


# --------------------------------------------------------------------------- errors name the layer

def test_unknown_layer_kind_suggests_close_names():
    with pytest.raises(SpecError) as info:
        ModelSpec.from_dict({"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dence", "units": 3}]})
    assert "unknown layer kind 'Dence'; did you mean 'Dense'" in str(info.value)


@pytest.mark.parametrize("layer, input_shape, message", [
    ({"kind": "Conv2D", "filters": 4}, [3, 8], "layer 'bad' (Conv2D) received input shape [3, 8] but expects "
                                               "(channels, height, width)"),
    ({"kind": "Conv1D", "filters": 4, "kernel_size": 9}, [3, 5], "layer 'bad' (Conv1D) received input shape [3, 5] "
                                                                 "but expects spatial size large enough for kernel 9"),
    ({"kind": "Conv2D", "filters": 4, "groups": 2}, [3, 8, 8], "input channels (3) and filters (4) both divisible "
                                                               "by groups=2"),
    ({"kind": "LSTM", "units": 4}, [3, 8, 8], "layer 'bad' (LSTM) received input shape [3, 8, 8] but expects "
                                              "(sequence length, features)"),
    ({"kind": "MultiHeadAttention", "num_heads": 3}, [5, 8], "a model width divisible by num_heads=3"),
    ({"kind": "Reshape", "shape": [5, -1]}, [12], "a number of elements divisible by 5"),
    ({"kind": "MaxPool2D", "pool_size": 4}, [1, 2, 2], "spatial size of at least the pool size 4x4"),
    ({"kind": "BatchNorm2D"}, [4], "layer 'bad' (BatchNorm2D) received input shape [4] but expects "
                                   "(channels, height, width)"),
])
def test_shape_errors_name_layer_received_and_expected(layer, input_shape, message):
    with pytest.raises(ShapeError) as info:
        ModelSpec.from_dict({"layers": [{"kind": "Input", "shape": input_shape}, {"name": "bad", **layer}]})
    assert message in str(info.value)


def test_same_padding_with_stride_says_what_to_do():
    with pytest.raises(SpecError, match="padding='same' needs stride 1.*give the padding as a number"):
        ModelSpec.from_dict({"layers": [{"kind": "Input", "shape": [3, 8, 8]},
                                        {"kind": "Conv2D", "filters": 2, "padding": "same", "stride": 2}]})


def test_unknown_field_and_activation():
    with pytest.raises(SpecError, match="layer 1 'dense_1' \\(Dense\\): .*unknown field 'unit'"):
        ModelSpec.from_dict({"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "unit": 3}]})
    with pytest.raises(SpecError, match="unknown activation 'rleu'; did you mean 'relu'"):
        ModelSpec.from_dict({"layers": [{"kind": "Input", "shape": [4]},
                                        {"kind": "Dense", "units": 3, "activation": "rleu"}]})
    with pytest.raises(SpecError, match="alpha applies to leaky_relu and elu only"):
        ModelSpec.from_dict({"layers": [{"kind": "Input", "shape": [4]},
                                        {"kind": "Activation", "function": "relu", "alpha": 0.1}]})


def test_activations_compute_what_they_say():
    x = torch.linspace(-3, 3, 13).reshape(1, 13)
    expected = {
        "relu": torch.relu(x), "leaky_relu": torch.nn.functional.leaky_relu(x, 0.01), "elu": torch.nn.functional.elu(x),
        "selu": torch.selu(x), "gelu": torch.nn.functional.gelu(x), "sigmoid": torch.sigmoid(x), "tanh": torch.tanh(x),
        "softmax": torch.softmax(x, -1), "silu": torch.nn.functional.silu(x), "swish": torch.nn.functional.silu(x),
        "linear": x,
    }
    for function, want in expected.items():
        module = build({"layers": [{"kind": "Input", "shape": [13]}, {"kind": "Activation", "function": function}]})
        torch.testing.assert_close(module(x), want, msg=function)
