"""``modelkeep diff A B``: which tensors differ between two model files, by how much, and what metadata changed.

Tensors whose recorded hashes match are reported equal without reading their
data (``verify=True`` checks those hashes against the data first). Only tensors
that may differ are read, through memory maps, one at a time; torch is imported
only then. Nothing named by either file is imported or run.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

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


class _Reader:
    """Both files' tensors, opened (memory-mapped) on first need only."""

    def __init__(self, header_a: Header, header_b: Header) -> None:
        self.paths = (header_a.path, header_b.path)
        self.files: tuple[Any, Any] | None = None

    def stats(self, name: str) -> dict[str, Any]:
        import torch

        from .tensors import TensorFile

        if self.files is None:
            self.files = (TensorFile(self.paths[0], verify=False), TensorFile(self.paths[1], verify=False))
        a = self.files[0].tensor(name).to(torch.float64)
        b = self.files[1].tensor(name).to(torch.float64)
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
        if integrity_a is not None and integrity_b is not None:
            if integrity_a["tensors"][name] == integrity_b["tensors"][name]:
                equal.append(name)
                continue
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
