"""modelkeep: the whole life of a PyTorch model, safely.

Declare a network as data (``ModelSpec``), build it (``build``), count it
(``count_parameters``), train it (``fit``), save it as one safe, self-describing
safetensors file (``save``), load it anywhere without running code (``load``)
and predict class names (``Model.predict``).

Names are imported on first use so that ``import modelkeep`` (and the CLI's
``--help``) stay fast and do not import torch until a function needs it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # errors
    "ModelkeepError": "errors", "SpecError": "errors", "ShapeError": "errors", "FormatError": "errors",
    "IntegrityError": "errors", "UnsupportedVersionError": "errors", "TrustError": "errors", "ModelNotFoundError": "errors",
    "ConfigError": "errors", "DataError": "errors", "TrainingError": "errors", "CheckpointError": "errors",
    "TrainingInterrupted": "errors",
    # spec
    "ModelSpec": "spec", "load_spec": "spec", "count_parameters": "spec", "LAYER_KINDS": "spec",
    "INITIALIZERS": "spec", "ParameterReport": "spec", "register_kind": "spec",
    # zoo
    "ZOO": "zoo", "get_spec": "zoo", "list_models": "zoo", "register_model": "zoo", "resolve_spec": "zoo",
    # nn
    "build": "nn", "SpecModule": "nn",
    # data
    "load_dataset": "data", "split_dataset": "data", "Dataset": "data", "Standardize": "data",
    "load_data": "data", "kfold_splits": "data", "ImageFolder": "data", "MinMaxScale": "data", "Rescale": "data",
    # train
    "fit": "train", "evaluate": "train", "History": "train", "FitResult": "train",
    "EarlyStopping": "train", "Callback": "train", "TrainState": "train", "compute_metrics": "train",
    "plot_history": "train", "seed_everything": "train", "CheckpointSettings": "train",
    "set_aside_checkpoints": "train",
    # artifact
    "save": "artifact", "load": "artifact", "Model": "artifact", "Prediction": "artifact",
    "read_tensors": "artifact", "write_tensors": "artifact", "TensorFile": "artifact",
    "read_header": "artifact", "load_weights": "artifact", "WeightsReport": "artifact", "describe": "artifact",
    "diff_files": "artifact", "export_json": "artifact", "import_json": "artifact", "verify_file": "artifact",
    "content_hash": "artifact", "Manifest": "artifact", "read_manifest": "artifact", "manifest_schema": "artifact",
    # checkpoint
    "atomic_write": "checkpoint", "CheckpointManager": "checkpoint", "list_checkpoints": "checkpoint",
    "export_checkpoint": "checkpoint",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from .artifact import (Manifest, Model, Prediction, TensorFile, WeightsReport, content_hash, describe, diff_files,
                           export_json, import_json, load, load_weights, manifest_schema, read_header, read_manifest,
                           read_tensors, save, verify_file, write_tensors)
    from .checkpoint import CheckpointManager, atomic_write, export_checkpoint, list_checkpoints
    from .data import (Dataset, ImageFolder, MinMaxScale, Rescale, Standardize, kfold_splits, load_data,
                       load_dataset, split_dataset)
    from .errors import *  # noqa: F403
    from .nn import SpecModule, build
    from .spec import INITIALIZERS, LAYER_KINDS, ModelSpec, ParameterReport, count_parameters, load_spec, register_kind
    from .zoo import ZOO, get_spec, list_models, register_model, resolve_spec
    from .train import (Callback, CheckpointSettings, EarlyStopping, FitResult, History, TrainState, compute_metrics,
                        evaluate, fit, plot_history, seed_everything, set_aside_checkpoints)
