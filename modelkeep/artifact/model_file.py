"""``save`` and ``load``: a trained model as one safe, self-describing file.

``save`` gathers the spec, weights, labels, preprocessing, history, metrics and
provenance into a manifest and writes everything with ``write_tensors``
(atomic and durable). ``load`` validates the file, rebuilds the network from
its spec on the meta device and assigns the memory-mapped weights to it: no
code from the file runs, no training script is needed, no weight is copied.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import FormatError, SpecError
from ..nn.build import SpecModule
from ..spec.model import ModelSpec
from .format import FORMAT_VERSION, KEY_MANIFEST, KEY_VERSION
from .manifest import Manifest, provenance, read_manifest
from .model import Model
from .tensors import TensorFile, write_tensors


def _signature(spec: ModelSpec) -> dict[str, Any]:
    def entry(name: str, dtype: str = "float32") -> dict[str, Any]:
        return {"name": name, "dtype": dtype, "shape": [None, *spec.shapes[name]]}

    return {
        "inputs": [entry(layer.name, getattr(layer.kind.fields, "dtype", "float32")) for layer in spec.inputs],
        "outputs": [entry(name) for name in spec.outputs],
    }


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    spec: ModelSpec | None = None,
    labels: list[str] | tuple[str, ...] | None = None,
    preprocessing: Any = None,
    history: Any = None,
    metrics: Mapping[str, Any] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    task: str | None = None,
    card: Mapping[str, Any] | None = None,
    data_fingerprint: str | None = None,
    durable: bool = True,
) -> Path:
    """Write ``model`` (a spec-built module, or the ``FitResult`` of ``fit``) to ``path``.

    Everything passed is stored in the file's manifest; a ``FitResult`` supplies
    labels, preprocessing, history, test metrics and hyperparameters itself.
    The write is atomic: on any failure an existing file at ``path`` is untouched.
    """
    if hasattr(model, "history") and hasattr(model, "model"):  # a FitResult
        result = model
        model = result.model
        labels = labels if labels is not None else result.labels
        preprocessing = preprocessing if preprocessing is not None else result.preprocessing
        history = history if history is not None else result.history
        metrics = metrics if metrics is not None else (
            {f"test_{k}": v for k, v in result.test_metrics.items()} if result.test_metrics else None
        )
        hyperparameters = hyperparameters if hyperparameters is not None else result.hyperparameters
        task = task or result.task
        data_fingerprint = data_fingerprint or result.data_fingerprint
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"save() takes a torch.nn.Module or a FitResult, got {type(model).__name__}")
    spec = spec or getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise SpecError(
            f"{type(model).__name__} has no spec, so its architecture cannot be saved as data; build it from a "
            "spec with modelkeep.build(), or pass spec=..."
        )
    manifest = {
        "format_version": FORMAT_VERSION,
        "architecture": {"type": "spec", "spec": spec.to_dict()},
        "task": task or "classification",
        "labels": list(labels) if labels is not None else None,
        "preprocessing": preprocessing.to_dict() if preprocessing is not None else None,
        "history": history.to_dict() if hasattr(history, "to_dict") else history,
        "metrics": dict(metrics) if metrics else None,
        "hyperparameters": dict(hyperparameters) if hyperparameters else None,
        "signature": _signature(spec),
        "provenance": provenance(data_fingerprint),
        "card": dict(card) if card else None,
    }
    Manifest.model_validate(manifest)  # fail before writing, never after
    metadata = {
        "format": "pt",  # what Hugging Face tooling expects of a PyTorch safetensors file
        KEY_VERSION: str(FORMAT_VERSION),
        KEY_MANIFEST: json.dumps({k: v for k, v in manifest.items() if v is not None}, separators=(",", ":")),
    }
    return write_tensors(path, model.state_dict(), metadata, durable=durable)


def load(
    path: str | os.PathLike[str],
    *,
    verify: bool = True,
    device: str | torch.device | None = None,
) -> Model:
    """Read a modelkeep file into a ready-to-use ``Model`` (evaluation mode).

    The network is rebuilt from the spec in the file; no code from the file is
    executed. With ``verify`` (the default) every hash is checked and a
    mismatch raises ``IntegrityError``.
    """
    header, manifest = read_manifest(path)
    try:
        spec = ModelSpec.from_dict(manifest.spec_dict())
    except SpecError as exc:
        raise FormatError(f"{header.path}: the architecture in the file is invalid: {exc}") from None
    with torch.device("meta"):
        module = SpecModule(spec)
    with TensorFile(path, verify=verify) as handle:
        expected = module.state_dict()
        missing = sorted(set(expected) - set(handle.names()))
        unexpected = sorted(set(handle.names()) - set(expected))
        if missing or unexpected:
            raise FormatError(
                f"{header.path}: weights do not match the architecture; missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        state = {}
        for name, reference in expected.items():
            entry = handle.header.tensors[name]
            if tuple(entry.shape) != tuple(reference.shape):
                raise FormatError(
                    f"{header.path}: tensor {name!r} has shape {list(entry.shape)} but the architecture "
                    f"needs {list(reference.shape)}"
                )
            state[name] = handle.tensor(name)
    module.load_state_dict(state, assign=True)
    if device is not None:
        module.to(device)
    module.eval()
    return Model(module=module, spec=spec, manifest=manifest, path=header.path)
