"""The model file: one safetensors file with a manifest; saved atomically, loaded without running code.

Names are imported on first use: ``format`` and ``manifest`` never import torch,
so inspecting a file stays fast and torch-free.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FORMAT_VERSION": "format", "Header": "format", "read_header": "format",
    "Manifest": "manifest", "read_manifest": "manifest", "manifest_schema": "manifest",
    "Model": "model", "Prediction": "model",
    "load": "model_file", "save": "model_file", "load_weights": "model_file", "WeightsReport": "model_file",
    "TensorFile": "tensors", "read_tensors": "tensors", "write_tensors": "tensors",
    "content_hash": "integrity", "verify_file": "integrity",
    "describe": "inspection", "diff_files": "diff",
    "export_json": "json_form", "import_json": "json_form",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
