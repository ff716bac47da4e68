"""PyTorch weight files: ``torch.save`` archives (``.pt``, ``.pth``, ``.bin``, zip or legacy) and plain safetensors.

A ``torch.save`` file is a pickle. It is read only by ``torch.load(weights_only=True)`` (memory-mapped
for the zip format), and only after ``torch_pickle`` has walked it without reading a weight: the
zip's declared sizes against the file, the pickle through the weights-only unpickler with every
storage on the meta device, each tensor against its storage and ``ReaderLimits.max_elements``.
A file that asks for any Python global beyond tensors and plain containers is refused with that
global's name (``TrustError``). Training checkpoints are searched for the weights (``nesting``).

A safetensors file that is not a modelkeep file is read by modelkeep's own bounded reader
(memory-mapped); a modelkeep file is refused: it needs no import.
"""
from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Any

from ..artifact.format import MAX_HEADER_BYTES, read_header
from ..errors import FormatError
from .base import Imported, register_reader
from ._zip import zip_member_count
from .nesting import find_tensors
from .torch_pickle import (MAX_MEMBERS, is_legacy_torch, check_tensor, check_torch_zip, dry_load_legacy, dry_load_zip,
                           refuse_unpickling)

_ZIP_MAGIC = b"PK\x03\x04"


def _first_zip_name(head: bytes) -> str:
    if len(head) < 30 or not head.startswith(_ZIP_MAGIC):
        return ""
    (length,) = struct.unpack("<H", head[26:28])
    return head[30:30 + length].decode("utf-8", "replace")


def _limit(limits: Any) -> int:
    return limits.max_elements


class TorchReader:
    """``torch.save`` files, the zip format (PyTorch 1.6 and later) and the legacy one before it."""

    format = "pytorch"
    description = "a torch.save file (.pt, .pth, .bin): a state dict or a checkpoint holding one"

    def sniff(self, path: Path, head: bytes) -> bool:
        if is_legacy_torch(head):
            return True
        if not head.startswith(_ZIP_MAGIC):
            return False
        if _first_zip_name(head).endswith("data.pkl"):  # torch.save writes it first
            return True
        try:
            with open(path, "rb") as handle:
                if zip_member_count(handle, os.fstat(handle.fileno()).st_size) > MAX_MEMBERS:
                    return False
                handle.seek(0)
                names = zipfile.ZipFile(handle).namelist()
        except (OSError, zipfile.BadZipFile, FormatError):
            return False
        return any(name == "data.pkl" or name.endswith("/data.pkl") for name in names)

    def read(self, path: Path, limits: Any) -> Imported:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            legacy = is_legacy_torch(handle.read(64))
            handle.seek(0)
            structure, storages = dry_load_legacy(path, handle, size) if legacy else self._dry_zip(path, handle, size)
        planned, key, notes = find_tensors(structure)
        if not planned:
            raise FormatError(f"{path} holds no tensors ({'; '.join(notes) or 'an empty dict'}); nothing to import")
        for name, tensor in planned.items():
            check_tensor(path, name, tensor, _limit(limits), storages)
        tensors, _, _ = find_tensors(self._torch_load(path, mmap=not legacy))
        if {n: tuple(t.shape) for n, t in tensors.items()} != {n: tuple(t.shape) for n, t in planned.items()}:
            raise FormatError(f"{path} changed while it was read; import it again")
        details = {"container": "legacy" if legacy else "zip", "tensors": len(tensors)}
        if key is not None:
            details["weights_under"] = key
        return Imported(format=self.format, tensors=tensors, details=details, notes=notes)

    @staticmethod
    def _dry_zip(path: Path, handle: Any, size: int) -> Any:
        count = zip_member_count(handle, size)
        if count > MAX_MEMBERS:
            raise FormatError(f"{path}: the zip archive declares {count:,} members; the limit is {MAX_MEMBERS:,}")
        handle.seek(0)
        try:
            archive = zipfile.ZipFile(handle)
        except zipfile.BadZipFile as exc:
            raise FormatError(f"{path}: not a readable zip archive ({exc}); the file is truncated or corrupt") from None
        with archive:
            prefix, storages = check_torch_zip(path, archive, size)
            try:
                pickle_bytes = archive.read(prefix + "data.pkl")
            except (zipfile.BadZipFile, OSError) as exc:
                raise FormatError(f"{path}: data.pkl cannot be read ({exc}); the file is corrupt") from None
        return dry_load_zip(path, pickle_bytes, storages)

    @staticmethod
    def _torch_load(path: Path, *, mmap: bool) -> Any:
        import pickle

        import torch

        # torch.load reads a path ending in .safetensors as safetensors, whatever its content: hand it the open file
        by_name = not os.fspath(path).endswith(".safetensors")
        try:
            if by_name:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            with open(path, "rb") as handle:
                return torch.load(handle, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise refuse_unpickling(path, exc) from None
        except (RuntimeError, ValueError, EOFError, OSError, KeyError) as exc:
            raise FormatError(f"{path}: torch.load refused the file ({type(exc).__name__}: {str(exc)[:200]})") from None


class SafetensorsReader:
    """A plain safetensors file (as ``safetensors.torch.save_file`` writes), not a modelkeep file."""

    format = "safetensors"
    description = "a safetensors file of named tensors (safetensors.torch.save_file)"

    def sniff(self, path: Path, head: bytes) -> bool:
        if len(head) < 10:
            return False
        (length,) = struct.unpack("<Q", head[:8])
        return 2 <= length <= MAX_HEADER_BYTES and head[8:9] == b"{"

    def read(self, path: Path, limits: Any) -> Imported:
        from ..artifact.tensors import TensorFile

        header = read_header(path)
        if header.is_modelkeep:
            raise already_modelkeep(path)
        for name, entry in header.tensors.items():
            numel = entry.nbytes // max(1, _dtype_bytes(entry.dtype))
            if numel > _limit(limits):
                raise FormatError(f"{path}: tensor {name[:80]!r} holds {numel:,} values; the limit is "
                                  f"ReaderLimits.max_elements = {_limit(limits):,}")
        with TensorFile(path, verify=False) as handle:
            tensors = handle.tensors()
        metadata = {key[:80]: value[:200] for key, value in list(header.metadata.items())[:20]}
        details = {"tensors": len(tensors), **({"metadata": metadata} if metadata else {})}
        return Imported(format=self.format, tensors=tensors, details=details)


def _dtype_bytes(dtype: str) -> int:
    from ..artifact.format import DTYPE_SIZES

    return DTYPE_SIZES[dtype]


def already_modelkeep(path: Path) -> FormatError:
    return FormatError(f"{path} is already a modelkeep file; use modelkeep.load (or `modelkeep inspect`) instead of "
                       "importing it")


register_reader(TorchReader())
register_reader(SafetensorsReader())

__all__ = ["SafetensorsReader", "TorchReader", "already_modelkeep"]
