"""VGG (Simonyan and Zisserman, 2014) in torchvision's layout, without batch norm.

A stack of 3x3 convolutions (``cfg`` numbers) and 2x2 max-pools (``"M"``), an
adaptive average pool to 7x7, and three Dense layers. Names follow torchvision
(``features_0``, ``classifier_6``); initialisation too (He-normal fan-out for
convolutions, N(0, 0.01) for Dense). VGG-16 has 138,357,544 parameters.
"""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ._base import register_model

LAYOUTS: dict[int, list[Union[int, str]]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
CONV_INIT = {"name": "he_normal", "mode": "fan_out"}
DENSE_INIT = {"name": "normal", "mean": 0.0, "std": 0.01}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class VGGConfig:
    depth: Literal[11, 13, 16, 19] = 16
    num_classes: int = Field(default=1000, gt=0)
    input_shape: tuple[int, int, int] = (3, 224, 224)
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    width: int = Field(default=64, gt=0)      # filters of the first stage; the others scale with it
    hidden: int = Field(default=4096, gt=0)   # units of the two hidden Dense layers


def vgg(cfg: VGGConfig) -> dict[str, Any]:
    layers: list[dict[str, Any]] = [{"kind": "Input", "name": "image", "shape": list(cfg.input_shape)}]
    index = 0
    for item in LAYOUTS[cfg.depth]:
        if item == "M":
            layers.append({"kind": "MaxPool2D", "name": f"features_{index}", "pool_size": 2})  # (C, H/2, W/2)
            index += 1
        else:
            filters = int(item) * cfg.width // 64
            layers.append({"kind": "Conv2D", "name": f"features_{index}", "filters": filters, "kernel_size": 3,
                           "padding": 1, "kernel_initializer": CONV_INIT, "bias_initializer": "zeros"})
            layers.append({"kind": "ReLU", "name": f"features_{index + 1}"})                    # (filters, H, W)
            index += 2
    dense = {"kernel_initializer": DENSE_INIT, "bias_initializer": "zeros"}
    layers += [
        {"kind": "AdaptiveAvgPool2D", "name": "avgpool", "output_size": 7},                     # (512, 7, 7)
        {"kind": "Flatten", "name": "flatten"},                                                  # (25088,)
        {"kind": "Dense", "name": "classifier_0", "units": cfg.hidden, **dense},
        {"kind": "ReLU", "name": "classifier_1"},
        {"kind": "Dropout", "name": "classifier_2", "rate": cfg.dropout},                       # (hidden,)
        {"kind": "Dense", "name": "classifier_3", "units": cfg.hidden, **dense},
        {"kind": "ReLU", "name": "classifier_4"},
        {"kind": "Dropout", "name": "classifier_5", "rate": cfg.dropout},                       # (hidden,)
        {"kind": "Dense", "name": "classifier_6", "units": cfg.num_classes, **dense},           # (num_classes,)
    ]
    return {"name": f"vgg{cfg.depth}", "layers": layers, "head": "classifier_6"}


_SMALL = {"num_classes": 3, "input_shape": (3, 32, 32)}
register_model("vgg11", VGGConfig, vgg, "VGG-11 (torchvision layout): 3x224x224 input, 1000 classes",
               small=_SMALL, depth=11)
register_model("vgg16", VGGConfig, vgg, "VGG-16 (torchvision layout): 3x224x224 input, 1000 classes",
               small=_SMALL, depth=16)
