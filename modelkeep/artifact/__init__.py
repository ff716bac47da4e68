"""The model file: one safetensors file with a manifest; saved atomically, loaded without running code.

Modules: ``format`` (bytes), ``integrity`` (hashes), ``manifest`` (the
validated document) and ``manifest_builder`` (the one place it is assembled),
``architecture`` (the codec registry, with ``spec_codec`` and ``class_codec``),
``tensors`` (reading and writing), ``saving``/``loading`` (``save``/``load``),
``model`` (``Model``), ``history`` (the training record), ``inspection``,
``diff``, ``json_form`` and ``signing`` (OpenSSF model-signing signatures;
its ``verify_file`` is exported as ``verify_signature``, since ``verify_file``
here is the integrity check). This layer may import only errors, the registry,
the version, ``io``, ``spec``, ``nn``, ``zoo`` and ``processing``.

Names are imported on first use: ``format``, ``manifest`` and ``architecture``
never import torch, NumPy or pydantic, so inspecting a file stays fast.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "FORMAT_VERSION": "format", "Header": "format", "read_header": "format",
    "Manifest": "manifest", "read_manifest": "manifest", "manifest_schema": "manifest",
    "build_manifest": "manifest_builder", "manifest_metadata": "manifest_builder",
    "ARCHITECTURES": "codecs", "ArchitectureCodec": "architecture",
    "Model": "model", "Prediction": "model", "History": "history",
    "save": "saving", "load": "loading", "load_weights": "loading", "WeightsReport": "loading",
    "TensorFile": "tensors", "read_tensors": "tensors", "write_tensors": "tensors",
    "content_hash": "integrity", "verify_file": "integrity",
    "describe": "inspection", "diff_files": "diff",
    "export_json": "json_form", "import_json": "json_form",
    "sign_file": "signing", "verify_signature": "signing", "generate_keys": "signing",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
