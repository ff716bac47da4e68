"""``save``: a trained model as one safe, self-describing file.

``save`` gathers what it is given (or what a ``FitResult`` or a loaded
``Model`` carries), asks the architecture codec for the architecture document,
hands every piece to the one manifest builder (``manifest_builder``) and
writes tensors and manifest with ``write_tensors`` (atomic and durable). It
never writes anything else, and fails before writing when anything is wrong.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ConfigError, SpecError
from ..spec.model import ModelSpec
from .architecture import ArchitectureCodec
from .codecs import codec_for
from .class_codec import class_reference
from .format import RESERVED_PREFIX, read_header
from .integrity import content_hash
from .manifest_builder import build_manifest, jsonable, manifest_metadata, provenance_record
from .model import Model
from .optimizer_state import flatten_optimizer, scheduler_document
from .spec_codec import output_units, spec_signature
from .tensors import write_tensors

# What a FitResult or a loaded Model hands on to save unless the caller gives it.
_INHERITED = ("labels", "preprocessing", "postprocessing", "history", "metrics", "hyperparameters", "task", "card",
              "lineage", "data_fingerprint", "signature", "scheduler", "optimizer", "extra", "source")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@torch.no_grad()
def signature_from_example(model: torch.nn.Module, example: Any) -> dict[str, Any]:
    """Names, dtypes and shapes (batch axis variable) of the model's inputs and outputs on ``example``."""
    inputs = example if isinstance(example, (tuple, list)) else (example,)
    if not all(isinstance(x, torch.Tensor) for x in inputs):
        raise ConfigError("example_input must be a tensor (or a tuple of tensors) with a batch axis first")
    was_training = model.training
    model.eval()
    try:
        outputs = model(*inputs)
    finally:
        model.train(was_training)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)

    def entry(name: str, x: torch.Tensor) -> dict[str, Any]:
        return {"name": name, "dtype": _dtype_name(x.dtype), "shape": [None, *x.shape[1:]]}

    return {
        "inputs": [entry(f"input_{i}" if len(inputs) > 1 else "input", x) for i, x in enumerate(inputs)],
        "outputs": [entry(f"output_{i}" if len(outputs) > 1 else "output", y)
                    for i, y in enumerate(outputs) if isinstance(y, torch.Tensor)],
    }


def lineage_record(parent: Any, lineage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``lineage`` section: the caller's record plus the parent's content hash (from a path, a Model or a hash)."""
    record = dict(jsonable(dict(lineage), "lineage")) if lineage else {}
    if parent is not None:
        if isinstance(parent, Model):
            parent_hash, source = parent.content_hash, str(parent.path) if parent.path else None
        elif isinstance(parent, str) and parent.startswith("xxh3-128:"):
            parent_hash, source = parent, None
        elif isinstance(parent, (str, os.PathLike)):
            header = read_header(parent)
            parent_hash, source = content_hash(header), str(parent)
        else:
            raise ConfigError("parent= takes the parent's file path, its loaded Model, or its content hash")
        if parent_hash is None:
            raise ConfigError(f"the parent {source or parent!r} records no hashes, so its content hash is unknown")
        record["parent"] = {"content_hash": parent_hash, **({"source": source} if source else {})}
        record.setdefault("relation", "fine-tuned")
    return record or None


def _unpack(model: Any, spec: Any, init: Any, given: dict[str, Any]) -> tuple[Any, Any, Any, dict[str, Any]]:
    """``(module, spec, init, pieces)``: a ``FitResult`` or a loaded ``Model`` fills what the caller left ``None``."""
    pieces = dict(given)
    inherited: dict[str, Any] = {}
    if hasattr(model, "history") and hasattr(model, "model"):  # a FitResult
        result, model = model, model.model
        inherited = {"labels": result.labels, "preprocessing": result.preprocessing, "history": result.history,
                     "metrics": {f"test_{k}": v for k, v in result.test_metrics.items()} if result.test_metrics else None,
                     "hyperparameters": result.hyperparameters, "task": result.task,
                     "data_fingerprint": result.data_fingerprint,
                     "lineage": getattr(result, "lineage", None)}  # a fine-tune's result carries its lineage
    if isinstance(model, Model):  # re-saving a loaded model keeps every section unless told otherwise
        loaded = model
        model, spec = loaded.module, spec or loaded.spec
        inherited = _sections_of(loaded)
        if spec is None and init is None and loaded.manifest.architecture.get("type") == "class":
            init = class_reference(loaded.manifest.architecture)[1]
    for key in _INHERITED:
        if pieces.get(key) is None or (key in ("task", "data_fingerprint") and not pieces.get(key)):
            pieces[key] = inherited.get(key)
    return model, spec, init, pieces


def _sections_of(loaded: Model) -> dict[str, Any]:
    """Every section of a loaded model's manifest that a re-save hands on (the provenance is made afresh,
    keeping the data fingerprint; the optimizer state is read back from the file)."""
    manifest = loaded.manifest
    sections = {name: getattr(manifest, name) for name in _INHERITED if hasattr(manifest, name)}
    sections["data_fingerprint"] = (manifest.provenance or {}).get("data_fingerprint")
    sections["source"] = (manifest.provenance or {}).get("source")  # an imported model keeps where it came from
    sections["signature"] = manifest.signature
    sections["scheduler"] = manifest.scheduler
    sections["extra"] = dict(manifest.unknown)
    if manifest.optimizer is not None:
        state = loaded.optimizer_state()
        sections["optimizer"] = (state, manifest.optimizer.get("class"))
    return sections


def _without_timings(history: Any) -> Any:
    """The history less its ``time`` column: seconds per epoch differ from run to run, the learning does not."""
    document = history.to_dict() if hasattr(history, "to_dict") else history
    if isinstance(document, Mapping) and "time" in document:
        return {key: value for key, value in document.items() if key != "time"}
    return document


def _codec_for_module(module: torch.nn.Module, spec: Any) -> ArchitectureCodec:
    if spec is not None:
        return codec_for("spec")
    kind = getattr(module, "architecture_type", None)  # a module that names its own codec (an Ensemble)
    if isinstance(kind, str):
        return codec_for(kind)
    from ..nn import SpecModule

    if isinstance(module, SpecModule):
        raise SpecError("this SpecModule has no spec; pass spec=...")
    return codec_for("class")


def _tensors(module: torch.nn.Module, optimizer: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    tensors: dict[str, torch.Tensor] = dict(module.state_dict())
    reserved = [name for name in tensors if name.startswith(RESERVED_PREFIX)]
    if reserved:
        raise ConfigError(f"parameter names starting with {RESERVED_PREFIX!r} are reserved by the file format: {reserved[:3]}")
    if optimizer is None:
        return tensors, None
    recorded_class = None
    if isinstance(optimizer, tuple):  # (state_dict, class name) carried over from a loaded model
        optimizer, recorded_class = optimizer
    optimizer_tensors, optimizer_doc = flatten_optimizer(optimizer)
    if recorded_class and "class" not in optimizer_doc:
        optimizer_doc["class"] = recorded_class
    tensors.update(optimizer_tensors)
    return tensors, optimizer_doc


def _scheduler_section(given: Any, resolved: Any) -> dict[str, Any] | None:
    """The caller's scheduler (object or state), else the section a loaded model carried (already a document)."""
    if given is not None:
        return scheduler_document(given)
    return dict(resolved) if resolved is not None else None


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    spec: ModelSpec | None = None,
    init: Mapping[str, Any] | None = None,
    example_input: Any = None,
    signature: Mapping[str, Any] | None = None,
    labels: list[str] | tuple[str, ...] | None = None,
    preprocessing: Any = None,
    postprocessing: Any = None,
    history: Any = None,
    metrics: Mapping[str, Any] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    task: str | None = None,
    card: Mapping[str, Any] | None = None,
    data_fingerprint: str | None = None,
    optimizer: Any = None,
    scheduler: Any = None,
    parent: Any = None,
    lineage: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    durable: bool = True,
    reproducible: bool = False,
) -> Path:
    """Write ``model`` (an ``nn.Module``, the ``FitResult`` of ``fit``, or a loaded ``Model``) to ``path``.

    A spec-built module is stored as its spec. Any other ``nn.Module`` is stored
    as a reference to its class plus ``init`` (its constructor keyword
    arguments, JSON only; default ``model.get_config()`` if it has one, else
    ``{}``); loading it then needs ``trust_code=True`` or ``model_class=``.
    ``example_input`` (a batch) records the input/output signature of such a
    model. ``postprocessing`` (``"softmax"``, ``"sigmoid"``, ``"identity"`` or a
    post-processor) overrides the one chosen from the task, the loss, the output
    width and the final activation. ``optimizer``/``scheduler`` add their state;
    ``parent`` (a path, a loaded ``Model`` or a content hash) records lineage;
    ``source`` (what ``import_model`` passes: the foreign file's name, SHA-256,
    format and reader details) goes into the provenance. A
    ``FitResult`` supplies labels, preprocessing, history, test metrics and
    hyperparameters itself. The write is atomic: on any failure an existing
    file at ``path`` is untouched. ``reproducible=True`` records no clock or
    host values in the provenance (``created`` is ``SOURCE_DATE_EPOCH`` or the
    epoch) and no seconds per epoch in the history, so the same content always
    gives the same bytes (git and git-LFS then see a re-save as no change).
    """
    given = {"labels": labels, "preprocessing": preprocessing, "postprocessing": postprocessing, "history": history,
             "metrics": metrics, "hyperparameters": hyperparameters, "task": task, "card": card, "lineage": lineage,
             "data_fingerprint": data_fingerprint, "signature": signature, "scheduler": scheduler,
             "optimizer": optimizer, "extra": None, "source": source}
    module, spec, init, pieces = _unpack(model, spec, init, given)
    if reproducible:
        pieces["history"] = _without_timings(pieces["history"])
    optimizer = pieces["optimizer"]
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"save() takes a torch.nn.Module or a FitResult, got {type(module).__name__}")
    spec = spec or getattr(module, "spec", None)
    if spec is not None and not isinstance(spec, ModelSpec):
        raise SpecError(f"spec= must be a ModelSpec, got {type(spec).__name__}")
    architecture = _codec_for_module(module, spec).encode(module, spec=spec, init=init)
    if signature is None:  # given > the spec's > measured on example_input > carried from a loaded file
        if spec is not None:
            signature = spec_signature(spec)
        elif example_input is not None:
            signature = signature_from_example(module, example_input)
        else:
            signature = pieces["signature"]
    tensors, optimizer_doc = _tensors(module, optimizer)
    manifest = build_manifest(
        architecture, task=pieces["task"], labels=pieces["labels"], preprocessing=pieces["preprocessing"],
        postprocessing=pieces["postprocessing"], signature=signature, history=pieces["history"],
        metrics=pieces["metrics"], hyperparameters=pieces["hyperparameters"],
        provenance=provenance_record(pieces["data_fingerprint"], source=pieces["source"],
                                      reproducible=reproducible), card=pieces["card"],
        lineage=lineage_record(parent, pieces["lineage"]), optimizer=optimizer_doc,
        scheduler=_scheduler_section(scheduler, pieces["scheduler"]),
        final_activation=spec.final_activation() if spec is not None else None,
        output_units=output_units(spec) if spec is not None else None, extra=pieces["extra"],
    )
    return write_tensors(path, tensors, manifest_metadata(manifest), durable=durable)


__all__ = ["lineage_record", "save", "signature_from_example"]
