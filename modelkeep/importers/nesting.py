"""Finding the weights in what ``torch.load`` returns: a state dict, or a training checkpoint around one.

People save ``model.state_dict()``, but also ``{"epoch": 3, "model_state_dict": ..., "optimizer_state_dict":
...}``, ``{"state_dict": ...}`` (PyTorch Lightning, with ``model.`` in front of every name),
``{"model": ...}`` or ``{"ema": ...}``. ``find_tensors`` takes the weights from the first of the
usual keys that holds tensors (else from the whole object), flattens nested dicts of tensors into
dotted names, and notes what it left out. It works on any object tree: the meta tensors of a
dry pass as well as real ones.
"""
from __future__ import annotations

from typing import Any, Mapping

#: Where training checkpoints keep the model's weights, in the order they are looked for.
WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "ema", "model_ema",
               "weights", "params")
MAX_DEPTH = 8
MAX_NOTED = 8


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _holds_tensors(value: Any, depth: int = 0) -> bool:
    if _is_tensor(value):
        return True
    if isinstance(value, Mapping) and depth < MAX_DEPTH:
        return any(_holds_tensors(item, depth + 1) for item in value.values())
    return False


def flatten(value: Mapping[str, Any], prefix: str = "", depth: int = 0,
            skipped: list[str] | None = None) -> dict[str, Any]:
    """``{dotted name: tensor}`` of a nested dict; the names of entries that are not tensors go to ``skipped``."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if _is_tensor(item):
            out[name] = item
        elif isinstance(item, Mapping) and depth < MAX_DEPTH and _holds_tensors(item):
            out.update(flatten(item, name + ".", depth + 1, skipped))
        elif skipped is not None:
            skipped.append(name)
    return out


def find_tensors(loaded: Any) -> tuple[dict[str, Any], str | None, list[str]]:
    """``(tensors by name, the key they were under or None, notes)`` of a loaded ``torch.save`` object."""
    if _is_tensor(loaded):
        return {"weight": loaded}, None, ["the file holds a single tensor; it is named 'weight'"]
    if not isinstance(loaded, Mapping):
        return {}, None, [f"the file holds a {type(loaded).__name__}, not a dict of tensors"]
    notes: list[str] = []
    container, key = loaded, None
    if not all(_is_tensor(v) for v in loaded.values()):
        key = next((k for k in WEIGHT_KEYS if isinstance(loaded.get(k), Mapping) and _holds_tensors(loaded[k])), None)
        if key is not None:
            container = loaded[key]
            others = [str(k) for k in loaded if k != key]
            notes.append(f"took the weights under {key!r}" + (
                f"; left out {', '.join(others[:MAX_NOTED])}" + (" ..." if len(others) > MAX_NOTED else "")
                if others else ""))
    skipped: list[str] = []
    tensors = flatten({str(k): v for k, v in container.items()}, skipped=skipped)
    if skipped:
        notes.append(f"ignored {len(skipped)} entries that are not tensors: "
                     f"{', '.join(skipped[:MAX_NOTED])}" + (" ..." if len(skipped) > MAX_NOTED else ""))
    return tensors, key, notes


__all__ = ["WEIGHT_KEYS", "find_tensors", "flatten"]
