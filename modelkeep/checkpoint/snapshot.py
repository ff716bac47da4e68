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

File image: the buffers are views into one page-aligned block laid out as the
checkpoint file itself (``_image.py``), and ``copy`` returns them as a
``SnapshotTensors`` dict whose ``file_image`` lets ``LocalStorage`` write that
block in one pass, bypassing the page cache, instead of copying every byte
once more into it. Any writer may still treat the dict as plain tensors.
"""
from __future__ import annotations

from typing import Collection, Mapping, Sequence

import numpy as np
import torch

from ._image import MIN_HEADER_ROOM, FileImage, Layout, aligned_buffer, plan


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


class SnapshotTensors(dict):
    """The snapshot's tensors by name, plus the ``FileImage`` they live in (None when there is none)."""

    file_image: FileImage | None = None


class SnapshotBuffers:
    """Preallocated CPU copies of a named set of tensors, in one block laid out as their checkpoint file.

    Call order: ``copy(tensors)`` -> hand the returned dict to a writer -> wait
    for the writer -> ``copy`` again.
    """

    def __init__(self, *, pin_memory: bool = True) -> None:
        self.pin_memory = pin_memory
        self._buffers: dict[str, torch.Tensor] = {}  # name -> view into ``_block`` (or a tensor of its own)
        self._block: torch.Tensor | None = None
        self._layout: Layout | None = None
        self.header_room = MIN_HEADER_ROOM  # doubled after a save whose header did not fit in it
        self._image: FileImage | None = None
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # the deferred copies of the last ``copy``

    @property
    def nbytes(self) -> int:
        return sum(buffer.numel() * buffer.element_size() for buffer in self._buffers.values())

    def copy(self, tensors: Mapping[str, torch.Tensor], *,
             defer: Collection[str] = ()) -> SnapshotTensors:
        """CPU copies of ``tensors`` in reused buffers (reallocated only when a name, shape or dtype changes).

        The tensors named in ``defer`` (CPU tensors only) are not copied: their
        buffers are returned unfilled and ``self.pending`` holds the
        ``(buffer, tensor)`` pairs for ``fill``.
        """
        copies = SnapshotTensors()
        image = self._allocate(tensors)
        devices: set[torch.device] = set()
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        for name, tensor in tensors.items():
            buffer = self._buffers[name]
            on_device = tensor.device.type != "cpu"
            copies[name] = buffer
            if name in defer and not on_device:
                pending.append((buffer, tensor))
                continue
            if not _memcpy(buffer, tensor):
                buffer.copy_(tensor.detach(), non_blocking=on_device and buffer.is_pinned())
            if on_device:
                devices.add(tensor.device)
        for device in devices:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        copies.file_image = image
        self.pending = pending
        return copies

    def _allocate(self, tensors: Mapping[str, torch.Tensor]) -> FileImage | None:
        """Make ``self._buffers`` fit ``tensors``: views into one file-shaped block when a layout exists."""
        if self._image is not None and self._image.overflowed:  # metadata (say the history) has grown
            self.header_room *= 2
        layout = plan(tensors, self.header_room)
        pin = self.pin_memory and any(t.device.type == "cuda" for t in tensors.values()) \
            and torch.cuda.is_available()
        if layout is None:  # a tensor the file cannot hold: separate buffers; the writer will say what is wrong
            self._block, self._layout, self._image = None, None, None
            self._buffers = {name: _own_buffer(self._buffers.get(name), tensor, self.pin_memory)
                             for name, tensor in tensors.items()}
            return None
        if layout != self._layout or self._block is None or (pin and not self._block.is_pinned()):
            self._block, self._layout, self._image = None, None, None
            self._buffers = {}  # release the old block before allocating the new one
            block = aligned_buffer(layout.image_bytes, pin_memory=pin)
            offsets = layout.offsets()
            views = {}
            for name, _dtype, shape, nbytes in layout.entries:
                dtype = tensors[name].dtype
                views[name] = block[offsets[name]:offsets[name] + nbytes].view(dtype).view(shape)
            self._block, self._layout, self._buffers = block, layout, views
        self._buffers = {name: self._buffers[name] for name in tensors}  # the caller's order
        self._image = FileImage(self._block, self._layout, self._buffers)
        return self._image

    @staticmethod
    def fill(pending: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Do the deferred copies ``copy`` left in ``pending`` (CPU to CPU)."""
        for buffer, tensor in pending:
            if not _memcpy(buffer, tensor):
                buffer.copy_(tensor.detach())


def _own_buffer(buffer: torch.Tensor | None, tensor: torch.Tensor, pin_memory: bool) -> torch.Tensor:
    if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
        pin = pin_memory and tensor.device.type == "cuda"
        buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pin)
    return buffer
