"""ResNet (He et al., 2015) in torchvision's layout: graph specs with residual ``Add`` layers.

A stem (7x7/2 convolution, batch norm, ReLU, 3x3/2 max-pool), four stages of
residual blocks (basic blocks for ResNet-18/34, bottlenecks for 50/101/152,
with the stride on the 3x3 convolution as in torchvision's "v1.5"), global
average pooling and one Dense layer. A block whose shape changes gets a 1x1
convolution and batch norm on its shortcut (``downsample``). Names follow
torchvision (``layer1.0.conv1`` is ``layer1_0_conv1``). ResNet-18 has
11,689,512 parameters, ResNet-34 21,797,672, ResNet-50 25,557,032.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ._base import register_model

STAGES = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
          50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3]), 152: ("bottleneck", [3, 8, 36, 3])}
CONV_INIT = {"name": "he_normal", "mode": "fan_out"}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ResNetConfig:
    depth: Literal[18, 34, 50, 101, 152] = 50
    num_classes: int = Field(default=1000, gt=0)
    input_shape: tuple[int, int, int] = (3, 224, 224)
    width: int = Field(default=64, gt=0)  # channels of the first stage; 64 in the paper


def _conv(name: str, source: str, filters: int, kernel: int, stride: int = 1) -> dict[str, Any]:
    return {"kind": "Conv2D", "name": name, "inputs": [source], "filters": filters, "kernel_size": kernel,
            "stride": stride, "padding": kernel // 2, "use_bias": False, "kernel_initializer": CONV_INIT}


def _bn(name: str, source: str) -> dict[str, Any]:
    return {"kind": "BatchNorm2D", "name": name, "inputs": [source]}


def _relu(name: str, source: str) -> dict[str, Any]:
    return {"kind": "ReLU", "name": name, "inputs": [source]}


def _block(layers: list[dict[str, Any]], p: str, x: str, in_ch: int, planes: int, stride: int,
           bottleneck: bool) -> tuple[str, int]:
    """Append one residual block reading layer ``x``; return the name of its output and its channels."""
    if bottleneck:
        out_ch = planes * 4
        layers += [
            _conv(f"{p}_conv1", x, planes, 1), _bn(f"{p}_bn1", f"{p}_conv1"), _relu(f"{p}_relu1", f"{p}_bn1"),
            _conv(f"{p}_conv2", f"{p}_relu1", planes, 3, stride),                      # (planes, H/stride, W/stride)
            _bn(f"{p}_bn2", f"{p}_conv2"), _relu(f"{p}_relu2", f"{p}_bn2"),
            _conv(f"{p}_conv3", f"{p}_relu2", out_ch, 1), _bn(f"{p}_bn3", f"{p}_conv3"),  # (4*planes, ...)
        ]
        residual = f"{p}_bn3"
    else:
        out_ch = planes
        layers += [
            _conv(f"{p}_conv1", x, planes, 3, stride), _bn(f"{p}_bn1", f"{p}_conv1"),    # (planes, H/stride, W/stride)
            _relu(f"{p}_relu1", f"{p}_bn1"),
            _conv(f"{p}_conv2", f"{p}_relu1", planes, 3), _bn(f"{p}_bn2", f"{p}_conv2"),
        ]
        residual = f"{p}_bn2"
    shortcut = x
    if stride != 1 or in_ch != out_ch:
        layers += [_conv(f"{p}_downsample_0", x, out_ch, 1, stride), _bn(f"{p}_downsample_1", f"{p}_downsample_0")]
        shortcut = f"{p}_downsample_1"
    layers += [{"kind": "Add", "name": f"{p}_add", "inputs": [residual, shortcut]},       # residual + shortcut
               _relu(f"{p}_relu", f"{p}_add")]
    return f"{p}_relu", out_ch


def resnet(cfg: ResNetConfig) -> dict[str, Any]:
    kind, counts = STAGES[cfg.depth]
    w = cfg.width
    layers: list[dict[str, Any]] = [
        {"kind": "Input", "name": "image", "shape": list(cfg.input_shape)},                  # (3, 224, 224)
        _conv("conv1", "image", w, 7, 2), _bn("bn1", "conv1"), _relu("relu", "bn1"),       # (64, 112, 112)
        {"kind": "MaxPool2D", "name": "maxpool", "inputs": ["relu"], "pool_size": 3, "stride": 2, "padding": 1},
    ]                                                                                         # (64, 56, 56)
    x, channels = "maxpool", w
    for stage, count in enumerate(counts, start=1):
        planes = w * 2 ** (stage - 1)
        for index in range(count):
            stride = 2 if stage > 1 and index == 0 else 1                                  # halves H, W per stage
            x, channels = _block(layers, f"layer{stage}_{index}", x, channels, planes, stride, kind == "bottleneck")
    layers += [
        {"kind": "GlobalAvgPool", "name": "avgpool", "inputs": [x]},                         # (512 or 2048,)
        {"kind": "Dense", "name": "fc", "units": cfg.num_classes},                           # (num_classes,)
    ]
    return {"name": f"resnet{cfg.depth}", "layers": layers, "head": "fc"}


_SMALL = {"num_classes": 3, "input_shape": (3, 32, 32), "width": 8}
register_model("resnet18", ResNetConfig, resnet, "ResNet-18 (torchvision layout): 3x224x224 input, 1000 classes",
               small=_SMALL, depth=18)
register_model("resnet34", ResNetConfig, resnet, "ResNet-34 (torchvision layout): 3x224x224 input, 1000 classes",
               small=_SMALL, depth=34)
register_model("resnet50", ResNetConfig, resnet, "ResNet-50 (torchvision layout): 3x224x224 input, 1000 classes",
               small=_SMALL, depth=50)
