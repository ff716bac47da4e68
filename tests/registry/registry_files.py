"""Small modelkeep-style files for the registry tests: a shared frozen backbone and per-version heads."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from modelkeep.artifact.format import KEY_MANIFEST
from modelkeep.artifact.tensors import write_tensors


def backbone(seed: int = 0, width: int = 64, layers: int = 4) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(layers):
        tensors[f"features.{i}.weight"] = torch.randn(width, width, generator=gen)
        tensors[f"features.{i}.bias"] = torch.randn(width, generator=gen)
    return tensors


def head(seed: int, width: int = 64, classes: int = 10) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + seed)
    return {"head.weight": torch.randn(classes, width, generator=gen), "head.bias": torch.randn(classes, generator=gen)}


def write_model(path: Path, tensors: dict[str, torch.Tensor], *, metrics: dict | None = None,
                hyperparameters: dict | None = None) -> Path:
    manifest = {"metrics": metrics, "hyperparameters": hyperparameters, "lineage": None}
    return write_tensors(path, tensors, {KEY_MANIFEST: json.dumps(manifest), "modelkeep.format_version": "1"},
                         durable=False)


def fine_tune(path: Path, seed: int, *, width: int = 64, **kwargs) -> Path:
    """A fine-tune of backbone(0): frozen backbone, its own head."""
    return write_model(path, {**backbone(0, width), **head(seed, width)}, **kwargs)
