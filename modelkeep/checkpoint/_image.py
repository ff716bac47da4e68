"""A checkpoint file laid out in memory before it is written: the snapshot buffers *are* the file's bytes.

An asynchronous checkpoint copies the state into one page-aligned buffer (the
"image") arranged exactly as the safetensors file will be on disk: a header
region, then every tensor at its file offset. Writing is then a single pass of
large aligned writes from that buffer, which ``io.atomic.atomic_write_image``
does with ``O_DIRECT`` where the file system allows it: the disk reads the bytes
straight out of the buffer, with no copy into the page cache and no write-back
for the kernel to do later. On a small machine whose cores are all busy
training, that copy and its write-back were most of what a checkpoint cost (see
``benchmarks/bench_checkpoint.py``, case c): about 1.5 s of CPU for a 1.1 GB
checkpoint on two cores, against 0.05 s this way.

The file is the one ``artifact.tensors.write_tensors`` writes (same tensor
order, same integrity record) except that the header carries more trailing
spaces, so the tensor data starts on a ``ALIGN`` boundary; the format allows
any trailing spaces in the header. The header region is reserved generously
(``header_room``); a save whose header outgrows it reports that it does not
fit (``render`` returns None), is written the ordinary way, and the next
snapshot reserves twice as much.

Never writes a file itself: ``storage.LocalStorage`` hands the rendered image
to ``io.atomic``.
"""
from __future__ import annotations

import dataclasses
import json
import struct
from typing import Mapping

import numpy as np
import torch

from ..artifact.format import DTYPE_SIZES, KEY_INTEGRITY, encode_header
from ..artifact.integrity import HASH_ALGORITHM, hash_bytes, layout_digest
from ..artifact.tensors import TORCH_TO_SAFETENSORS

ALIGN = 4096  # the data offset and the image's address: what O_DIRECT needs on every common disk
MIN_HEADER_ROOM = 64 << 10  # room for metadata (metrics, history, the state tree) besides the tensor entries
_ENTRY_ROOM = 192  # JSON bytes per tensor entry beyond its name: dtype, shape, offsets, digest, quotes


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each tensor lies in the file: ``entries`` are ``(name, dtype, shape, nbytes)`` in file order."""

    entries: tuple[tuple[str, str, tuple[int, ...], int], ...]
    header_room: int  # bytes before the data: the 8-byte prefix and the space-padded JSON header

    @property
    def data_bytes(self) -> int:
        return sum(entry[3] for entry in self.entries)

    @property
    def file_bytes(self) -> int:
        return self.header_room + self.data_bytes

    @property
    def image_bytes(self) -> int:
        """The buffer's size: the file rounded up to ``ALIGN`` (O_DIRECT writes whole blocks)."""
        return -(-self.file_bytes // ALIGN) * ALIGN

    def offsets(self) -> dict[str, int]:
        """Each tensor's offset from the start of the file (and of the image)."""
        cursor, found = self.header_room, {}
        for name, _dtype, _shape, nbytes in self.entries:
            found[name] = cursor
            cursor += nbytes
        return found


def plan(tensors: Mapping[str, torch.Tensor], min_header_room: int = MIN_HEADER_ROOM) -> Layout | None:
    """The layout of ``tensors`` as a file; None when one cannot be stored (the ordinary writer then says why)."""
    entries = []
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__" or not isinstance(tensor, torch.Tensor):
            return None
        dtype = TORCH_TO_SAFETENSORS.get(tensor.dtype)
        if dtype is None or tensor.layout != torch.strided:
            return None
        entries.append((name, dtype, tuple(tensor.shape), tensor.numel() * DTYPE_SIZES[dtype]))
    # The order write_tensors uses: larger elements first, so every tensor is aligned to its element size.
    entries.sort(key=lambda entry: (-DTYPE_SIZES[entry[1]], entry[0]))
    estimate = 8 + sum(len(name.encode("utf-8")) * 2 + _ENTRY_ROOM for name, *_ in entries)
    room = max(min_header_room, 2 * estimate)
    return Layout(tuple(entries), -(-room // ALIGN) * ALIGN)


def header(layout: Layout, metadata: Mapping[str, str], digests: Mapping[str, str]) -> bytes | None:
    """The header region's bytes (``layout.header_room`` long), or None when the header does not fit in it.

    The integrity record is built exactly as ``write_tensors`` builds it.
    """
    metadata = dict(metadata)
    if KEY_INTEGRITY in metadata:
        raise ValueError(f"metadata key {KEY_INTEGRITY!r} is reserved; it is written with the tensors")
    integrity = {
        "algorithm": HASH_ALGORITHM,
        "layout": layout_digest((name, dtype, shape) for name, dtype, shape, _ in layout.entries),
        "metadata": {key: hash_bytes(value.encode("utf-8")) for key, value in sorted(metadata.items())},
        "tensors": {name: digests[name] for name, *_ in layout.entries},
    }
    metadata[KEY_INTEGRITY] = json.dumps(integrity, separators=(",", ":"))
    text = encode_header(list(layout.entries), metadata)[8:]
    room = layout.header_room - 8
    if len(text) > room:
        return None
    return struct.pack("<Q", room) + text + b" " * (room - len(text))


class FileImage:
    """One snapshot's file image: the aligned buffer, its layout and the tensor views into it.

    Call order: the snapshot fills the views -> ``render(metadata)`` (hashes every
    tensor, writes the header into the buffer) -> the writer writes
    ``buffer[:layout.file_bytes]``.
    """

    def __init__(self, buffer: torch.Tensor, layout: Layout, views: Mapping[str, torch.Tensor]) -> None:
        self.buffer = buffer  # uint8, ``layout.image_bytes`` long, starting on an ALIGN boundary
        self.layout = layout
        self.views = views
        self.overflowed = False  # set by ``render`` when the header did not fit in ``layout.header_room``

    def render(self, metadata: Mapping[str, str]) -> tuple[memoryview, int] | None:
        """Hash the tensors and put the header in place; return ``(image, file length)``, or None if it does not fit."""
        digests = {name: hash_bytes(_bytes_of(self.views[name])) for name, *_ in self.layout.entries}
        region = header(self.layout, metadata, digests)
        if region is None:
            self.overflowed = True
            return None
        array = self.buffer.numpy()
        array[:len(region)] = np.frombuffer(region, dtype=np.uint8)
        return memoryview(array), self.layout.file_bytes


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    if tensor.numel() == 0:
        return memoryview(b"")
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


def aligned_buffer(nbytes: int, *, pin_memory: bool = False) -> torch.Tensor:
    """A uint8 tensor of ``nbytes`` whose first byte lies on an ``ALIGN`` boundary (over-allocated, then sliced)."""
    raw = torch.empty(nbytes + ALIGN, dtype=torch.uint8, pin_memory=pin_memory)
    shift = -raw.data_ptr() % ALIGN
    return raw[shift:shift + nbytes]
