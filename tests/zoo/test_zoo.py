"""Every zoo model: adding one to the registry adds its tests.

Each must validate, count the same analytically and on the meta device, run
forward and backward (a small configuration; the largest run on the meta
device here and for real under ``-m slow``), offer the transfer interface,
and round-trip through JSON and through a saved file.
"""
from __future__ import annotations

import pytest
import torch

from modelkeep.errors import SpecError
from modelkeep.nn import build
from modelkeep.spec import ModelSpec, count_parameters
from modelkeep.zoo import ZOO, get_spec, list_models

NAMES = list_models()
REAL_RUN_LIMIT = 30_000_000  # parameters; above this the fast suite runs on the meta device


def small(name: str) -> ModelSpec:
    entry = ZOO.get(name)
    return entry.spec(**entry.small)


def sample(spec: ModelSpec, device: str = "cpu") -> torch.Tensor:
    shape = (2, *spec.input_shape)
    if spec.inputs[0].kind.fields.dtype == "int64":
        return torch.randint(0, 5, shape, device=device)
    return torch.randn(shape, device=device)


def test_the_issue_list_is_in_the_zoo():
    for name in ("lenet5", "alexnet", "vgg11", "vgg16", "resnet18", "resnet50", "mlp", "lstm_classifier",
                 "transformer_classifier"):
        assert name in ZOO


@pytest.mark.parametrize("name", NAMES)
def test_count_equals_meta_build(name):
    spec = small(name) if name.startswith("gpt") else get_spec(name)  # GPTs: test_params counts them
    report = count_parameters(spec)
    with torch.device("meta"):
        module = build(spec)
    assert report.total == sum(p.numel() for p in module.parameters())
    assert report.buffers == sum(b.numel() for b in module.buffers())


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name):
    spec = small(name)
    device = "cpu" if count_parameters(spec).total <= REAL_RUN_LIMIT else "meta"
    with torch.device(device):
        module = build(spec, seed=0)
    x = sample(spec, device)
    y = module(x)
    assert tuple(y.shape) == (2, *spec.output_shape)
    y.float().sum().backward()
    assert all(p.grad is not None for p in module.parameters() if p.requires_grad)
    if device == "cpu":
        assert torch.isfinite(y).all()
        assert sum(p.numel() for p in module.parameters()) == count_parameters(spec).total


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_real(name):
    spec = small(name)
    module = build(spec, seed=0)
    y = module(sample(spec))
    y.float().sum().backward()
    assert tuple(y.shape) == (2, *spec.output_shape)


@pytest.mark.parametrize("name", NAMES)
def test_transfer_interface(name):
    spec = small(name)
    device = "cpu" if count_parameters(spec).total <= REAL_RUN_LIMIT else "meta"
    with torch.device(device):
        module = build(spec, seed=0)
    module.eval()
    x = sample(spec, device)
    features = module.features(x)
    assert tuple(features.shape[1:]) == spec.shapes[module.spec.head_layer().inputs[0]]
    if device == "cpu":
        torch.testing.assert_close(module.forward_head(features), module(x))
    assert isinstance(module.head, torch.nn.Module)
    head = module.reset_head(5)
    assert next(head.parameters()).device.type == device
    out = module(x)
    assert out.shape[-1] == 5 and module.spec.output_shape[-1] == 5
    assert count_parameters(module.spec).total == sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_spec_json_round_trip(name):
    spec = get_spec(name)
    again = ModelSpec.from_json(spec.to_json())
    assert again.to_dict() == spec.to_dict() and again.shapes == spec.shapes


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tmp_path):
    from modelkeep.artifact import load, save

    spec = small(name)
    if count_parameters(spec).total > REAL_RUN_LIMIT:
        pytest.skip("large: covered by the meta-device tests")
    module = build(spec, seed=0).eval()
    loaded = load(save(module, tmp_path / "m.safetensors", durable=False)).module
    assert loaded.spec.to_dict() == spec.to_dict()
    x = sample(spec)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module(x))


def test_overrides():
    assert get_spec("vgg16", num_classes=10).output_shape == (10,)
    assert count_parameters(get_spec("vgg16", num_classes=10)).total == 138_357_544 - 4097 * 990
    assert get_spec("resnet18", input_shape=(3, 64, 64)).shapes["layer4_1_relu"] == (512, 2, 2)
    assert get_spec("mlp", hidden=[32], input_features=4).shapes["fc1"] == (32,)
    with pytest.raises(SpecError, match=r"zoo model 'vgg16' has no option\(s\) \['classes'\]; its options are"):
        get_spec("vgg16", classes=10)
    with pytest.raises(SpecError, match="zoo model 'resnet18': bad option value"):
        get_spec("resnet18", num_classes="many")
    with pytest.raises(SpecError, match="unknown zoo model 'resnet19'; did you mean 'resnet18'"):
        get_spec("resnet19")


def test_resnet_uses_torchvision_names_and_residual_adds():
    spec = get_spec("resnet50")
    names = set(spec.by_name)
    assert {"conv1", "bn1", "layer1_0_downsample_0", "layer4_2_conv3", "fc"} <= names
    assert sum(layer.kind_name == "Add" for layer in spec.layers) == 16
    assert spec.shapes["avgpool"] == (2048,)


def test_lenet5_layout():
    spec = get_spec("lenet5")
    shapes = [spec.shapes[n] for n in ("c1", "s2", "c3", "s4", "c5", "f6", "output")]
    assert shapes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1), (84,), (10,)]
