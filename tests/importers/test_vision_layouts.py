"""The vision layouts: Hugging Face, torchvision and timm weights load into the zoo's specs.

Hugging Face's ``transformers`` models are built here with random weights
(batch-norm statistics too) in small configurations; their state dicts,
renamed by the layout, load into ``modelkeep.build(get_spec(...))`` with
nothing missing or left over, and the logits agree within 1e-5. torchvision
and timm cannot be imported on these machines: their published names and
shapes (``data/*.json``, written by ``data/make_vision_keys.py``) must map
onto the zoo specs exactly; where torchvision does import, the outputs are
compared too.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from modelkeep.errors import FormatError
from modelkeep.importers.layouts import LAYOUTS, layouts_for
from modelkeep.importers.layouts import vision  # noqa: F401  (registers the vision layouts)
from modelkeep.nn import build
from modelkeep.zoo import get_spec

transformers = pytest.importorskip("transformers")
DATA = Path(__file__).parent / "data"
SMALL = {"num_classes": 5, "input_shape": (3, 32, 32)}


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Every weight and batch-norm statistic random, at scales that keep activations O(1); eval mode."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            elif isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                module.num_batches_tracked.fill_(7)
    return model.eval()


def hf_resnet(depth: int):
    basic = depth < 50
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 32, 64] if basic else [32, 64, 128, 256],
        depths=[2, 2, 2, 2] if depth == 18 else [3, 4, 6, 3], layer_type="basic" if basic else "bottleneck",
        num_labels=5)
    return transformers.ResNetForImageClassification(config), {"width": 8}


def hf_mobilenet_v2(tf_padding: bool):
    config = transformers.MobileNetV2Config(depth_multiplier=0.5, image_size=32, tf_padding=tf_padding,
                                            num_labels=5)
    return (transformers.MobileNetV2ForImageClassification(config),
            {"width": 0.5, "epsilon": 1e-3, "padding": "tf" if tf_padding else "symmetric"})


def hf_efficientnet():
    # hidden_dim must equal the top convolution's channels (round_filters(1280) = 640 at width 0.5)
    config = transformers.EfficientNetConfig(width_coefficient=0.5, depth_coefficient=0.5, image_size=32,
                                             hidden_dim=640, num_labels=5)
    return (transformers.EfficientNetForImageClassification(config),
            {"width": 0.5, "depth": 0.5, "epsilon": 1e-3, "padding": "tf"})


HF_CASES = {
    "resnet18": lambda: hf_resnet(18), "resnet34": lambda: hf_resnet(34), "resnet50": lambda: hf_resnet(50),
    "mobilenet_v2": lambda: hf_mobilenet_v2(False), "mobilenet_v2-tf": lambda: hf_mobilenet_v2(True),
    "efficientnet_b0": hf_efficientnet,
}


def imported(zoo: str, source: str, state: dict, **options) -> torch.nn.Module:
    """The zoo model built from its spec with ``state`` renamed by the layout, loaded strictly."""
    module = build(get_spec(zoo, **SMALL, **options)).eval()
    module.load_state_dict(LAYOUTS.get(f"{zoo}:{source}").convert(state), strict=True)
    return module


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_huggingface_logits_equal(case):
    zoo = case.split("-")[0]
    torch.manual_seed(0)
    hf, options = HF_CASES[case]()
    randomise(hf)
    module = imported(zoo, "huggingface", hf.state_dict(), **options)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = hf(pixel_values=x).logits, module(x)
    assert expected.std() > 0.05, "random weights should give logits far from zero"
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("wrong", [{"padding": "symmetric"}, {"epsilon": 1e-5}])
def test_parity_needs_the_matching_options(wrong):
    """The comparison can fail: EfficientNet built with torchvision's padding or epsilon differs from HF's."""
    hf, options = hf_efficientnet()
    randomise(hf)
    module = imported("efficientnet_b0", "huggingface", hf.state_dict(), **{**options, **wrong})
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (module(x) - hf(pixel_values=x).logits).abs().max() > 1e-4  # 10x the tolerance


def test_huggingface_base_models_map_onto_the_features():
    """``ResNetModel`` and friends have no classifier: every name maps, only the head is left to train."""
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[2, 2, 2, 2],
                                       layer_type="basic")
    state = LAYOUTS.get("resnet18:huggingface").convert(transformers.ResNetModel(config).state_dict())
    expected = build(get_spec("resnet18", width=8, **SMALL)).state_dict()
    assert set(expected) - set(state) == {"layers.fc.weight", "layers.fc.bias"}
    assert set(state) <= set(expected)


def test_huggingface_mobilenet_with_an_extra_stem_convolution_is_refused():
    config = transformers.MobileNetV2Config(depth_multiplier=0.5, first_layer_is_expansion=False)
    state = transformers.MobileNetV2Model(config).state_dict()
    with pytest.raises(FormatError, match="first_layer_is_expansion"):
        LAYOUTS.get("mobilenet_v2:huggingface").convert(state)


def test_unknown_names_pass_through_for_the_report():
    state = {"resnet.embedder.embedder.convolution.weight": torch.zeros(1), "something.else": torch.zeros(1)}
    assert set(LAYOUTS.get("resnet18:huggingface").convert(state)) == {"layers.conv1.weight", "something.else"}
    state = {"conv_stem.weight": torch.zeros(1), "head.fc.weight": torch.zeros(1)}
    assert set(LAYOUTS.get("efficientnet_b0:timm").convert(state)) == {"layers.features_0_0.weight", "head.fc.weight"}


# ------------------------------------------------------------------ torchvision and timm: published names
PUBLISHED = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "vgg11": 132_863_336,
             "vgg16": 138_357_544, "alexnet": 61_100_840, "mobilenet_v2": 3_504_872, "efficientnet_b0": 5_288_548}
FILES = sorted(path.stem for path in DATA.glob("*.json"))


def test_every_registered_torchvision_and_timm_layout_has_its_published_names():
    layouts = {key for key in LAYOUTS.names() if LAYOUTS.get(key).source in ("torchvision", "timm")}
    files = {f"{stem.split('_', 1)[1]}:{stem.split('_', 1)[0]}" for stem in FILES}
    assert {LAYOUTS.canonical(key) for key in files} == layouts
    assert {layout.source for layout in layouts_for("efficientnet_b0")} == {"torchvision", "timm", "huggingface"}
    # timm's ResNets have torchvision's names: one layout, so a file is not reported as the other library's
    assert LAYOUTS.get("resnet50:timm") is LAYOUTS.get("resnet50:torchvision")
    assert [layout.source for layout in layouts_for("resnet50")] == ["huggingface", "torchvision"]


@pytest.mark.parametrize("stem", FILES)
def test_published_names_map_onto_the_zoo_spec(stem):
    source, zoo = stem.split("_", 1)
    data = json.loads((DATA / f"{stem}.json").read_text())
    assert data["parameters"] == PUBLISHED[zoo]
    state = {name: torch.empty(shape, device="meta") for name, shape in data["state_dict"].items()}
    converted = LAYOUTS.get(f"{zoo}:{source}").convert(state)
    with torch.device("meta"):
        expected = build(get_spec(zoo)).state_dict()
    assert sorted(converted) == sorted(expected)
    wrong = {name: (tuple(converted[name].shape), tuple(t.shape)) for name, t in expected.items()
             if converted[name].shape != t.shape}
    assert not wrong


def test_torchvision_outputs_equal_where_it_imports():
    torchvision = pytest.importorskip("torchvision", reason="torchvision does not import here")
    for zoo in ("resnet18", "mobilenet_v2", "efficientnet_b0", "alexnet"):
        reference = randomise(getattr(torchvision.models, zoo)(num_classes=5))
        module = build(get_spec(zoo, num_classes=5)).eval()
        module.load_state_dict(LAYOUTS.get(f"{zoo}:torchvision").convert(reference.state_dict()), strict=True)
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            torch.testing.assert_close(module(x), reference(x), atol=1e-4, rtol=0)


def test_import_model_finds_the_layout_and_the_file_predicts_the_same(tmp_path):
    """Through ``modelkeep.import_model``: a saved Hugging Face state dict, its layout recognised, no layout named."""
    import modelkeep

    hf, options = hf_mobilenet_v2(True)
    randomise(hf)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    report = modelkeep.import_model(tmp_path / "pytorch_model.bin", tmp_path / "m.safetensors", zoo="mobilenet_v2",
                                    **SMALL, **options)
    assert report.layout == "mobilenet_v2:huggingface" and report.complete
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = modelkeep.load(tmp_path / "m.safetensors").module(x)
        torch.testing.assert_close(got, hf(pixel_values=x).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["efficientnet_b0:timm", "mobilenet_v2:timm", "efficientnet_b0:huggingface"])
def test_a_file_declaring_many_blocks_is_renamed_in_linear_time(layout):
    """One lookup per name: 6,000 blocks (hostile, or just big) take a fraction of a second, not minutes."""
    import time

    weight = torch.empty(8, 8, 1, 1, device="meta")
    if layout.endswith("huggingface"):
        state = {f"encoder.blocks.{i}.{part}.weight": weight for i in range(6_000)
                 for part in ("expansion.expand_conv", "depthwise_conv.depthwise_conv", "projection.project_conv")}
    else:
        state = {f"blocks.{i // 100}.{i % 100}.{part}.weight": weight for i in range(6_000)
                 for part in ("conv_pw", "conv_dw", "conv_pwl")}
    start = time.perf_counter()
    out = LAYOUTS.get(layout).convert(state)
    assert len(out) == len(state)
    assert time.perf_counter() - start < 5.0
