"""``save`` and ``load``: a trained model as one safe, self-describing file.

``save`` gathers the architecture, weights, optional optimizer and scheduler
state, labels, preprocessing, history, metrics, signature, provenance, card and
lineage into a manifest and writes everything with ``write_tensors`` (atomic
and durable). ``load`` validates the file, rebuilds the network on the meta
device and assigns the memory-mapped weights to it: no weight is copied and no
code named by the file runs. A spec architecture is rebuilt from data; a
user-defined ``nn.Module`` class is imported only when the caller passes
``trust_code=True`` or the class itself (``model_class=``).

``load_weights`` is the partial path: weights from a file into a module the
caller already has, with a report of missing, unexpected and mismatched keys.
"""
from __future__ import annotations

import importlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ConfigError, FormatError, SpecError, TrustError
from ..nn.build import SpecModule
from ..spec.model import ModelSpec
from .format import FORMAT_VERSION, KEY_MANIFEST, KEY_VERSION, RESERVED_PREFIX
from .integrity import content_hash, read_integrity
from .manifest import CLASS_REFERENCE, Manifest, provenance, read_header, read_manifest, validate_manifest
from .model import Model
from .tensors import TORCH_TO_SAFETENSORS, TensorFile, write_tensors

OPTIMIZER_PREFIX = "__optimizer__/"
CARD_FIELDS = ("license", "intended_use", "training_data", "limitations", "metrics")


def spec_signature(spec: ModelSpec) -> dict[str, Any]:
    def entry(name: str, dtype: str = "float32") -> dict[str, Any]:
        return {"name": name, "dtype": dtype, "shape": [None, *spec.shapes[name]]}

    return {
        "inputs": [entry(layer.name, getattr(layer.kind.fields, "dtype", "float32")) for layer in spec.inputs],
        "outputs": [entry(name) for name in spec.outputs],
    }


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@torch.no_grad()
def _signature_from_example(model: torch.nn.Module, example: Any) -> dict[str, Any]:
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


def _jsonable(value: Any, where: str, *, finite_only: bool = False) -> Any:
    """``value`` as plain JSON data (tuples become lists, numpy scalars numbers); anything else is refused."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            if finite_only:
                raise ConfigError(f"{where} is {value}; the file stores only finite numbers there")
            return None  # as the history does: JSON has no NaN
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise ConfigError(f"{where} has a key of type {type(key).__name__}; JSON keys are strings")
            out[str(key)] = _jsonable(item, f"{where}.{key}", finite_only=finite_only)
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]", finite_only=finite_only) for i, item in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy or 0-d torch scalar
        return _jsonable(value.item(), where, finite_only=finite_only)
    raise ConfigError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which is not JSON data; the model "
        "file stores only JSON (never pickles). Pass numbers, strings, lists and dicts"
    )


def _class_reference(cls: type) -> str:
    reference = f"{cls.__module__}:{cls.__qualname__}"
    if not CLASS_REFERENCE.match(reference):
        raise ConfigError(
            f"{reference} cannot be named in a file (a class defined inside a function is not importable); "
            "define the class at module level"
        )
    return reference


def _architecture(model: torch.nn.Module, spec: ModelSpec | None, init: Mapping[str, Any] | None) -> dict[str, Any]:
    if spec is not None:
        if init is not None:
            raise ConfigError("init= is for user-defined classes; a spec-built model is rebuilt from its spec alone")
        return {"type": "spec", "spec": spec.to_dict()}
    if isinstance(model, SpecModule):
        raise SpecError("this SpecModule has no spec; pass spec=...")
    if init is None:
        get_config = getattr(model, "get_config", None)
        init = get_config() if callable(get_config) else {}
    if not isinstance(init, Mapping):
        raise ConfigError(f"init= must be a dict of constructor keyword arguments, got {type(init).__name__}")
    needed = _required_arguments(type(model))
    if needed - set(init):
        raise SpecError(
            f"{type(model).__qualname__} has no spec, and rebuilding it needs its constructor arguments "
            f"{sorted(needed - set(init))}: pass init={{...}} (JSON values) to save(), give the class a get_config() "
            "method, or build the model from a spec with modelkeep.build()"
        )
    try:
        text = json.dumps(dict(init), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"the constructor arguments of {type(model).__qualname__} must be JSON data (numbers, strings, lists, "
            f"dicts) so the file never holds a pickle; {exc}. Pass init= with JSON-only values"
        ) from None
    return {"type": "class", "class": _class_reference(type(model)), "init": json.loads(text)}


def _required_arguments(cls: type) -> set[str]:
    import inspect

    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters
            if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def flatten_optimizer(optimizer: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors under ``__optimizer__/state/<param>/<key>`` and the JSON rest of ``optimizer.state_dict()``."""
    state_dict = optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer
    if not isinstance(state_dict, Mapping) or "param_groups" not in state_dict:
        raise ConfigError("optimizer= takes a torch optimizer (or its state_dict())")
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {}
    keys_are_int = all(isinstance(k, int) for k in state_dict.get("state", {}))
    for param_id, entries in state_dict.get("state", {}).items():
        record: dict[str, Any] = {"tensors": {}, "values": {}}
        for key, value in entries.items():
            if "/" in str(key) or not str(key):
                raise ConfigError(f"optimizer state key {key!r} cannot be stored (it must be non-empty and contain no '/')")
            if isinstance(value, torch.Tensor):
                name = f"{OPTIMIZER_PREFIX}state/{param_id}/{key}"
                tensors[name] = value
                record["tensors"][key] = name
            else:
                record["values"][key] = _jsonable(value, f"optimizer state {param_id}.{key}", finite_only=True)
        state[str(param_id)] = record
    document = {
        "class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}" if optimizer is not state_dict else None,
        "param_groups": _jsonable(state_dict["param_groups"], "optimizer param_groups", finite_only=True),
        "state": state,
        "state_keys": "int" if keys_are_int else "str",
    }
    return tensors, {k: v for k, v in document.items() if v is not None}


def _scheduler_document(scheduler: Any) -> dict[str, Any]:
    state = scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler
    document = {"state": _jsonable(state, "scheduler state")}
    if state is not scheduler:
        document["class"] = f"{type(scheduler).__module__}.{type(scheduler).__qualname__}"
    return document


def _lineage(parent: Any, lineage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    record = dict(_jsonable(dict(lineage), "lineage")) if lineage else {}
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
    durable: bool = True,
) -> Path:
    """Write ``model`` (an ``nn.Module`` or the ``FitResult`` of ``fit``) to ``path``.

    A spec-built module is stored as its spec. Any other ``nn.Module`` is stored
    as a reference to its class plus ``init`` (its constructor keyword
    arguments, JSON only; default ``model.get_config()`` if it has one, else
    ``{}``); loading it then needs ``trust_code=True`` or ``model_class=``.
    ``example_input`` (a batch) records the input/output signature of such a
    model. ``optimizer``/``scheduler`` add their state; ``parent`` (a path, a
    loaded ``Model`` or a content hash) records lineage. A ``FitResult``
    supplies labels, preprocessing, history, test metrics and hyperparameters
    itself. The write is atomic: on any failure an existing file at ``path`` is
    untouched.
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
    if isinstance(model, Model):  # re-saving a loaded model keeps what it knows unless told otherwise
        loaded = model
        model, spec = loaded.module, spec or loaded.spec
        labels = labels if labels is not None else loaded.manifest.labels
        preprocessing = preprocessing if preprocessing is not None else loaded.manifest.preprocessing
        history = history if history is not None else loaded.manifest.history
        task = task or loaded.manifest.task
        card = card if card is not None else loaded.manifest.card
        lineage = lineage if lineage is not None else loaded.manifest.lineage
        if spec is None and init is None:
            init = loaded.manifest.class_reference()[1]
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"save() takes a torch.nn.Module or a FitResult, got {type(model).__name__}")
    spec = spec or getattr(model, "spec", None)
    if spec is not None and not isinstance(spec, ModelSpec):
        raise SpecError(f"spec= must be a ModelSpec, got {type(spec).__name__}")
    architecture = _architecture(model, spec, init)
    if signature is None:
        if spec is not None:
            signature = spec_signature(spec)
        elif example_input is not None:
            signature = _signature_from_example(model, example_input)
    if card is not None and not isinstance(card, Mapping):
        raise ConfigError(f"card= must be a dict with fields such as {', '.join(CARD_FIELDS)}")

    tensors: dict[str, torch.Tensor] = dict(model.state_dict())
    reserved = [name for name in tensors if name.startswith(RESERVED_PREFIX)]
    if reserved:
        raise ConfigError(f"parameter names starting with {RESERVED_PREFIX!r} are reserved by the file format: {reserved[:3]}")
    optimizer_doc = None
    if optimizer is not None:
        optimizer_tensors, optimizer_doc = flatten_optimizer(optimizer)
        tensors.update(optimizer_tensors)
    manifest = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "task": task or "classification",
        "labels": [str(label) for label in labels] if labels is not None else None,
        "preprocessing": preprocessing.to_dict() if hasattr(preprocessing, "to_dict") else preprocessing,
        "history": history.to_dict() if hasattr(history, "to_dict") else history,
        "metrics": dict(metrics) if metrics else None,
        "hyperparameters": dict(hyperparameters) if hyperparameters else None,
        "signature": dict(signature) if signature is not None else None,
        "provenance": provenance(data_fingerprint),
        "card": dict(card) if card else None,
        "lineage": _lineage(parent, lineage),
        "optimizer": optimizer_doc,
        "scheduler": _scheduler_document(scheduler) if scheduler is not None else None,
    }
    manifest = {key: _jsonable(value, key) for key, value in manifest.items() if value is not None}
    validate_manifest(manifest, "save()")  # fail before writing, never after
    metadata = {
        "format": "pt",  # what Hugging Face tooling expects of a PyTorch safetensors file
        KEY_VERSION: str(FORMAT_VERSION),
        KEY_MANIFEST: json.dumps(manifest, separators=(",", ":"), allow_nan=False),
    }
    return write_tensors(path, tensors, metadata, durable=durable)


def _resolve_class(reference: str, path: Path, trust_code: bool, model_class: type | None) -> type:
    if model_class is not None:
        if not (isinstance(model_class, type) and issubclass(model_class, torch.nn.Module)):
            raise TypeError(f"model_class= must be a torch.nn.Module subclass, got {model_class!r}")
        return model_class
    if not trust_code:
        raise TrustError(
            f"{path} was saved from the user-defined class {reference}; rebuilding it means importing and running "
            f"that code, which modelkeep does only when you allow it: pass trust_code=True (only if you trust "
            f"the file and the code) or model_class=YourClass"
        )
    module_name, qualname = reference.split(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except ImportError as exc:
        raise FormatError(f"{path}: cannot import {reference} ({exc}); install the code that defines it") from None
    except AttributeError:
        raise FormatError(f"{path}: module {module_name!r} has no class {qualname!r}") from None
    if not (isinstance(target, type) and issubclass(target, torch.nn.Module)):
        raise TrustError(f"{path}: {reference} is not a torch.nn.Module subclass; refusing to call it")
    return target


def _construct(cls: type, init: dict[str, Any], path: Path) -> tuple[torch.nn.Module, bool]:
    """An instance of ``cls(**init)``, on the meta device when it allows it (no memory for weights)."""
    try:
        with torch.device("meta"):
            return cls(**init), True
    except Exception:  # noqa: BLE001 - some classes cannot be built on meta; retry on the CPU
        pass
    try:
        return cls(**init), False
    except Exception as exc:  # noqa: BLE001 - the class's own code failed on the file's arguments
        raise FormatError(
            f"{path}: {cls.__qualname__}(**{json.dumps(init)[:200]}) failed: {type(exc).__name__}: {exc}"
        ) from None


def _check_weights(path: Path, expected: Mapping[str, torch.Tensor], handle: TensorFile) -> None:
    names = set(handle.names(reserved=False))
    missing = sorted(set(expected) - names)
    unexpected = sorted(names - set(expected))
    if missing or unexpected:
        raise FormatError(
            f"{path}: weights do not match the architecture; missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, reference in expected.items():
        entry = handle.header.tensors[name]
        if tuple(entry.shape) != tuple(reference.shape):
            raise FormatError(
                f"{path}: tensor {name!r} has shape {list(entry.shape)} but the architecture needs "
                f"{list(reference.shape)}"
            )


def load(
    path: str | os.PathLike[str],
    *,
    verify: bool = True,
    device: str | torch.device | None = None,
    trust_code: bool = False,
    model_class: type | None = None,
) -> Model:
    """Read a modelkeep file into a ready-to-use ``Model`` (evaluation mode).

    A spec architecture is rebuilt from the data in the file. A user-defined
    class is imported only with ``trust_code=True``, or taken from
    ``model_class=`` (your own class; nothing is imported); otherwise
    ``TrustError``. Weights are memory-mapped, not copied. With ``verify`` (the
    default) every hash of every tensor read is checked and a mismatch raises
    ``IntegrityError``.
    """
    header, manifest = read_manifest(path, verify=verify)
    path = header.path
    spec = None
    kind = manifest.architecture_type
    if kind == "spec":
        spec = manifest.model_spec(path)
        with torch.device("meta"):
            module: torch.nn.Module = SpecModule(spec)
        on_meta = True
    elif kind == "class":
        reference, init = manifest.class_reference()
        cls = _resolve_class(reference, path, trust_code, model_class)
        module, on_meta = _construct(cls, init, path)
    else:
        raise FormatError(
            f"{path}: architecture type {kind[:40]!r} is not known to this modelkeep (known: 'spec', 'class'); "
            "the file may need a newer modelkeep. `modelkeep inspect` still shows its contents"
        )
    with TensorFile(path, verify=verify) as handle:
        expected = module.state_dict()
        _check_weights(path, expected, handle)
        state = {name: handle.tensor(name) for name in expected}
        integrity = handle.integrity
        if integrity is None:
            try:
                integrity = read_integrity(handle.header)
            except FormatError:  # the caller chose not to verify; a broken hash table only loses the content hash
                integrity = None
    module.load_state_dict(state, assign=on_meta, strict=True)
    if on_meta and any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        # A non-persistent buffer is not in the file; build the class for real and copy the weights in.
        if kind != "class":
            raise FormatError(f"{path}: the architecture has state that the file does not hold")
        module, _ = _construct_cpu(cls, init, path)
        module.load_state_dict(state, strict=True)
    if device is not None:
        module.to(device)
    module.eval()
    return Model(module=module, spec=spec, manifest=manifest, path=path,
                 content_hash=content_hash(header, integrity) if integrity is not None else None, verified=verify)


def _construct_cpu(cls: type, init: dict[str, Any], path: Path) -> tuple[torch.nn.Module, bool]:
    try:
        return cls(**init), False
    except Exception as exc:  # noqa: BLE001
        raise FormatError(f"{path}: {cls.__qualname__}(**init) failed: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class WeightsReport:
    """What ``load_weights`` did: which tensors it loaded and which it could not, and why."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the module, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the module
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # (name, file, module)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"missing from the file ({len(self.missing)}): {', '.join(self.missing[:10])}")
        if self.unexpected:
            lines.append(f"in the file but not in the module ({len(self.unexpected)}): {', '.join(self.unexpected[:10])}")
        for name, file_shape, module_shape in self.mismatched[:10]:
            lines.append(f"shape mismatch {name}: file {list(file_shape)}, module {list(module_shape)}")
        return "\n".join(lines)


def load_weights(
    module: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    verify: bool = True,
    prefix: str = "",
) -> WeightsReport:
    """Copy the weights of a model (or any safetensors) file into an existing ``module``.

    Only tensors whose name (after removing ``prefix``) and shape match are
    copied; the rest is reported. With ``strict`` any difference raises
    ``FormatError`` and nothing is copied. No code from the file runs.
    """
    expected = module.state_dict()
    mismatched, unexpected = [], []
    with TensorFile(path, verify=verify) as handle:
        state = {}
        for file_name in handle.names(reserved=False):
            if not file_name.startswith(prefix):
                continue
            name = file_name[len(prefix):]
            reference = expected.get(name)
            if reference is None:
                unexpected.append(name)
                continue
            entry = handle.header.tensors[file_name]
            if tuple(entry.shape) != tuple(reference.shape):
                mismatched.append((name, tuple(entry.shape), tuple(reference.shape)))
                continue
            state[name] = file_name
        missing = sorted(set(expected) - set(state) - {m[0] for m in mismatched})
        report = WeightsReport(sorted(state), missing, sorted(unexpected), mismatched)
        if strict and not report.complete:
            raise FormatError(f"{handle.path}: the weights do not fit the module:\n{report}")
        tensors = {name: handle.tensor(file_name) for name, file_name in state.items()}
    module.load_state_dict(tensors, strict=False)
    return report


def optimizer_state_dict(manifest: Manifest, handle: TensorFile) -> dict[str, Any] | None:
    """Rebuild the ``optimizer.state_dict()`` stored by ``save(..., optimizer=...)``, or ``None``."""
    document = manifest.optimizer
    if document is None:
        return None
    path = handle.path
    try:
        as_int = document.get("state_keys", "int") == "int"
        state: dict[Any, dict[str, Any]] = {}
        for key, record in document["state"].items():
            entries: dict[str, Any] = dict(record.get("values", {}))
            for name_in_state, tensor_name in record.get("tensors", {}).items():
                if not (isinstance(tensor_name, str) and tensor_name.startswith(OPTIMIZER_PREFIX)):
                    raise FormatError(f"{path}: optimizer tensor {str(tensor_name)[:80]!r} is outside {OPTIMIZER_PREFIX!r}")
                entries[name_in_state] = handle.tensor(tensor_name)
            state[int(key) if as_int else key] = entries
        groups = document["param_groups"]
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise FormatError(f"{path}: optimizer param_groups must be a list of objects")
        return {"state": state, "param_groups": [dict(g) for g in groups]}
    except KeyError as exc:
        raise FormatError(f"{path}: the optimizer section lacks {exc}, or names a tensor the file does not hold") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise FormatError(f"{path}: the optimizer section is malformed ({exc})") from None


__all__ = ["OPTIMIZER_PREFIX", "WeightsReport", "load", "load_weights", "save", "TORCH_TO_SAFETENSORS"]
