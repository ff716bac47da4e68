"""A multilayer perceptron: Dense layers with an activation (and optional dropout) between them."""
from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ._base import register_model


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MLPConfig:
    input_features: int = Field(default=784, gt=0)
    hidden: tuple[int, ...] = (256, 128)
    num_classes: int = Field(default=10, gt=0)
    activation: str = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


def mlp(cfg: MLPConfig) -> dict[str, Any]:
    layers: list[dict[str, Any]] = [{"kind": "Input", "name": "x", "shape": [cfg.input_features]}]  # (784,)
    for index, units in enumerate(cfg.hidden, start=1):
        layers.append({"kind": "Dense", "name": f"fc{index}", "units": units, "activation": cfg.activation})
        if cfg.dropout:
            layers.append({"kind": "Dropout", "name": f"dropout{index}", "rate": cfg.dropout})  # (units,)
    layers.append({"kind": "Dense", "name": "head", "units": cfg.num_classes})                  # (num_classes,)
    return {"name": "mlp", "layers": layers, "head": "head"}


register_model("mlp", MLPConfig, mlp, "Multilayer perceptron: 784 inputs, hidden 256-128 (relu), 10 classes")
