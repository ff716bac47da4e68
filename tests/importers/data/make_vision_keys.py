"""Write the published state-dict names and shapes of torchvision's and timm's ImageNet models as JSON.

These are facts about those libraries, recorded so that the tests can check
modelkeep's layouts without importing them (torchvision cannot be imported on
the machines the tests run on). They are written from those libraries' own
module trees, not from modelkeep's zoo: torchvision ``models/resnet.py``,
``vgg.py``, ``alexnet.py``, ``mobilenetv2.py``, ``efficientnet.py`` (module
``features.<i>`` / ``block.<j>`` / ``fc1``...) and timm's ``resnet.py`` and
``_efficientnet_builder.py`` (``conv_stem``, ``blocks.<stage>.<i>.conv_pw``...).
Cross-checked against published parameter tables (torchvision efficientnet_b0/b2:
``features.1.0.block.1.fc1.weight`` (8, 32, 1, 1), ``features.2.0.block.3.0.weight``
(24, 96, 1, 1); mobilenet_v2: ``features.17.conv.2.weight`` (320, 960, 1, 1),
``features.18.0.weight`` (1280, 320, 1, 1); timm: ``blocks.1.0.conv_pw.weight``,
``blocks.1.0.se.conv_reduce.weight``, ``blocks.1.0.conv_pwl.weight``) and against
the parameter counts each library publishes (resnet18 11,689,512, resnet34
21,797,672, resnet50 25,557,032, vgg11 132,863,336, vgg16 138,357,544, alexnet
61,100,840, mobilenet_v2 3,504,872, efficientnet_b0 5,288,548), which
``test_vision_layouts.py`` asserts again. Run ``python make_vision_keys.py``
in this folder to rewrite the files.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

HERE = Path(__file__).parent


class Keys(dict):
    def conv(self, name: str, cout: int, cin: int, k: int, bias: bool = False) -> None:
        self[f"{name}.weight"] = [cout, cin, k, k]
        if bias:
            self[f"{name}.bias"] = [cout]

    def bn(self, name: str, c: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            self[f"{name}.{p}"] = [c]
        self[f"{name}.num_batches_tracked"] = []

    def linear(self, name: str, out: int, inp: int) -> None:
        self[f"{name}.weight"] = [out, inp]
        self[f"{name}.bias"] = [out]


def resnet(depth: int) -> Keys:  # torchvision and timm name ResNets alike
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
    bottleneck = depth >= 50
    k = Keys()
    k.conv("conv1", 64, 3, 7)
    k.bn("bn1", 64)
    cin = 64
    for s, n in enumerate(blocks, start=1):
        planes = 64 * 2 ** (s - 1)
        cout = planes * 4 if bottleneck else planes
        for i in range(n):
            p = f"layer{s}.{i}"
            if bottleneck:
                k.conv(f"{p}.conv1", planes, cin, 1), k.bn(f"{p}.bn1", planes)
                k.conv(f"{p}.conv2", planes, planes, 3), k.bn(f"{p}.bn2", planes)
                k.conv(f"{p}.conv3", cout, planes, 1), k.bn(f"{p}.bn3", cout)
            else:
                k.conv(f"{p}.conv1", planes, cin, 3), k.bn(f"{p}.bn1", planes)
                k.conv(f"{p}.conv2", planes, planes, 3), k.bn(f"{p}.bn2", planes)
            if i == 0 and (s > 1 or cin != cout):
                k.conv(f"{p}.downsample.0", cout, cin, 1), k.bn(f"{p}.downsample.1", cout)
            cin = cout
    k.linear("fc", 1000, cin)
    return k


def vgg(depth: int) -> Keys:
    cfg = {11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
           16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]}[depth]
    k, cin, i = Keys(), 3, 0
    for item in cfg:
        if item == "M":
            i += 1
        else:
            k.conv(f"features.{i}", item, cin, 3, bias=True)
            cin, i = item, i + 2
    k.linear("classifier.0", 4096, 512 * 7 * 7), k.linear("classifier.3", 4096, 4096)
    k.linear("classifier.6", 1000, 4096)
    return k


def alexnet() -> Keys:
    k = Keys()
    for i, (cout, cin, size) in {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3),
                                 10: (256, 256, 3)}.items():
        k.conv(f"features.{i}", cout, cin, size, bias=True)
    k.linear("classifier.1", 4096, 256 * 6 * 6), k.linear("classifier.4", 4096, 4096)
    k.linear("classifier.6", 1000, 4096)
    return k


MOBILENET_V2 = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]  # t, c, n


def torchvision_mobilenet_v2() -> Keys:
    k, cin, i = Keys(), 32, 1
    k.conv("features.0.0", 32, 3, 3), k.bn("features.0.1", 32)
    for t, c, n in MOBILENET_V2:
        for _ in range(n):
            p, hidden, j = f"features.{i}.conv", cin * t, 0
            if t != 1:
                k.conv(f"{p}.0.0", hidden, cin, 1), k.bn(f"{p}.0.1", hidden)
                j = 1
            k.conv(f"{p}.{j}.0", hidden, 1, 3), k.bn(f"{p}.{j}.1", hidden)
            k.conv(f"{p}.{j + 1}", c, hidden, 1), k.bn(f"{p}.{j + 2}", c)
            cin, i = c, i + 1
    k.conv(f"features.{i}.0", 1280, cin, 1), k.bn(f"features.{i}.1", 1280)
    k.linear("classifier.1", 1000, 1280)
    return k


def timm_mobilenet_v2() -> Keys:
    k, cin = Keys(), 32
    k.conv("conv_stem", 32, 3, 3), k.bn("bn1", 32)
    for s, (t, c, n) in enumerate(MOBILENET_V2):
        for i in range(n):
            p, hidden = f"blocks.{s}.{i}", cin * t
            if t == 1:  # DepthwiseSeparableConv
                k.conv(f"{p}.conv_dw", cin, 1, 3), k.bn(f"{p}.bn1", cin)
                k.conv(f"{p}.conv_pw", c, cin, 1), k.bn(f"{p}.bn2", c)
            else:       # InvertedResidual
                k.conv(f"{p}.conv_pw", hidden, cin, 1), k.bn(f"{p}.bn1", hidden)
                k.conv(f"{p}.conv_dw", hidden, 1, 3), k.bn(f"{p}.bn2", hidden)
                k.conv(f"{p}.conv_pwl", c, hidden, 1), k.bn(f"{p}.bn3", c)
            cin = c
    k.conv("conv_head", 1280, cin, 1), k.bn("bn2", 1280)
    k.linear("classifier", 1000, 1280)
    return k


EFFICIENTNET_B0 = [(1, 3, 16, 1), (6, 3, 24, 2), (6, 5, 40, 2), (6, 3, 80, 3), (6, 5, 112, 3), (6, 5, 192, 4),
                   (6, 3, 320, 1)]  # t, kernel, c, n


def torchvision_efficientnet_b0() -> Keys:
    k, cin = Keys(), 32
    k.conv("features.0.0", 32, 3, 3), k.bn("features.0.1", 32)
    for s, (t, size, c, n) in enumerate(EFFICIENTNET_B0, start=1):
        for i in range(n):
            p, hidden, j = f"features.{s}.{i}.block", cin * t, 0
            if t != 1:
                k.conv(f"{p}.0.0", hidden, cin, 1), k.bn(f"{p}.0.1", hidden)
                j = 1
            k.conv(f"{p}.{j}.0", hidden, 1, size), k.bn(f"{p}.{j}.1", hidden)
            k.conv(f"{p}.{j + 1}.fc1", max(1, cin // 4), hidden, 1, bias=True)
            k.conv(f"{p}.{j + 1}.fc2", hidden, max(1, cin // 4), 1, bias=True)
            k.conv(f"{p}.{j + 2}.0", c, hidden, 1), k.bn(f"{p}.{j + 2}.1", c)
            cin = c
    k.conv("features.8.0", 1280, cin, 1), k.bn("features.8.1", 1280)
    k.linear("classifier.1", 1000, 1280)
    return k


def timm_efficientnet_b0() -> Keys:
    k, cin = Keys(), 32
    k.conv("conv_stem", 32, 3, 3), k.bn("bn1", 32)
    for s, (t, size, c, n) in enumerate(EFFICIENTNET_B0):
        for i in range(n):
            p, hidden, rd = f"blocks.{s}.{i}", cin * t, max(1, cin // 4)
            if t == 1:  # DepthwiseSeparableConv with SE
                k.conv(f"{p}.conv_dw", cin, 1, size), k.bn(f"{p}.bn1", cin)
                k.conv(f"{p}.se.conv_reduce", rd, cin, 1, bias=True)
                k.conv(f"{p}.se.conv_expand", cin, rd, 1, bias=True)
                k.conv(f"{p}.conv_pw", c, cin, 1), k.bn(f"{p}.bn2", c)
            else:
                k.conv(f"{p}.conv_pw", hidden, cin, 1), k.bn(f"{p}.bn1", hidden)
                k.conv(f"{p}.conv_dw", hidden, 1, size), k.bn(f"{p}.bn2", hidden)
                k.conv(f"{p}.se.conv_reduce", rd, hidden, 1, bias=True)
                k.conv(f"{p}.se.conv_expand", hidden, rd, 1, bias=True)
                k.conv(f"{p}.conv_pwl", c, hidden, 1), k.bn(f"{p}.bn3", c)
            cin = c
    k.conv("conv_head", 1280, cin, 1), k.bn("bn2", 1280)
    k.linear("classifier", 1000, 1280)
    return k


FILES = {
    "torchvision_resnet18": lambda: resnet(18), "torchvision_resnet34": lambda: resnet(34),
    "torchvision_resnet50": lambda: resnet(50), "timm_resnet18": lambda: resnet(18),
    "timm_resnet34": lambda: resnet(34), "timm_resnet50": lambda: resnet(50),
    "torchvision_vgg11": lambda: vgg(11), "torchvision_vgg16": lambda: vgg(16), "torchvision_alexnet": alexnet,
    "torchvision_mobilenet_v2": torchvision_mobilenet_v2, "timm_mobilenet_v2": timm_mobilenet_v2,
    "torchvision_efficientnet_b0": torchvision_efficientnet_b0, "timm_efficientnet_b0": timm_efficientnet_b0,
}

if __name__ == "__main__":
    for stem, make in FILES.items():
        keys = make()
        params = sum(math.prod(shape) for name, shape in keys.items()
                     if not name.endswith(("running_mean", "running_var", "num_batches_tracked")))
        rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps(shape)}" for name, shape in keys.items())
        (HERE / f"{stem}.json").write_text(f'{{"parameters": {params}, "state_dict": {{\n{rows}\n}}}}\n')
        print(stem, len(keys), params)
