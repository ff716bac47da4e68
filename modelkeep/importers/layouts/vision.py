"""How torchvision, timm and Hugging Face name the weights of the zoo's image models.

The zoo's ResNet, VGG, AlexNet, MobileNetV2 and EfficientNet name their
layers after torchvision's module paths with dots as underscores, so
torchvision's ``layer1.0.conv1.weight`` is the spec's
``layers.layer1_0_conv1.weight`` (``torchvision_names``). timm and Hugging
Face name the same tensors differently; each of their layouts renames to
torchvision's names first (tables of patterns below), then applies that rule.
Tensors are never changed, only renamed: the architectures are the same.

A name that matches no pattern is passed through unchanged, so the loader's
report lists it as unexpected rather than it vanishing. Facts written here
come from those libraries' published state dicts; nothing imports them.

Hugging Face variants that these names cannot tell apart: ``ResNetConfig``
with ``downsample_in_bottleneck=True`` (stride on the first 1x1 convolution,
not on the 3x3), ``MobileNetV2Config`` with ``first_layer_is_expansion=False``
(refused: an extra stem convolution), ``tf_padding=True`` (build the zoo model
with ``padding="tf"``; the default of Hugging Face's MobileNetV2 checkpoints)
and their batch-norm epsilon of 0.001 (``epsilon=0.001``). Hugging Face's
EfficientNet always pads as TensorFlow: use ``padding="tf", epsilon=0.001``.
"""
from __future__ import annotations

import re
from typing import Callable

from ...errors import FormatError
from . import LAYOUTS, Layout, State, register_layout

Rules = list[tuple[str, str]]  # (regular expression on the full name, replacement), the first match wins


def torchvision_names(state: State) -> State:
    """torchvision's names -> the zoo spec's: ``a.b.c.weight`` -> ``layers.a_b_c.weight``."""
    out: State = {}
    for name, tensor in state.items():
        module, dot, param = name.rpartition(".")
        out[f"layers.{module.replace('.', '_')}.{param}" if dot else name] = tensor
    return out


def _rename(state: State, rules: Rules, blocks: dict[str, dict[str, str]] | None = None) -> State:
    """Rename by the first rule that matches, else by the table of blocks; then to the spec's names.

    ``blocks`` maps a block (the first three parts of a name, ``blocks.1.0``) to
    its parts' torchvision paths (``{"conv_dw": "features.2.conv.1.0"}``): one
    lookup per name, however many blocks a (possibly hostile) file declares.
    Names that match nothing are kept as they are.
    """
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    renamed: State = {}
    kept: State = {}
    for name, tensor in state.items():
        new = next((pattern.sub(replacement, name) for pattern, replacement in compiled if pattern.match(name)), None)
        if new is None and blocks:
            module, _, param = name.rpartition(".")
            block, part = ".".join(module.split(".")[:3]), ".".join(module.split(".")[3:])
            target = blocks.get(block, {}).get(part)
            new = f"{target}.{param}" if target else None
        if new is None:
            kept[name] = tensor
        else:
            renamed[new] = tensor
    return {**torchvision_names(_numbered(renamed)), **kept}


def _numbered(state: State) -> State:
    """Resolve the index arithmetic left in renamed keys: ``<i>`` is ``i + 1``, ``[i]`` is ``i + 2``."""
    out: State = {}
    for name, tensor in state.items():
        name = re.sub(r"<(\d+)>", lambda m: str(int(m.group(1)) + 1), name)
        out[re.sub(r"\[(\d+)\]", lambda m: str(int(m.group(1)) + 2), name)] = tensor
    return out


def _blocks(state: State, pattern: str) -> list[str]:
    """The distinct block prefixes (``blocks.1.0``) that keys matching ``pattern`` start with, in numeric order."""
    found = {m.group(1) for name in state if (m := re.match(pattern, name))}
    return sorted(found, key=lambda block: [int(part) for part in re.findall(r"\d+", block)])


# ----------------------------------------------------------------------------- ResNet
_HF_RESNET: Rules = [
    (r"^(?:resnet\.)?embedder\.embedder\.convolution\.", "conv1."),
    (r"^(?:resnet\.)?embedder\.embedder\.normalization\.", "bn1."),
    (r"^(?:resnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.", r"layer<\1>.\2.downsample.0."),
    (r"^(?:resnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.", r"layer<\1>.\2.downsample.1."),
    (r"^(?:resnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution\.", r"layer<\1>.\2.conv<\3>."),
    (r"^(?:resnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.normalization\.", r"layer<\1>.\2.bn<\3>."),
    (r"^classifier\.1\.", "fc."),
]


def huggingface_resnet(state: State) -> State:
    """transformers' ``ResNetModel`` / ``ResNetForImageClassification`` names -> the zoo spec's.

    Hugging Face counts stages and convolutions from 0, torchvision from 1 (``<0>`` in the rules is ``1``).
    """
    return _rename(state, _HF_RESNET)


# ----------------------------------------------------------------------------- MobileNetV2
def timm_mobilenet_v2(state: State) -> State:
    """timm's ``mobilenetv2_*`` names -> the zoo spec's (``blocks.<stage>.<i>`` are numbered on as ``features``)."""
    rules: Rules = [(r"^conv_stem\.", "features.0.0."), (r"^bn1\.", "features.0.1."),
                    (r"^classifier\.", "classifier.1.")]
    blocks = _blocks(state, r"^(blocks\.\d+\.\d+)\.")
    table, inverted = {}, set(_blocks(state, r"^(blocks\.\d+\.\d+)\.conv_pwl\."))
    for index, block in enumerate(blocks, start=1):
        f = f"features.{index}.conv"
        if index == 1 and block not in inverted:  # the first block is depthwise-separable: no expansion
            table[block] = {"conv_dw": f"{f}.0.0", "bn1": f"{f}.0.1", "conv_pw": f"{f}.1", "bn2": f"{f}.2"}
        else:
            table[block] = {"conv_pw": f"{f}.0.0", "bn1": f"{f}.0.1", "conv_dw": f"{f}.1.0", "bn2": f"{f}.1.1",
                            "conv_pwl": f"{f}.2", "bn3": f"{f}.3"}
    head = len(blocks) + 1
    rules += [(r"^conv_head\.", f"features.{head}.0."), (r"^bn2\.", f"features.{head}.1.")]
    return _rename(state, rules, table)


def huggingface_mobilenet_v2(state: State) -> State:
    """transformers' ``MobileNetV2Model`` / ``MobileNetV2ForImageClassification`` names -> the zoo spec's."""
    state = {name.removeprefix("mobilenet_v2."): t for name, t in state.items()}
    if any(name.startswith("conv_stem.expand_1x1.") for name in state):
        raise FormatError("this Hugging Face MobileNetV2 has first_layer_is_expansion=False (an extra 1x1 stem "
                          "convolution), which torchvision's layout and the zoo's mobilenet_v2 do not have")
    head = len(_blocks(state, r"^(layer\.\d+)\.")) + 2
    rules: Rules = [
        (r"^conv_stem\.first_conv\.convolution\.", "features.0.0."),
        (r"^conv_stem\.first_conv\.normalization\.", "features.0.1."),
        (r"^conv_stem\.conv_3x3\.convolution\.", "features.1.conv.0.0."),
        (r"^conv_stem\.conv_3x3\.normalization\.", "features.1.conv.0.1."),
        (r"^conv_stem\.reduce_1x1\.convolution\.", "features.1.conv.1."),
        (r"^conv_stem\.reduce_1x1\.normalization\.", "features.1.conv.2."),
        (r"^layer\.(\d+)\.expand_1x1\.convolution\.", r"features.[\1].conv.0.0."),
        (r"^layer\.(\d+)\.expand_1x1\.normalization\.", r"features.[\1].conv.0.1."),
        (r"^layer\.(\d+)\.conv_3x3\.convolution\.", r"features.[\1].conv.1.0."),
        (r"^layer\.(\d+)\.conv_3x3\.normalization\.", r"features.[\1].conv.1.1."),
        (r"^layer\.(\d+)\.reduce_1x1\.convolution\.", r"features.[\1].conv.2."),
        (r"^layer\.(\d+)\.reduce_1x1\.normalization\.", r"features.[\1].conv.3."),
        (r"^conv_1x1\.convolution\.", f"features.{head}.0."),
        (r"^conv_1x1\.normalization\.", f"features.{head}.1."),
        (r"^classifier\.", "classifier.1."),
    ]
    return _rename(state, rules)  # layer.0 is features.2: [0] in the rules is 2


# ----------------------------------------------------------------------------- EfficientNet
# timm's (and Hugging Face's) parts of one block, in torchvision's order: expansion, depthwise, SE, projection
_TIMM_PARTS = {"conv_pw": ("pw", "0"), "bn1": ("pw", "1"), "conv_dw": ("dw", "0"), "bn2": ("dw", "1"),
               "se.conv_reduce": ("se", "fc1"), "se.conv_expand": ("se", "fc2"), "conv_pwl": ("pwl", "0"),
               "bn3": ("pwl", "1")}
_TIMM_SEPARABLE = {"conv_dw": ("dw", "0"), "bn1": ("dw", "1"), "se.conv_reduce": ("se", "fc1"),
                   "se.conv_expand": ("se", "fc2"), "conv_pw": ("pwl", "0"), "bn2": ("pwl", "1")}
_HF_PARTS = {"expansion.expand_conv": ("pw", "0"), "expansion.expand_bn": ("pw", "1"),
             "depthwise_conv.depthwise_conv": ("dw", "0"), "depthwise_conv.depthwise_norm": ("dw", "1"),
             "squeeze_excite.reduce": ("se", "fc1"), "squeeze_excite.expand": ("se", "fc2"),
             "projection.project_conv": ("pwl", "0"), "projection.project_bn": ("pwl", "1")}


def _mbconv_parts(target: str, parts: dict[str, tuple[str, str]], expands: bool) -> dict[str, str]:
    """One MBConv block's parts -> torchvision's ``<target>.block.<i>.<leaf>``."""
    order = ["pw", "dw", "se", "pwl"] if expands else ["dw", "se", "pwl"]
    return {part: f"{target}.block.{order.index(step)}.{leaf}" for part, (step, leaf) in parts.items() if step in order}


def timm_efficientnet(state: State) -> State:
    """timm's ``efficientnet_b*`` names -> the zoo spec's (``blocks.<s>.<i>`` is ``features.<s+1>.<i>``)."""
    rules: Rules = [(r"^conv_stem\.", "features.0.0."), (r"^bn1\.", "features.0.1."),
                    (r"^classifier\.", "classifier.1.")]
    table, stages, inverted = {}, 0, set(_blocks(state, r"^(blocks\.\d+\.\d+)\.conv_pwl\."))
    for block in _blocks(state, r"^(blocks\.\d+\.\d+)\."):
        stage, index = (int(n) for n in block.split(".")[1:])
        stages = max(stages, stage + 1)
        expands = block in inverted
        table[block] = _mbconv_parts(f"features.{stage + 1}.{index}", _TIMM_PARTS if expands else _TIMM_SEPARABLE,
                                     expands)
    rules += [(r"^conv_head\.", f"features.{stages + 1}.0."), (r"^bn2\.", f"features.{stages + 1}.1.")]
    return _rename(state, rules, table)


def _channels(tensor: object, axis: int, what: str) -> int:
    shape = getattr(tensor, "shape", ())
    if len(shape) != 4:
        raise FormatError(f"Hugging Face EfficientNet {what} should be a 4-D convolution weight, "
                          f"got shape {list(shape)}")
    return int(shape[axis])


def huggingface_efficientnet(state: State) -> State:
    """transformers' ``EfficientNetModel`` / ``EfficientNetForImageClassification`` names -> the zoo spec's.

    Hugging Face numbers blocks straight through (``encoder.blocks.<n>``); a
    stage starts at each block whose output channels differ from its input
    channels (the first block of every stage changes them, the others keep
    them and add their input back), which recovers torchvision's
    ``features.<stage>.<i>``.
    """
    state = {name.removeprefix("efficientnet."): t for name, t in state.items()}
    rules: Rules = [(r"^embeddings\.convolution\.", "features.0.0."), (r"^embeddings\.batchnorm\.", "features.0.1."),
                    (r"^classifier\.", "classifier.1.")]
    table, stage, index = {}, 0, 0
    for block in _blocks(state, r"^(encoder\.blocks\.\d+)\."):
        project = state.get(f"{block}.projection.project_conv.weight")
        expand = state.get(f"{block}.expansion.expand_conv.weight")
        if expand is not None:
            cin = _channels(expand, 1, f"{block}.expansion.expand_conv.weight")
        else:
            cin = _channels(state.get(f"{block}.depthwise_conv.depthwise_conv.weight"), 0, f"{block} depthwise weight")
        cout = _channels(project, 0, f"{block}.projection.project_conv.weight")
        stage, index = (stage + 1, 0) if cin != cout or stage == 0 else (stage, index + 1)
        table[block] = _mbconv_parts(f"features.{stage}.{index}", _HF_PARTS, expand is not None)
    rules += [(r"^encoder\.top_conv\.", f"features.{stage + 1}.0."),
              (r"^encoder\.top_bn\.", f"features.{stage + 1}.1.")]
    return _rename(state, rules, table)


# ----------------------------------------------------------------------------- the registry
_LAYOUTS: list[tuple[str, str, Callable[[State], State], str]] = [
    *[(f"resnet{d}", "huggingface", huggingface_resnet, f"transformers ResNetForImageClassification "
       f"(microsoft/resnet-{d})") for d in (18, 34, 50)],
    ("mobilenet_v2", "torchvision", torchvision_names, "torchvision.models.mobilenet_v2"),
    ("mobilenet_v2", "timm", timm_mobilenet_v2, "timm mobilenetv2_100 (and other widths)"),
    ("mobilenet_v2", "huggingface", huggingface_mobilenet_v2, "transformers MobileNetV2ForImageClassification "
     "(google/mobilenet_v2_1.0_224: build the zoo model with padding='tf', epsilon=0.001)"),
    ("efficientnet_b0", "torchvision", torchvision_names, "torchvision.models.efficientnet_b0"),
    ("efficientnet_b0", "timm", timm_efficientnet, "timm efficientnet_b0"),
    ("efficientnet_b0", "huggingface", huggingface_efficientnet, "transformers EfficientNetForImageClassification "
     "(google/efficientnet-b0: build the zoo model with padding='tf', epsilon=0.001)"),
    *[(name, "torchvision", torchvision_names, f"torchvision.models.{name}") for name in ("vgg11", "vgg16", "alexnet")],
]
for _model, _source, _convert, _description in _LAYOUTS:
    register_layout(_model, _source, _convert, _description)
for _depth in (18, 34, 50):  # timm's ResNets have torchvision's names: one layout, found as either
    _layout = Layout(f"resnet{_depth}", "torchvision", torchvision_names,
                     f"torchvision.models.resnet{_depth}, and timm's resnet{_depth} (the same names)")
    LAYOUTS.register(_layout.key, _layout, aliases=(f"resnet{_depth}:timm",))
