"""ResNet-34, MobileNetV2 and EfficientNet-B0: published parameter counts, shapes, structure and options.

The whole-registry tests in ``test_zoo.py`` also build, run and round-trip
each of them; these check what is particular to these families.
"""
from __future__ import annotations

import pytest
import torch

from modelkeep.errors import ShapeError, SpecError
from modelkeep.nn import build
from modelkeep.spec import ModelSpec, count_parameters
from modelkeep.zoo import get_spec

# parameters with 1000 classes, as torchvision publishes them (``weights.meta["num_params"]``)
PUBLISHED = {"resnet34": 21_797_672, "mobilenet_v2": 3_504_872, "efficientnet_b0": 5_288_548}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts(name):
    spec = get_spec(name)
    assert count_parameters(spec).total == PUBLISHED[name]
    assert spec.input_shape == (3, 224, 224) and spec.output_shape == (1000,)


@pytest.mark.parametrize("name, layer, shape", [
    ("mobilenet_v2", "features_0_2", (32, 112, 112)),
    ("mobilenet_v2", "features_17_conv_3", (320, 7, 7)),
    ("mobilenet_v2", "features_18_2", (1280, 7, 7)),
    ("efficientnet_b0", "features_0_2", (32, 112, 112)),
    ("efficientnet_b0", "features_1_0_block_1_avgpool", (32, 1, 1)),
    ("efficientnet_b0", "features_1_0_block_1_mul", (32, 112, 112)),
    ("efficientnet_b0", "features_3_0_block_1_0", (144, 28, 28)),
    ("efficientnet_b0", "features_7_0_block_3_1", (320, 7, 7)),
    ("efficientnet_b0", "features_8_2", (1280, 7, 7)),
    ("resnet34", "layer4_2_relu", (512, 7, 7)),
])
def test_shapes_along_the_way(name, layer, shape):
    assert get_spec(name).shapes[layer] == shape


def test_residual_adds_where_shape_is_kept():
    mobilenet = {layer.name for layer in get_spec("mobilenet_v2").layers if layer.kind.name == "Add"}
    # blocks that keep stride and channels: 3, 5, 6, 8, 9, 10, 12, 13, 15, 16 (torchvision's use_res_connect)
    assert mobilenet == {f"features_{i}_add" for i in (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)}
    efficientnet = get_spec("efficientnet_b0")
    adds = [layer.name for layer in efficientnet.layers if layer.kind.name == "Add"]
    assert len(adds) == 16 - 7  # every block but the first of each stage
    assert sum(layer.kind.name == "Multiply" for layer in efficientnet.layers) == 16  # one gate per block


def test_tf_padding_pads_strided_convolutions_bottom_right():
    spec = get_spec("efficientnet_b0", padding="tf", input_shape=(3, 32, 32))
    pads = {layer.name: layer.kind.fields.padding for layer in spec.layers if layer.kind.name == "ZeroPadding2D"}
    assert pads["features_0_pad"] == [[0, 1], [0, 1]]              # 3x3, stride 2
    assert pads["features_3_0_block_1_pad"] == [[1, 2], [1, 2]]    # 5x5, stride 2
    assert len(pads) == 5                                           # the stem and four strided stages
    assert spec.shapes["features_0_2"] == (32, 16, 16)
    assert count_parameters(spec).total == count_parameters(get_spec("efficientnet_b0", input_shape=(3, 32, 32))).total


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0"])
def test_width_multiplier_and_small_images(name):
    spec = get_spec(name, width=0.5, num_classes=7, input_shape=(3, 64, 48))
    assert spec.output_shape == (7,)
    assert count_parameters(spec).total < PUBLISHED[name]
    module = build(spec, seed=0).eval()
    with torch.no_grad():
        assert module(torch.randn(2, 3, 64, 48)).shape == (2, 7)


def test_bad_options_are_refused():
    with pytest.raises(SpecError, match="padding"):
        get_spec("mobilenet_v2", padding="reflect")
    with pytest.raises(SpecError, match="width"):
        get_spec("efficientnet_b0", width=0)


def test_multiply_broadcasts_on_the_channel_axis():
    spec = ModelSpec.from_dict({"layers": [
        {"kind": "Input", "name": "x", "shape": [3, 4, 5]},
        {"kind": "Input", "name": "gate", "shape": [3]},
        {"kind": "Multiply", "name": "y", "inputs": ["x", "gate"]},
    ]})
    assert spec.output_shape == (3, 4, 5)
    module = build(spec)
    x, gate = torch.randn(2, 3, 4, 5), torch.randn(2, 3)
    assert torch.equal(module(x, gate), x * gate[:, :, None, None])
    with pytest.raises(ShapeError, match="broadcast on the channel axis"):
        ModelSpec.from_dict({"layers": [
            {"kind": "Input", "name": "x", "shape": [3, 4, 5]},
            {"kind": "Input", "name": "gate", "shape": [4]},
            {"kind": "Multiply", "name": "y", "inputs": ["x", "gate"]},
        ]})
