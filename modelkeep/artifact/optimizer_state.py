"""Optimizer and scheduler state in a model file, without pickles (docs/format.md, 4.1).

``flatten_optimizer`` splits ``optimizer.state_dict()`` into tensors under
``__optimizer__/state/<param>/<key>`` and a JSON section; ``optimizer_state_dict``
puts them back together from a loaded file. A scheduler's ``state_dict()`` must
already be JSON.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ConfigError, FormatError
from .manifest import Manifest
from .manifest_builder import jsonable

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .tensors import TensorFile

OPTIMIZER_PREFIX = "__optimizer__/"


def flatten_optimizer(optimizer: Any) -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    """Tensors under ``__optimizer__/state/<param>/<key>`` and the JSON rest of ``optimizer.state_dict()``."""
    import torch

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
                record["values"][key] = jsonable(value, f"optimizer state {param_id}.{key}", finite_only=True)
        state[str(param_id)] = record
    document = {
        "class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}" if optimizer is not state_dict else None,
        "param_groups": jsonable(state_dict["param_groups"], "optimizer param_groups", finite_only=True),
        "state": state,
        "state_keys": "int" if keys_are_int else "str",
    }
    return tensors, {k: v for k, v in document.items() if v is not None}


def scheduler_document(scheduler: Any) -> dict[str, Any]:
    """The manifest's ``scheduler`` section: ``{"class": ..., "state": scheduler.state_dict()}``."""
    state = scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler
    document = {"state": jsonable(state, "scheduler state")}
    if state is not scheduler:
        document["class"] = f"{type(scheduler).__module__}.{type(scheduler).__qualname__}"
    return document


def optimizer_state_dict(manifest: Manifest, handle: "TensorFile") -> dict[str, Any] | None:
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


__all__ = ["OPTIMIZER_PREFIX", "flatten_optimizer", "optimizer_state_dict", "scheduler_document"]
