"""``modelkeep diff A B``: which tensors differ between two model files, by how much, and what metadata changed.

Recorded hashes are never trusted on their own: a tensor is reported equal only
when its bytes (or, failing that, its values) are equal in both files, so a file
edited after writing cannot pass for its original. Two tensors whose recorded
hashes match but whose bytes differ mean one file does not match its own
record: that is an ``IntegrityError`` naming it (``verify=True`` checks every
hash of both files first). Tensors are read through memory maps, one at a
time; torch is imported only to compare values. Nothing named by either file is
imported or run.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

from ..errors import FormatError, IntegrityError
from .format import KEY_INTEGRITY, KEY_MANIFEST, Header, loads_bounded, read_header
from .integrity import read_integrity, verify_file, verify_header

MAX_REPORTED_CHANGES = 200
_ELIDE = 120  # characters of a changed value shown in the report


def _load(path: str | os.PathLike[str], verify: bool) -> tuple[Header, dict | None, Any]:
    header = read_header(path)
    integrity = read_integrity(header)
    if integrity is not None:
        if verify:
            verify_file(header)
        else:
            verify_header(header, integrity)
    manifest = None
    if KEY_MANIFEST in header.metadata:
        manifest = loads_bounded(header.metadata[KEY_MANIFEST], f"{header.path}: metadata {KEY_MANIFEST!r}")
    return header, integrity, manifest


def _short(value: Any) -> Any:
    text = json.dumps(value, default=str)
    return value if len(text) <= _ELIDE else text[:_ELIDE] + "..."


def _json_changes(a: Any, b: Any, where: str, out: list[dict[str, Any]]) -> None:
    if len(out) >= MAX_REPORTED_CHANGES:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            path = f"{where}.{key}" if where else str(key)
            if key not in b:
                out.append({"path": path, "change": "removed", "a": _short(a[key])})
            elif key not in a:
                out.append({"path": path, "change": "added", "b": _short(b[key])})
            else:
                _json_changes(a[key], b[key], path, out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and len(a) <= 10_000:
        for i, (x, y) in enumerate(zip(a, b)):
            _json_changes(x, y, f"{where}[{i}]", out)
    elif a != b or type(a) is not type(b):
        out.append({"path": where, "change": "changed", "a": _short(a), "b": _short(b)})


def _number(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)  # strict JSON has no infinity


_COMPARE_STEP = 16 << 20  # bytes compared at a time, so comparing never copies a whole tensor


class _Reader:
    """Both files' tensors, memory-mapped on first need only."""

    def __init__(self, header_a: Header, header_b: Header) -> None:
        self.headers = (header_a, header_b)
        self.maps: tuple[Any, Any] | None = None

    def _open(self) -> tuple[Any, Any]:
        if self.maps is None:
            self.maps = tuple(_map(header) for header in self.headers)  # type: ignore[assignment]
        return self.maps  # type: ignore[return-value]

    def same_bytes(self, name: str) -> bool:
        maps = self._open()
        (ha, hb), (ma, mb) = self.headers, maps
        ea, eb = ha.tensors[name], hb.tensors[name]
        start_a, start_b = ha.data_start + ea.begin, hb.data_start + eb.begin
        for offset in range(0, ea.nbytes, _COMPARE_STEP):
            size = min(_COMPARE_STEP, ea.nbytes - offset)
            if ma[start_a + offset:start_a + offset + size] != mb[start_b + offset:start_b + offset + size]:
                return False
        return True

    def stats(self, name: str) -> dict[str, Any]:
        import torch

        from .tensors import SAFETENSORS_TO_TORCH

        maps = self._open()
        a, b = (_tensor(header, m, name, SAFETENSORS_TO_TORCH).to(torch.float64)
                for header, m in zip(self.headers, maps))
        if a.numel() == 0:
            return {"equal": True}
        same = (a == b) | (a.isnan() & b.isnan())
        if bool(same.all()):
            return {"equal": True}
        delta = (a - b).abs().nan_to_num(nan=math.inf)
        norm_a = float(a.nan_to_num().norm())
        diff_norm = float((a - b).nan_to_num().norm())
        return {
            "equal": False,
            "max_abs_diff": _number(float(delta.max())),
            "mean_abs_diff": _number(float(delta.mean())),
            "relative_l2": _number(diff_norm / norm_a) if norm_a > 0 else None,
            "changed_fraction": float((~same).double().mean()),
        }


def _map(header: Header) -> Any:
    import mmap

    if header.file_size <= header.data_start:
        return b""
    with open(header.path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    if len(mapped) != header.file_size:
        raise FormatError(f"{header.path} changed size while being compared")
    return mapped


def _tensor(header: Header, mapped: Any, name: str, dtypes: dict[str, Any]) -> Any:
    import torch

    entry = header.tensors[name]
    dtype = dtypes[entry.dtype]
    if entry.nbytes == 0:
        return torch.empty(entry.shape, dtype=dtype)
    start = header.data_start + entry.begin
    return torch.frombuffer(bytearray(mapped[start:start + entry.nbytes]), dtype=dtype).reshape(entry.shape)


def _recorded_mismatch(header_a: Header, header_b: Header, name: str) -> IntegrityError:
    """Equal recorded hashes, different bytes: name the file whose tensor no longer matches its record."""
    from .integrity import hash_bytes

    culprits = []
    for header, mapped in ((header_a, _map(header_a)), (header_b, _map(header_b))):
        entry = header.tensors[name]
        start = header.data_start + entry.begin
        recorded = read_integrity(header)["tensors"][name]  # type: ignore[index]
        if hash_bytes(mapped[start:start + entry.nbytes]) != recorded:
            culprits.append(str(header.path))
    return IntegrityError(
        f"tensor {name!r} of {' and '.join(culprits) or header_a.path} does not match its recorded hash: the file was "
        "changed after it was written, so its record cannot be trusted. Restore it from a good copy"
    )


def diff_files(a: str | os.PathLike[str], b: str | os.PathLike[str], *, verify: bool = False) -> dict[str, Any]:
    """A JSON-able report of the differences between two model (or safetensors) files."""
    header_a, integrity_a, manifest_a = _load(a, verify)
    header_b, integrity_b, manifest_b = _load(b, verify)
    names_a, names_b = set(header_a.tensors), set(header_b.tensors)
    reader = _Reader(header_a, header_b)
    equal: list[str] = []
    different: list[dict[str, Any]] = []
    for name in sorted(names_a & names_b):
        ea, eb = header_a.tensors[name], header_b.tensors[name]
        if (ea.dtype, ea.shape) != (eb.dtype, eb.shape):
            different.append({"name": name, "a": {"dtype": ea.dtype, "shape": list(ea.shape)},
                              "b": {"dtype": eb.dtype, "shape": list(eb.shape)}, "change": "layout"})
            continue
        if reader.same_bytes(name):
            equal.append(name)
            continue
        if (integrity_a is not None and integrity_b is not None
                and integrity_a["tensors"][name] == integrity_b["tensors"][name]):
            raise _recorded_mismatch(header_a, header_b, name)
        stats = reader.stats(name)
        if stats.pop("equal"):
            equal.append(name)  # e.g. +0.0 and -0.0, or NaN payloads: bytes differ, values do not
        else:
            different.append({"name": name, "change": "values", "dtype": ea.dtype, "shape": list(ea.shape), **stats})

    metadata_changes: list[dict[str, Any]] = []
    _json_changes(manifest_a, manifest_b, "manifest", metadata_changes)
    skip = {KEY_MANIFEST, KEY_INTEGRITY}
    others_a = {k: v for k, v in header_a.metadata.items() if k not in skip}
    others_b = {k: v for k, v in header_b.metadata.items() if k not in skip}
    _json_changes(others_a, others_b, "metadata", metadata_changes)
    return {
        "a": str(header_a.path),
        "b": str(header_b.path),
        "identical_tensors": not different and names_a == names_b,
        "only_in_a": sorted(names_a - names_b),
        "only_in_b": sorted(names_b - names_a),
        "equal": equal,
        "different": different,
        "metadata_changes": metadata_changes,
        "metadata_changes_truncated": len(metadata_changes) >= MAX_REPORTED_CHANGES,
    }
