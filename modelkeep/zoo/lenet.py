"""LeNet-5 (LeCun et al., 1998): two convolution/subsampling stages, then three fully connected layers.

The 1998 layout on a 32x32 grey image: C1 6@28x28, S2 6@14x14, C3 16@10x10,
S4 16@5x5, C5 120 (a 5x5 convolution down to 1x1), F6 84, output 10, with tanh.
As everybody does today, C3 connects to all six S2 maps (the paper used a
partial connection table, 1,516 weights instead of 2,416), subsampling is
plain average pooling (the paper's had a trainable coefficient and bias), and
the output is a Dense layer (the paper's used Euclidean RBF units): 61,706 parameters.
"""
from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ._base import register_model


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LeNetConfig:
    num_classes: int = Field(default=10, gt=0)
    input_shape: tuple[int, int, int] = (1, 32, 32)
    activation: str = "tanh"


def lenet(cfg: LeNetConfig) -> dict[str, Any]:
    act = cfg.activation
    layers = [
        {"kind": "Input", "name": "image", "shape": list(cfg.input_shape)},       # (1, 32, 32)
        {"kind": "Conv2D", "name": "c1", "filters": 6, "kernel_size": 5, "activation": act},    # (6, 28, 28)
        {"kind": "AvgPool2D", "name": "s2", "pool_size": 2},                       # (6, 14, 14)
        {"kind": "Conv2D", "name": "c3", "filters": 16, "kernel_size": 5, "activation": act},   # (16, 10, 10)
        {"kind": "AvgPool2D", "name": "s4", "pool_size": 2},                       # (16, 5, 5)
        {"kind": "Conv2D", "name": "c5", "filters": 120, "kernel_size": 5, "activation": act},  # (120, 1, 1)
        {"kind": "Flatten", "name": "flatten"},                                    # (120,)
        {"kind": "Dense", "name": "f6", "units": 84, "activation": act},           # (84,)
        {"kind": "Dense", "name": "output", "units": cfg.num_classes},             # (num_classes,)
    ]
    return {"name": "lenet5", "layers": layers, "head": "output"}


register_model("lenet5", LeNetConfig, lenet, "LeNet-5 (1998 layout): 32x32x1 input, tanh, 10 classes")
