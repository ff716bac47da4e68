"""modelkeep: the whole life of a PyTorch model, safely.

Declare a network as data (``ModelSpec``), build it (``build``), count it
(``count_parameters``), train it (``fit``), save it as one safe, self-describing
safetensors file (``save``), load it anywhere without running code (``load``)
and predict class names (``Model.predict``).

The public API is the table below, listed once: each name maps to the
subpackage that defines it, and is imported on first use so that ``import
modelkeep`` (and the CLI's ``--help``) stays fast and does not import torch
until a function needs it. ``docs/architecture.md`` shows the layers.
"""
from __future__ import annotations

from ._lazy import lazy_exports
from ._version import __version__

_EXPORTS = {
    # errors
    "ModelkeepError": "errors", "SpecError": "errors", "ShapeError": "errors", "FormatError": "errors",
    "IntegrityError": "errors", "UnsupportedVersionError": "errors", "TrustError": "errors",
    "SignatureError": "errors", "ModelNotFoundError": "errors",
    "ConfigError": "errors", "DataError": "errors", "TrainingError": "errors", "CheckpointError": "errors",
    "TrainingInterrupted": "errors",
    # io: durable writes
    "atomic_write": "io",
    # spec
    "ModelSpec": "spec", "load_spec": "spec", "count_parameters": "spec", "LAYER_KINDS": "spec",
    "INITIALIZERS": "spec", "ParameterReport": "spec", "register_kind": "spec",
    # zoo
    "ZOO": "zoo", "get_spec": "zoo", "list_models": "zoo", "register_model": "zoo", "resolve_spec": "zoo",
    # nn
    "build": "nn", "SpecModule": "nn", "register_builder": "nn",
    # processing
    "Standardize": "processing", "MinMaxScale": "processing", "Rescale": "processing",
    # data
    "load_dataset": "data", "split_dataset": "data", "Dataset": "data", "load_data": "data", "kfold_splits": "data",
    "ImageFolder": "data", "ReaderLimits": "data", "dataset_from_arrays": "data",
    # artifact: the model file
    "save": "artifact", "Model": "artifact", "Prediction": "artifact", "History": "artifact",
    "read_tensors": "artifact", "write_tensors": "artifact", "TensorFile": "artifact",
    "read_header": "artifact", "load_weights": "artifact", "WeightsReport": "artifact", "describe": "artifact",
    "diff_files": "artifact", "export_json": "artifact", "import_json": "artifact", "verify_file": "artifact",
    "content_hash": "artifact", "Manifest": "artifact", "read_manifest": "artifact", "manifest_schema": "artifact",
    "sign_file": "artifact", "verify_signature": "artifact", "generate_keys": "artifact",
    # registry: load also takes registry://, s3:// and oci:// URLs of registry versions
    "load": "registry.refs",
    # checkpoint
    "CheckpointManager": "checkpoint", "list_checkpoints": "checkpoint", "export_checkpoint": "checkpoint",
    "set_aside_checkpoints": "checkpoint",
    # train
    "fit": "train", "FitSettings": "train", "evaluate": "train", "FitResult": "train", "EarlyStopping": "train",
    "Callback": "train", "LoopState": "train", "compute_metrics": "train", "plot_history": "train",
    "seed_everything": "train", "CheckpointSettings": "train",
    # train: the seams fine-tuning and multi-process training plug into
    "Regularizer": "train", "GroupRule": "train", "ModePolicy": "train", "ProcessStrategy": "train",
    # export: models out to ONNX and plain state dicts
    "export_onnx": "export", "export_state_dict": "export", "export_triton": "export", "ExportError": "errors",
    # importers: models from elsewhere, in
    "import_model": "importers", "ImportReport": "importers",
    # transfer: fine-tuning a model that starts from another
    "finetune": "transfer", "TransferSettings": "transfer", "summary": "transfer",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
