"""Tensors in and out of a modelkeep/safetensors file, hashed on the way.

``write_tensors`` streams each tensor's bytes to disk once, hashing them as it
goes, through ``io.atomic`` (temporary file, fsync, rename). The header
is written first with fixed-width placeholder hashes and patched in place once
the data is written, so the data is read exactly once.

``read_tensors`` memory-maps the file and makes tensors that share its pages
(copy-on-write), after ``format.read_header`` has validated every offset.
With ``verify=True`` each tensor's hash is checked before it is returned.
"""
from __future__ import annotations

import json
import mmap as _mmap
import os
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Iterable, Mapping

import torch

from ..io.atomic import atomic_write, start_writeback
from ..errors import FormatError
from .format import DTYPE_SIZES, KEY_INTEGRITY, RESERVED_PREFIX, TensorEntry, encode_header, read_header
from .integrity import (
    DIGEST_CHARS, HASH_ALGORITHM, hash_bytes, layout_digest, require_integrity, verify_header, verify_tensor_bytes,
    PARALLEL_MIN_BYTES, verify_tensors,
)

_PLACEHOLDER = "0" * DIGEST_CHARS

TORCH_TO_SAFETENSORS = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
    torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
SAFETENSORS_TO_TORCH = {v: k for k, v in TORCH_TO_SAFETENSORS.items()}


def _as_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of a CPU tensor, without copying when it is already contiguous."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


def write_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    durable: bool = True,
    integrity: bool = True,
) -> Path:
    """Write ``tensors`` and string ``metadata`` to ``path`` as one safetensors file, atomically.

    With ``integrity``, the ``modelkeep.integrity`` metadata key records the
    xxh3-128 hash of every tensor and of every other metadata value.
    """
    path = Path(path)
    metadata = dict(metadata or {})
    if KEY_INTEGRITY in metadata:
        raise ValueError(f"metadata key {KEY_INTEGRITY!r} is reserved; it is written by write_tensors")
    prepared = []
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"tensor names must be non-empty strings other than '__metadata__', got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        if tensor.layout != torch.strided:
            raise ValueError(f"tensor {name!r} is {tensor.layout}; make it dense with .to_dense() before saving")
        dtype = TORCH_TO_SAFETENSORS.get(tensor.dtype)
        if dtype is None:
            raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}, which the file format cannot store")
        prepared.append((name, dtype, tuple(tensor.shape), tensor))
    # Larger elements first, so every tensor starts at an offset aligned to its element size.
    prepared.sort(key=lambda item: (-DTYPE_SIZES[item[1]], item[0]))
    entries = [(name, dtype, shape, _nbytes(shape, dtype)) for name, dtype, shape, _ in prepared]

    integrity_doc: dict[str, object] | None = None
    if integrity:
        integrity_doc = {
            "algorithm": HASH_ALGORITHM,
            "layout": layout_digest((name, dtype, shape) for name, dtype, shape, _ in prepared),
            "metadata": {key: hash_bytes(value.encode("utf-8")) for key, value in sorted(metadata.items())},
            "tensors": {name: _PLACEHOLDER for name, *_ in prepared},
        }
        metadata[KEY_INTEGRITY] = json.dumps(integrity_doc, separators=(",", ":"))
    header = encode_header(entries, metadata)

    total = sum(nbytes for *_, nbytes in entries)
    with atomic_write(path, durable=durable) as handle:
        handle.write(header)
        digests: dict[str, str] = {}
        # Hash each tensor in a helper thread while this one writes it (both release the GIL and
        # read the same bytes, so the second reader mostly finds them in cache).
        hasher = ThreadPoolExecutor(1, thread_name_prefix="modelkeep-hash") \
            if integrity and total >= PARALLEL_MIN_BYTES else None
        try:
            writer = _Writer(handle, early_writeback=durable)
            for name, _dtype, _shape, tensor in prepared:
                data = _as_bytes(tensor)
                if hasher is not None:
                    pending = hasher.submit(hash_bytes, data)
                    writer.write(data)
                    digests[name] = pending.result()
                else:
                    if integrity:
                        digests[name] = hash_bytes(data)
                    writer.write(data)
        finally:
            if hasher is not None:
                hasher.shutdown(wait=True, cancel_futures=True)
        if integrity_doc is not None:
            integrity_doc["tensors"] = digests
            metadata[KEY_INTEGRITY] = json.dumps(integrity_doc, separators=(",", ":"))
            final = encode_header(entries, metadata)
            if len(final) != len(header):  # cannot happen: digests have the placeholder's width
                raise RuntimeError("integrity patch changed the header length")
            handle.seek(0)
            handle.write(final)
    return path


#: Durable writes ask the kernel to start writing every this many bytes (``atomic.start_writeback``),
#: so the disk works while serialisation goes on and the closing fsync only waits for the tail.
WRITEBACK_STEP = 32 << 20


class _Writer:
    """Writes through ``handle``; with ``early_writeback``, in steps that each start their own write-back."""

    def __init__(self, handle: BinaryIO, *, early_writeback: bool) -> None:
        self.handle = handle
        self.early_writeback = early_writeback
        if early_writeback:
            handle.flush()  # from here on, the file offset is what the kernel has been given
        self.offset = handle.tell()
        self.flushed = 0

    def write(self, data: memoryview) -> None:
        if not self.early_writeback:
            self.handle.write(data)
            return
        for start in range(0, len(data), WRITEBACK_STEP):
            chunk = data[start:start + WRITEBACK_STEP]
            self.handle.write(chunk)
            self.offset += len(chunk)
            if self.offset - self.flushed >= WRITEBACK_STEP:
                # Small writes may still sit in the file object's buffer; the hint just covers less then.
                if start_writeback(self.handle.fileno(), self.flushed, self.offset - self.flushed):
                    self.flushed = self.offset
                else:
                    self.early_writeback = False  # unavailable here: plain writes, the fsync does it all


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count * DTYPE_SIZES[dtype]


class TensorFile:
    """An open, validated file whose tensors are read lazily from a memory map.

    >>> with TensorFile("model.safetensors") as f:   # doctest: +SKIP
    ...     w = f.tensor("layers.dense_1.weight")
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = True, mmap: bool = True) -> None:
        self.header = read_header(path)
        self.path = self.header.path
        self.verify = verify
        self.integrity = require_integrity(self.header) if verify else None
        if self.integrity is not None:
            verify_header(self.header, self.integrity)
        self._verified: set[str] = set()
        self._map: _mmap.mmap | None = None
        self._file: BinaryIO | None = None
        if self.header.file_size > self.header.data_start:
            if mmap:
                with open(self.path, "rb") as handle:
                    # ACCESS_COPY: tensors may be written to without touching the file. The pages not
                    # written still follow the file: see ``load(mmap=False)`` for private copies.
                    self._map = _mmap.mmap(handle.fileno(), 0, access=_mmap.ACCESS_COPY)
                size = len(self._map)
            else:
                self._file = open(self.path, "rb")
                size = os.fstat(self._file.fileno()).st_size
            if size != self.header.file_size:
                self.close()
                raise FormatError(f"{self.path} changed size while being opened")

    def names(self, *, reserved: bool = True) -> list[str]:
        """Tensor names in file order; ``reserved=False`` leaves out modelkeep sections such as ``__optimizer__/``."""
        return [n for n in self.header.tensors if reserved or not n.startswith(RESERVED_PREFIX)]

    def tensor(self, name: str) -> torch.Tensor:
        entry = self.header.tensors.get(name)
        if entry is None:
            raise KeyError(f"{self.path} has no tensor {name!r}; it has {len(self.header.tensors)} tensors, "
                           f"e.g. {list(self.header.tensors)[:5]}")
        dtype = SAFETENSORS_TO_TORCH[entry.dtype]
        if entry.nbytes == 0:
            return torch.empty(entry.shape, dtype=dtype)
        start = self.header.data_start + entry.begin
        if self._file is not None:
            return self._private_tensor(entry, dtype, start)
        if self.integrity is not None and name not in self._verified:
            view = memoryview(self._map)[start:start + entry.nbytes]
            try:
                verify_tensor_bytes(self.header, self.integrity, entry, view)
            finally:
                view.release()
            self._verified.add(name)
        flat = torch.frombuffer(self._map, dtype=dtype, count=entry.nbytes // DTYPE_SIZES[entry.dtype], offset=start)
        return flat.reshape(entry.shape)

    def _private_tensor(self, entry: TensorEntry, dtype: torch.dtype, start: int) -> torch.Tensor:
        """The tensor read into memory of its own; its hash is checked on exactly those bytes."""
        tensor = torch.empty(entry.shape, dtype=dtype)
        target = memoryview(tensor.view(-1).view(torch.uint8).numpy())
        try:
            got = os.preadv(self._file.fileno(), [target], start) if hasattr(os, "preadv") else None
            if got is None:
                self._file.seek(start)
                got = self._file.readinto(target)
            if got != entry.nbytes:
                raise FormatError(f"{self.path} was truncated while tensor {entry.name!r} was read")
            if self.integrity is not None:
                verify_tensor_bytes(self.header, self.integrity, entry, target)
                self._verified.add(entry.name)
        finally:
            target.release()
        return tensor

    def tensors(self, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        names = self.names() if names is None else list(names)
        if self.integrity is not None and self._map is not None:
            # Check every pending hash up front, in parallel when it is worth it (``verify_tensors``);
            # unknown names are left for ``tensor`` to report.
            pending: dict[str, TensorEntry] = {}
            for name in names:
                entry = self.header.tensors.get(name)
                if entry is not None and entry.nbytes and name not in self._verified:
                    pending[name] = entry
            if len(pending) > 1:
                verify_tensors(self.header, self.integrity, pending.values(), self._map)
                self._verified.update(pending)
        return {name: self.tensor(name) for name in names}

    def close(self) -> None:
        # Tensors made from the map keep it alive; dropping our reference is enough.
        self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "TensorFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_tensors(
    path: str | os.PathLike[str], *, verify: bool = True, names: Iterable[str] | None = None, mmap: bool = True,
) -> dict[str, torch.Tensor]:
    """All (or the named) tensors of a safetensors or modelkeep file, zero-copy from a memory map.

    With ``verify`` (the default) the file must carry its integrity record (a
    plain safetensors file has none: pass ``verify=False``) and every tensor's
    hash is checked. ``mmap=False`` reads into private memory (see ``load``).
    """
    with TensorFile(path, verify=verify, mmap=mmap) as handle:
        return handle.tensors(names)
