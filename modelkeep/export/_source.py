"""What an export starts from, in one shape: the network, its signature, and the saved pre- and post-processing.

An exporter accepts a modelkeep file (loaded with ``modelkeep.load``: nothing in it runs unless the caller
passes ``trust_code=True``), a loaded ``Model``, a ``FitResult`` or a built module, and turns it into a
``Source``. A module built from a spec carries its signature; any other module needs example inputs, from
which its signature is measured. This module writes nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

_DTYPES = ("float32", "float64", "float16", "int64", "int32", "bool")


@dataclass(frozen=True)
class Tensor:
    """One input or output of the network: its name, dtype and the shape of one sample (no batch axis)."""

    name: str
    dtype: str
    shape: tuple[Any, ...]

    @property
    def is_integer(self) -> bool:
        return self.dtype.startswith("int")


@dataclass(frozen=True)
class Source:
    """A network ready to export, with everything a file recorded about using it."""

    module: torch.nn.Module
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    preprocessing: Any = None  # a modelkeep.processing preprocessor (fitted), or None
    postprocessor: Any = None  # a modelkeep.processing post-processor, or None when unknown
    labels: tuple[str, ...] | None = None
    task: str | None = None
    spec: Any = None  # the ModelSpec, for a spec-built network
    facts: dict[str, str] = field(default_factory=dict)  # name, file, content hash: recorded in the export

    @property
    def name(self) -> str:
        return self.facts.get("name") or type(self.module).__name__


def resolve_source(model_or_path: Any, *, trust_code: bool = False, example: Any = None) -> Source:
    """A ``Source`` from a file path, a loaded ``Model``, a ``FitResult`` or a module (``example``: a batch of
    inputs, needed only for a module that is neither built from a spec nor loaded from a file)."""
    from ..artifact.model import Model

    if isinstance(model_or_path, (str, os.PathLike)):
        from ..artifact import load

        model_or_path = load(Path(model_or_path), trust_code=trust_code)
    if isinstance(model_or_path, Model):
        return _from_model(model_or_path)
    module = getattr(model_or_path, "model", None)
    if isinstance(module, torch.nn.Module) and hasattr(model_or_path, "preprocessing"):  # a FitResult
        return _from_fit_result(model_or_path)
    if isinstance(model_or_path, torch.nn.Module):
        return _from_module(model_or_path, example)
    raise ConfigError(f"export takes a modelkeep file, a loaded Model, a FitResult or a torch module; got "
                      f"{type(model_or_path).__name__}")


def _entries(signature: dict[str, Any] | None, direction: str) -> tuple[Tensor, ...]:
    entries = []
    for index, entry in enumerate((signature or {}).get(direction) or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
            continue
        name = entry.get("name") if isinstance(entry.get("name"), str) and entry.get("name") else f"{direction}_{index}"
        dtype = entry.get("dtype") if entry.get("dtype") in _DTYPES else "float32"
        entries.append(Tensor(name, dtype, tuple(entry["shape"][1:])))
    return tuple(entries)


def _spec_signature(spec: Any) -> dict[str, Any]:
    from ..artifact.spec_codec import spec_signature

    return spec_signature(spec)


def _from_model(model: Any) -> Source:
    signature = model.manifest.signature or (_spec_signature(model.spec) if model.spec is not None else None)
    inputs, outputs = _entries(signature, "inputs"), _entries(signature, "outputs")
    if not inputs or not outputs:
        raise ConfigError(f"{model.path}: the file records no input/output signature, so the exported graph's "
                          "inputs cannot be named or checked; re-save it with example_input=")
    facts = {"name": model.spec.name if model.spec is not None else type(model.module).__name__}
    if model.path is not None:
        facts["file"] = Path(model.path).name
    if model.content_hash:
        facts["content_hash"] = model.content_hash
    return Source(model.module, inputs, outputs, model.preprocessing, model.postprocessor, model.labels,
                  model.manifest.task, model.spec, facts)


def _from_fit_result(result: Any) -> Source:
    from ..processing.postprocess import postprocessor_for

    module = result.model
    spec = getattr(module, "spec", None)
    if spec is None:
        raise ConfigError("this FitResult's model was not built from a spec; save it and export the file instead")
    signature = _spec_signature(spec)
    loss = (result.hyperparameters or {}).get("loss")
    units = int(spec.output_shape[-1]) if spec.output_shape else None
    post = postprocessor_for(result.task, output_units=units, final_activation=spec.final_activation(),
                             loss=loss if isinstance(loss, str) else None, labels=result.labels)
    return Source(module, _entries(signature, "inputs"), _entries(signature, "outputs"), result.preprocessing,
                  post, result.labels, result.task, spec, {"name": spec.name})


def _from_module(module: torch.nn.Module, example: Any) -> Source:
    spec = getattr(module, "spec", None)
    if spec is not None and hasattr(spec, "inputs"):
        signature = _spec_signature(spec)
        return Source(module, _entries(signature, "inputs"), _entries(signature, "outputs"), spec=spec,
                      facts={"name": spec.name})
    if example is None:
        raise ConfigError(f"a {type(module).__name__} module records no signature: pass data= (a batch of example "
                          "inputs) or export its saved modelkeep file")
    from ..artifact.saving import signature_from_example

    batch = example if isinstance(example, (tuple, list)) else (example,)
    batch = tuple(torch.as_tensor(np.asarray(x)) for x in batch)
    signature = signature_from_example(module, batch)
    return Source(module, _entries(signature, "inputs"), _entries(signature, "outputs"),
                  facts={"name": type(module).__name__})


__all__ = ["Source", "Tensor", "resolve_source"]
