"""``export_state_dict``: a model's weights as a plain PyTorch state dict, for people who leave modelkeep.

The file is ``torch.save`` of a dict from the built module's state-dict keys (``layers.<layer>.<param>`` for a
spec model) to tensors, nothing else: ``torch.load(path, weights_only=True)`` returns it and
``module.load_state_dict`` takes it. Weights tied to each other (GPT's head and token embedding) stay one
tensor in the file, as ``torch.save`` keeps shared storage. Tensors are copied out of the memory-mapped model
file first, so the output holds each tensor's own bytes and not the whole mapped file. Written atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ._source import resolve_source


def state_dict_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict as plain CPU tensors of their own, ties kept (one copy per shared tensor)."""
    copies: dict[tuple[Any, ...], torch.Tensor] = {}
    state = {}
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tuple(tensor.stride()), tensor.dtype, tensor.device)
        if key not in copies:
            copies[key] = tensor.to("cpu", copy=True).contiguous()
        state[name] = copies[key]
    return state


def export_state_dict(model_or_path: Any, out: str | os.PathLike[str], *, trust_code: bool = False) -> Path:
    """Write the weights of a model (a modelkeep file, a loaded ``Model``, a ``FitResult`` or a module) to
    ``out`` as a plain state dict that ``torch.load(out, weights_only=True)`` reads; returns the path."""
    from ..io.atomic import atomic_write

    if isinstance(model_or_path, torch.nn.Module):
        module = model_or_path
    else:
        module = resolve_source(model_or_path, trust_code=trust_code).module
    state = state_dict_of(module)
    with atomic_write(out) as handle:
        torch.save(state, handle)
    return Path(out)


__all__ = ["export_state_dict", "state_dict_of"]
