"""AlexNet in torchvision's layout (the single-GPU variant of Krizhevsky et al., 2012, "one weird trick").

Layer names follow torchvision's module paths with dots as underscores
(``features.0`` is ``features_0``), so torchvision weights map one to one.
61,100,840 parameters with 1000 classes.
"""
from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ._base import register_model


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class AlexNetConfig:
    num_classes: int = Field(default=1000, gt=0)
    input_shape: tuple[int, int, int] = (3, 224, 224)
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    width: int = Field(default=64, gt=0)      # filters of the first convolution; the others scale with it
    hidden: int = Field(default=4096, gt=0)   # units of the two hidden Dense layers


def alexnet(cfg: AlexNetConfig) -> dict[str, Any]:
    def filters(n: int) -> int:
        return n * cfg.width // 64

    layers = [
        {"kind": "Input", "name": "image", "shape": list(cfg.input_shape)},                     # (3, 224, 224)
        {"kind": "Conv2D", "name": "features_0", "filters": filters(64), "kernel_size": 11, "stride": 4, "padding": 2},
        {"kind": "ReLU", "name": "features_1"},                                                  # (64, 55, 55)
        {"kind": "MaxPool2D", "name": "features_2", "pool_size": 3, "stride": 2},                # (64, 27, 27)
        {"kind": "Conv2D", "name": "features_3", "filters": filters(192), "kernel_size": 5, "padding": 2},
        {"kind": "ReLU", "name": "features_4"},                                                  # (192, 27, 27)
        {"kind": "MaxPool2D", "name": "features_5", "pool_size": 3, "stride": 2},                # (192, 13, 13)
        {"kind": "Conv2D", "name": "features_6", "filters": filters(384), "kernel_size": 3, "padding": 1},
        {"kind": "ReLU", "name": "features_7"},                                                  # (384, 13, 13)
        {"kind": "Conv2D", "name": "features_8", "filters": filters(256), "kernel_size": 3, "padding": 1},
        {"kind": "ReLU", "name": "features_9"},                                                  # (256, 13, 13)
        {"kind": "Conv2D", "name": "features_10", "filters": filters(256), "kernel_size": 3, "padding": 1},
        {"kind": "ReLU", "name": "features_11"},                                                 # (256, 13, 13)
        {"kind": "MaxPool2D", "name": "features_12", "pool_size": 3, "stride": 2},               # (256, 6, 6)
        {"kind": "AdaptiveAvgPool2D", "name": "avgpool", "output_size": 6},                      # (256, 6, 6)
        {"kind": "Flatten", "name": "flatten"},                                                  # (9216,)
        {"kind": "Dropout", "name": "classifier_0", "rate": cfg.dropout},
        {"kind": "Dense", "name": "classifier_1", "units": cfg.hidden},
        {"kind": "ReLU", "name": "classifier_2"},                                                # (4096,)
        {"kind": "Dropout", "name": "classifier_3", "rate": cfg.dropout},
        {"kind": "Dense", "name": "classifier_4", "units": cfg.hidden},
        {"kind": "ReLU", "name": "classifier_5"},                                                # (4096,)
        {"kind": "Dense", "name": "classifier_6", "units": cfg.num_classes},                     # (num_classes,)
    ]
    return {"name": "alexnet", "layers": layers, "head": "classifier_6"}


register_model("alexnet", AlexNetConfig, alexnet, "AlexNet (torchvision layout): 3x224x224 input, 1000 classes",
               small={"num_classes": 3, "input_shape": (3, 63, 63)})
