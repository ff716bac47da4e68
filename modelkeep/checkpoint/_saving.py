"""What ``CheckpointManager.save`` writes and how it reports failures: pure helpers, no state, no I/O.

``checkpoint_metadata`` builds the JSON document a checkpoint carries under
``modelkeep.checkpoint`` (position, metrics, monitor, history, extra, manifest
pieces, trigger state, the state tree); ``deferrable`` picks the tensors whose
copy may wait for the fence; ``reason`` turns an ``OSError`` into words a user
can act on ("the disk is full").
"""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, ModelkeepError
from .reading import CHECKPOINT_KEY, CHECKPOINT_VERSION
from .state import Position, CheckpointState, encode_tree


def checkpoint_metadata(position: Position, tensors: dict[str, torch.Tensor], tree: Any, *,
                        metrics: Mapping[str, Any] | None, monitor: tuple[str, str] | None, history: Any,
                        extra: Any, extra_manifest: Mapping[str, Any] | None,
                        trigger_state: Any) -> dict[str, str]:
    """The safetensors metadata of a checkpoint; tensors found in ``history``/``extra``/triggers join ``tensors``."""
    document = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "position": position.to_dict(),
        "metrics": encode_tree(plain_metrics(metrics), "metrics/", {}),
        "monitor": {"metric": monitor[0], "mode": monitor[1]} if monitor else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
        "history": encode_tree(history, "history/", tensors),
        "extra": encode_tree(extra, "extra/", tensors),
        "extra_manifest": encode_tree(dict(extra_manifest), "manifest/", {}) if extra_manifest else None,
        "triggers": encode_tree(trigger_state(), "triggers/", tensors) if trigger_state else None,
        "state": tree,
    }
    return {
        "format": "pt",
        "modelkeep.format_version": "1",
        CHECKPOINT_KEY: json.dumps(document, separators=(",", ":"), allow_nan=False),
    }


def _tensor_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    return (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))


def deferrable(state: CheckpointState, tensors: Mapping[str, torch.Tensor]) -> set[str]:
    """The names in ``tensors`` that are model parameters or optimizer state tensors on the CPU.

    Only ``optimizer.step()`` changes those (a forward or backward pass does not),
    so their copy may wait for the fence. Matched by memory (``capture`` hands
    out detached views of the live tensors), never by name.
    """
    live = [p for p in state.model.parameters()]
    optimizer_state = getattr(state.optimizer, "state", None)
    if isinstance(optimizer_state, Mapping):
        for per_parameter in optimizer_state.values():
            if isinstance(per_parameter, Mapping):
                live.extend(v for v in per_parameter.values() if isinstance(v, torch.Tensor))
    keys = {_tensor_key(t) for t in live if t.device.type == "cpu" and t.numel()}
    return {name for name, t in tensors.items()
            if t.device.type == "cpu" and t.numel() and _tensor_key(t) in keys}


def plain_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        elif hasattr(value, "item") and callable(value.item):  # NumPy scalars
            value = value.item()
        if isinstance(value, (bool, int, float, str)) or value is None:
            plain[str(key)] = value
    return plain


def reason(exc: BaseException) -> str:
    if isinstance(exc, ModelkeepError):  # already says what was wrong and how to fix it
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        hint = {28: " (the disk is full)", 27: " (the file size limit was reached)",
                13: " (the folder is not writable)", 30: " (the file system is read-only)"}.get(exc.errno or 0, "")
        return f"{exc.strerror}{hint}"
    return f"{type(exc).__name__}: {exc}"


def as_checkpoint_error(error: BaseException, what: str) -> CheckpointError:
    if isinstance(error, CheckpointError):
        return error
    return CheckpointError(f"the {what} failed: {reason(error)}; earlier checkpoints are intact")
