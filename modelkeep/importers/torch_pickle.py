"""Checking a ``torch.save`` file before ``torch.load(weights_only=True)`` reads it.

``torch.load(weights_only=True)`` never runs code from the file, but it trusts the sizes the
file declares: a zip may claim members larger than itself, a pickle may declare a storage of a
terabyte (the legacy format allocates it) or a tensor of a trillion elements over a few bytes
(a stride-0 view, materialised later). So the file is first walked without reading any weight:

* a zip's end-of-central-directory record gives the member count before ``zipfile`` lists
  them; every member must be stored (torch never compresses) and lie inside the file, and
  ``data.pkl`` must be small;
* the pickle is run by torch's own weights-only unpickler with storages on the *meta* device
  (no memory): each storage must fit in what the file holds, each tensor in its storage and in
  ``ReaderLimits.max_elements``. A global the unpickler refuses is reported by name. The
  pickle itself is read through a bounded reader: at most ``MAX_PICKLE_BYTES`` bytes and
  ``MAX_PICKLE_CONTAINERS`` containers (an empty dict costs 64 bytes for one byte of pickle).

Only a file that passes is handed to ``torch.load``. This module never unpickles anything with
Python's ``pickle`` and never imports a module the file names.
"""
from __future__ import annotations

import io
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import FormatError, TrustError

MAX_MEMBERS = 200_000                 # zip members (one per storage, plus a few records)
MAX_PICKLE_BYTES = 32 * 1024 * 1024   # data.pkl: the structure, not the weights (~200 bytes a tensor)
#: Opcodes that make a container (an empty dict costs ~64 bytes for one byte of pickle): counted, over-counting
#: arguments that happen to be read one byte at a time, so a pickle of nothing but ``{}`` cannot cost gigabytes.
MAX_PICKLE_CONTAINERS = 2_000_000
_CONTAINER_OPCODES = frozenset(b"}])(tld\x85\x86\x87\x8f\x91")
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_HEAD = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")  # torch.save's default pickle protocol
_LEGACY_MAGIC_OP = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")


def is_legacy_torch(head: bytes) -> bool:
    """The first pickle of a legacy ``torch.save`` file is its magic number (protocol 2 to 5, framed or not)."""
    protocol = head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    return head[:1] == b"\x80" and protocol and _LEGACY_MAGIC_OP in head[:24]
_GLOBAL = re.compile(r"GLOBAL ([A-Za-z0-9_.]+)")


def refuse_unpickling(path: Path, exc: BaseException) -> TrustError | FormatError:
    """The error for a pickle the weights-only unpickler refused: it names the global the file asked for."""
    text = str(exc)
    found = _GLOBAL.search(text)
    if found:
        return TrustError(
            f"{path} needs pickled code to load: it asks for the Python global {found.group(1)!r}, and running "
            "code from a weights file is how pickles attack. modelkeep never unpickles code; save the weights "
            "alone with torch.save(model.state_dict(), ...) and import that"
        )
    if "Unsupported operand" in text:
        return FormatError(f"{path} uses a pickle instruction torch.load(weights_only=True) cannot read ({text[:60]}; "
                           "pickle_protocol above 2); save it again with torch.save's default protocol")
    if "reduce" in text or "new object" in text:
        return TrustError(f"{path} asks to call or build objects that are not tensors ({text[:160]}); refused")
    return FormatError(f"{path}: the pickle is not a plain tensor structure ({text[:160]})")


def check_torch_zip(path: Path, archive: zipfile.ZipFile, size: int) -> tuple[str, dict[str, int]]:
    """``(record prefix, {storage key: bytes})`` of a torch zip whose members were checked against the file."""
    infos = archive.infolist()
    pickles = [info for info in infos if info.filename == "data.pkl" or info.filename.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise FormatError(f"{path} is a zip archive but not a torch.save file (it has no single data.pkl)")
    prefix = pickles[0].filename[: -len("data.pkl")]
    if any(info.filename in (prefix + "constants.pkl",) or info.filename.startswith(prefix + "code/")
           for info in infos):
        raise FormatError(f"{path} is a TorchScript archive (torch.jit.save): it holds code, and modelkeep imports "
                          "weights only; save model.state_dict() with torch.save and import that")
    total = 0
    storages: dict[str, int] = {}
    for info in infos:
        read_by_torch = info.filename == pickles[0].filename or info.filename.startswith(prefix + "data/")
        if read_by_torch and info.compress_type != zipfile.ZIP_STORED:
            raise FormatError(f"{path}: member {info.filename[:80]!r} is compressed, which torch.save never does; "
                              "save the weights again with torch.save")
        if info.header_offset + info.compress_size > size:
            raise FormatError(f"{path}: member {info.filename[:80]!r} declares {info.compress_size} bytes beyond "
                              f"the end of the {size}-byte file; the file is truncated or hostile")
        total += info.compress_size
        if read_by_torch and info.filename != pickles[0].filename:
            storages[info.filename[len(prefix) + 5:]] = info.file_size
    if total > size:
        raise FormatError(f"{path}: its members declare {total} bytes in all, more than the file's {size}")
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        raise FormatError(f"{path}: data.pkl is {pickles[0].file_size} bytes; the limit is {MAX_PICKLE_BYTES} "
                          "(the weights live beside it, the pickle only holds their structure)")
    return prefix, storages


class MetaStorages:
    """Storages on the meta device, one per key, remembering the size each declared.

    A meta storage grows when a tensor larger than it is set on it, so the declared size is kept
    here, by the storage's identity, for ``check_tensor``.
    """

    def __init__(self) -> None:
        self.declared: dict[int, int] = {}
        self._by_key: dict[Any, Any] = {}

    def get(self, key: Any, dtype: Any, nbytes: int) -> Any:
        import torch

        if key not in self._by_key:
            untyped = torch.UntypedStorage(nbytes, device="meta")
            self.declared[untyped._cdata] = nbytes
            self._by_key[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return self._by_key[key]

    def held(self, tensor: Any) -> int:
        return self.declared.get(tensor.untyped_storage()._cdata, 0)


def _dtype_of(storage_type: Any) -> Any:
    import torch

    return torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype


def _element_size(dtype: Any) -> int:
    import torch

    return torch._utils._element_size(dtype)


def dry_load_zip(path: Path, pickle_bytes: bytes, storages: dict[str, int]) -> tuple[Any, MetaStorages]:
    """The structure of a torch zip's ``data.pkl``, every tensor on the meta device; storages checked."""
    meta = MetaStorages()

    def persistent_load(pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) != 5:
            raise FormatError(f"{path}: data.pkl names a storage as {str(pid)[:80]}; the file is corrupt")
        _, storage_type, key, _location, numel = pid
        dtype = _dtype_of(storage_type)
        if not isinstance(numel, int) or numel < 0:
            raise FormatError(f"{path}: a storage declares {str(numel)[:40]} elements")
        nbytes = numel * _element_size(dtype)
        if str(key) not in storages:
            raise FormatError(f"{path}: data.pkl refers to storage {str(key)[:40]!r}, which the archive lacks")
        if nbytes > storages[str(key)]:
            raise FormatError(f"{path}: storage {str(key)[:40]!r} declares {nbytes} bytes but the archive holds "
                              f"{storages[str(key)]}; the file is truncated or hostile")
        return meta.get(str(key), dtype, nbytes)

    return _unpickle(path, io.BytesIO(pickle_bytes), persistent_load), meta


def dry_load_legacy(path: Path, handle: BinaryIO, size: int) -> tuple[Any, MetaStorages]:
    """The structure of a legacy (pre-zip) torch file, tensors on meta; its raw storages checked against the file."""
    for _ in range(3):  # magic number, protocol version, system info
        _unpickle(path, handle, None)
    declared: dict[str, tuple[int, int]] = {}  # root key -> (elements, element size)
    meta = MetaStorages()

    def persistent_load(pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) != 6:
            raise FormatError(f"{path}: the pickle names a storage as {str(pid)[:80]}; the file is corrupt")
        _, storage_type, key, _location, numel, view = pid
        dtype = _dtype_of(storage_type)
        if not isinstance(numel, int) or not 0 <= numel * _element_size(dtype) <= size:
            raise FormatError(f"{path}: storage {str(key)[:40]!r} declares {str(numel)[:40]} elements, more than "
                              f"the {size}-byte file holds")
        declared.setdefault(str(key), (numel, _element_size(dtype)))
        if view is None:
            return meta.get(str(key), dtype, numel * _element_size(dtype))
        view_key, offset, view_size = view
        return meta.get(("view", str(view_key)), dtype, max(0, min(view_size, numel - offset)) * _element_size(dtype))

    structure = _unpickle(path, handle, persistent_load)
    keys = _unpickle(path, handle, None)
    if not isinstance(keys, list):
        raise FormatError(f"{path}: the storage list is not a list; the file is corrupt")
    at = handle.tell()
    for key in keys:
        if str(key) not in declared:
            raise FormatError(f"{path}: storage {str(key)[:40]!r} is listed but never used; the file is corrupt")
        numel, element = declared[str(key)]
        handle.seek(at)
        raw = handle.read(8)
        if len(raw) < 8 or struct.unpack("<q", raw)[0] != numel:
            raise FormatError(f"{path}: storage {str(key)[:40]!r} does not hold the {numel} elements it declares; "
                              "the file is truncated or corrupt")
        at += 8 + numel * element
        if at > size:
            raise FormatError(f"{path}: storage {str(key)[:40]!r} runs past the end of the file; it is truncated")
    return structure, meta


class _BoundedReader:
    """What the unpickler reads through: at most ``MAX_PICKLE_BYTES`` and ``MAX_PICKLE_CONTAINERS``."""

    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self.handle, self.path, self.taken, self.containers = handle, path, 0, 0

    def _count(self, data: bytes) -> bytes:
        self.taken += len(data)
        if self.taken > MAX_PICKLE_BYTES:
            raise FormatError(f"{self.path}: the pickle is longer than {MAX_PICKLE_BYTES} bytes; the weights live "
                              "beside it, and a pickle only holds their structure")
        return data

    def read(self, size: int = -1) -> bytes:
        data = self._count(self.handle.read(min(size, MAX_PICKLE_BYTES + 1) if size >= 0 else MAX_PICKLE_BYTES + 1))
        if size == 1 and data and data[0] in _CONTAINER_OPCODES:
            self.containers += 1
            if self.containers > MAX_PICKLE_CONTAINERS:
                raise FormatError(f"{self.path}: the pickle builds more than {MAX_PICKLE_CONTAINERS:,} containers; "
                                  "a state dict needs a few per tensor")
        return data

    def readline(self) -> bytes:
        return self._count(self.handle.readline(MAX_PICKLE_BYTES + 1))


def _unpickle(path: Path, handle: BinaryIO, persistent_load: Any) -> Any:
    from torch._weights_only_unpickler import Unpickler  # what torch.load(weights_only=True) itself runs

    unpickler = Unpickler(_BoundedReader(handle, path), encoding="utf-8")
    if persistent_load is not None:
        unpickler.persistent_load = persistent_load
    try:
        return unpickler.load()
    except (FormatError, TrustError):
        raise
    except EOFError:
        raise FormatError(f"{path} ends inside its pickle; the file is truncated") from None
    except Exception as exc:  # noqa: BLE001 - UnpicklingError and what a malformed stream raises
        if type(exc).__name__ == "UnpicklingError":
            raise refuse_unpickling(path, exc) from None
        raise FormatError(f"{path}: the pickle cannot be read ({type(exc).__name__}: {str(exc)[:160]})") from None


def check_tensor(path: Path, name: str, tensor: Any, max_elements: int, storages: MetaStorages) -> None:
    """A (meta) tensor must lie inside its storage's declared size and hold at most ``max_elements`` values."""
    numel = tensor.numel()
    if numel > max_elements:
        raise FormatError(f"{path}: tensor {name[:80]!r} declares {numel:,} elements (shape {list(tensor.shape)}); "
                          f"the limit is ReaderLimits.max_elements = {max_elements:,}")
    if numel == 0:
        return
    element = tensor.element_size()
    extent = tensor.storage_offset() + sum((s - 1) * abs(st) for s, st in zip(tensor.shape, tensor.stride())) + 1
    held = storages.held(tensor)
    if extent * element > held or numel * element > held:
        raise FormatError(f"{path}: tensor {name[:80]!r} declares shape {list(tensor.shape)} ({numel:,} values) "
                          f"over a storage of {held} bytes; the file is corrupt or hostile")


__all__ = ["LEGACY_HEAD", "MAX_MEMBERS", "MAX_PICKLE_BYTES", "MAX_PICKLE_CONTAINERS", "MetaStorages", "check_tensor",
           "check_torch_zip", "dry_load_legacy", "dry_load_zip", "is_legacy_torch", "refuse_unpickling"]
