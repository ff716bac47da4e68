"""Reusable CPU buffers: the only work a training step waits for when a checkpoint is taken.

``SnapshotBuffers.copy`` copies live tensors (weights, optimizer moments, ...)
into CPU tensors allocated on the first save and reused by every later one,
with ``Tensor.copy_``: no allocation and no page faults after the first save,
so the pause runs at memory-copy speed. Buffers for GPU tensors are pinned, so
the device-to-host copies run asynchronously and at full bus speed; the copy
waits for them once, at the end.

The caller must not hand the same buffers to a second writer while a first
one still reads them (``CheckpointManager`` waits for the save in flight first).

Deferred copies: ``copy(tensors, defer=names)`` copies only the tensors *not*
in ``names`` and returns, besides the buffers, the ``(buffer, live tensor)``
pairs still to be copied; ``fill(pending)`` copies them later (on the writer
thread). That is only correct while nothing writes those live tensors, which is
why ``CheckpointManager`` defers only model parameters and optimizer state
(which nothing but ``optimizer.step()`` changes) and fences before the step.
"""
from __future__ import annotations

from typing import Collection, Mapping, Sequence

import numpy as np
import torch


def _memcpy(destination: torch.Tensor, source: torch.Tensor) -> bool:
    """Copy contiguous CPU bytes with one plain memcpy; False when that does not apply.

    ``Tensor.copy_`` splits the copy over torch's intra-op threads, which
    collapses to a tenth of memory speed whenever the cores are busy — and
    they always are during a checkpoint, because the background writer is
    hashing the previous one. A single-threaded memcpy keeps memory speed.
    """
    if source.device.type != "cpu" or not source.is_contiguous() or source.numel() == 0:
        return False
    target = destination.reshape(-1).view(torch.uint8).numpy()
    np.copyto(target, source.detach().reshape(-1).view(torch.uint8).numpy(), casting="no")
    return True


class SnapshotBuffers:
    """Preallocated CPU copies of a named set of tensors.

    Call order: ``copy(tensors)`` -> hand the returned dict to a writer -> wait
    for the writer -> ``copy`` again.
    """

    def __init__(self, *, pin_memory: bool = True) -> None:
        self.pin_memory = pin_memory
        self._buffers: dict[str, torch.Tensor] = {}
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # the deferred copies of the last ``copy``

    @property
    def nbytes(self) -> int:
        return sum(buffer.numel() * buffer.element_size() for buffer in self._buffers.values())

    def copy(self, tensors: Mapping[str, torch.Tensor], *,
             defer: Collection[str] = ()) -> dict[str, torch.Tensor]:
        """CPU copies of ``tensors`` in reused buffers (reallocated only when a shape or dtype changes).

        The tensors named in ``defer`` (CPU tensors only) are not copied: their
        buffers are returned unfilled and ``self.pending`` holds the
        ``(buffer, tensor)`` pairs for ``fill``.
        """
        copies: dict[str, torch.Tensor] = {}
        devices: set[torch.device] = set()
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        for name, tensor in tensors.items():
            buffer = self._buffers.get(name)
            if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
                pin = self.pin_memory and tensor.device.type == "cuda"
                buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pin)
                self._buffers[name] = buffer
            on_device = tensor.device.type != "cpu"
            if name in defer and not on_device:
                pending.append((buffer, tensor))
                copies[name] = buffer
                continue
            if not _memcpy(buffer, tensor):
                buffer.copy_(tensor.detach(), non_blocking=on_device and buffer.is_pinned())
            if on_device:
                devices.add(tensor.device)
            copies[name] = buffer
        for stale in set(self._buffers) - set(tensors):
            del self._buffers[stale]
        for device in devices:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        self.pending = pending
        return copies

    @staticmethod
    def fill(pending: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Do the deferred copies ``copy`` left in ``pending`` (CPU to CPU)."""
        for buffer, tensor in pending:
            if not _memcpy(buffer, tensor):
                buffer.copy_(tensor.detach())
