"""The model file: one safetensors file with a manifest; saved atomically, loaded without running code.

Names are imported on first use: ``format`` and ``manifest`` never import torch,
so inspecting a file stays fast and torch-free.
"""
from __future__ import annotations

from .._lazy import lazy_exports

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


__getattr__ = lazy_exports(__name__, _EXPORTS)
