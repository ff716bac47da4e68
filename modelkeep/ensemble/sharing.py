"""Tensors shared between members: found by their bytes, so an ensemble of fine-tunes stores a frozen base once.

Ten fine-tunes of one base whose body was frozen hold ten byte-identical copies
of the body; the file stores the first and records the other nine as
references (the ``shared`` map of the ensemble architecture, docs/format.md
3.1). Equality is decided on the bytes (dtype, shape, then every byte), never on
a hash alone, so two tensors that merely collide are both stored.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import xxhash

from ..artifact.ensemble_codec import member_prefix

MIN_SHARED_BYTES = 256  # smaller tensors cost less to store than to name in the manifest


def _raw(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def find_shared(members: Sequence[nn.Module]) -> dict[str, str]:
    """``{later tensor: first identical tensor}`` over the members' state dicts, named as in the ensemble."""
    first_of: dict[tuple[str, tuple[int, ...], str], list[tuple[str, torch.Tensor]]] = {}
    shared: dict[str, str] = {}
    for index, member in enumerate(members):
        for name, tensor in member.state_dict().items():
            if tensor.numel() * tensor.element_size() < MIN_SHARED_BYTES:
                continue
            raw = _raw(tensor)
            key = (str(tensor.dtype), tuple(tensor.shape), xxhash.xxh3_128_hexdigest(raw))
            full = member_prefix(index) + name
            candidates = first_of.setdefault(key, [])
            same = next((stored for stored, other in candidates if _raw(other) == raw), None)
            if same is None:
                candidates.append((full, tensor))
            else:
                shared[full] = same
    return shared


__all__ = ["MIN_SHARED_BYTES", "find_shared"]
