"""What a model file holds, read from its header and metadata alone: ``modelkeep inspect``.

``describe`` never imports torch and never reads tensor data, except with
``verify=True``, which hashes every tensor through a read-only memory map (still
without torch). It never imports a class the file names; it only shows it.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from typing import Any

from ..errors import FormatError
from .format import RESERVED_PREFIX, Header
from .integrity import content_hash, read_integrity, verify_file
from .manifest import Manifest, read_manifest


def _parameter_groups(header: Header) -> list[dict[str, Any]]:
    """Weights grouped by layer (the tensor name up to its last dot), in file order."""
    groups: dict[str, dict[str, Any]] = {}
    for entry in header.tensors.values():
        if entry.name.startswith(RESERVED_PREFIX):
            continue
        layer, _, tensor = entry.name.rpartition(".")
        group = groups.setdefault(layer or tensor, {"name": layer or tensor, "tensors": {}, "parameters": 0})
        group["tensors"][tensor] = {"dtype": entry.dtype, "shape": list(entry.shape)}
        group["parameters"] += math.prod(entry.shape)
    return list(groups.values())


def _architecture(manifest: Manifest, header: Header) -> tuple[dict[str, Any], list[dict[str, Any]], int, int]:
    """The architecture summary, the per-layer rows, and the total and trainable parameter counts."""
    from ..spec.params import count_parameters

    if manifest.architecture_type == "spec":
        spec = manifest.model_spec(header.path)
        report = count_parameters(spec)
        stored = sum(math.prod(e.shape) for e in header.tensors.values() if not e.name.startswith(RESERVED_PREFIX))
        if stored != report.total + report.buffers:
            raise FormatError(
                f"{header.path}: the architecture needs {report.total:,} parameters and {report.buffers:,} buffer "
                f"values but the file stores {stored:,} values; the file is corrupt or was tampered with"
            )
        summary = {"type": "spec", "name": spec.name, "layers": len(spec.layers),
                   "input_shape": list(spec.input_shape), "output_shape": list(spec.output_shape)}
        return summary, [row.to_dict() for row in report.layers], report.total, report.trainable
    groups = _parameter_groups(header)
    total = sum(g["parameters"] for g in groups)
    if manifest.architecture_type == "class":
        reference, init = manifest.class_reference()
        summary = {"type": "class", "class": reference, "init": init,
                   "note": "a user-defined class: loading it needs trust_code=True or model_class="}
    else:
        raise FormatError(
            f"{header.path}: architecture type {str(manifest.architecture_type)[:40]!r} is not known to this "
            "modelkeep (known: 'spec', 'class'); a newer modelkeep may be needed to read it"
        )
    rows = [{"name": g["name"], "kind": "tensors", "output_shape": None, "parameters": g["parameters"],
             "tensors": g["tensors"]} for g in groups]
    return summary, rows, total, total


def _sizes(header: Header) -> dict[str, Any]:
    by_dtype: Counter[str] = Counter()
    weights = optimizer = other = 0
    for entry in header.tensors.values():
        by_dtype[entry.dtype] += entry.nbytes
        if entry.name.startswith("__optimizer__/"):
            optimizer += entry.nbytes
        elif entry.name.startswith(RESERVED_PREFIX):
            other += entry.nbytes
        else:
            weights += entry.nbytes
    return {
        "file_bytes": header.file_size,
        "header_bytes": header.data_start,
        "tensor_bytes": header.file_size - header.data_start,
        "weight_bytes": weights,
        "optimizer_bytes": optimizer,
        "other_bytes": other,
        "bytes_by_dtype": dict(sorted(by_dtype.items())),
        "metadata_bytes": {key: len(value.encode("utf-8")) for key, value in header.metadata.items()},
    }


def describe(path: str | os.PathLike[str], *, verify: bool = False) -> dict[str, Any]:
    """Everything ``modelkeep inspect --json`` prints, as a dict.

    The metadata and layout hashes are always checked (they need only the
    header); ``verify=True`` also hashes every tensor.
    """
    header, manifest = read_manifest(path, verify=True)
    integrity = read_integrity(header)
    verification = verify_file(header).to_dict() if verify else {"verified": False, "checked": "metadata and layout"}
    architecture, layers, total, trainable = _architecture(manifest, header)
    history = manifest.history or {}
    sizes = _sizes(header)
    optimizer = None
    if manifest.optimizer is not None:
        optimizer = {"class": manifest.optimizer.get("class"),
                     "param_groups": len(manifest.optimizer.get("param_groups") or []),
                     "bytes": sizes["optimizer_bytes"]}
    weights = [e for e in header.tensors.values() if not e.name.startswith(RESERVED_PREFIX)]
    return {
        "path": str(header.path),
        "format_version": manifest.format_version,
        "file_bytes": header.file_size,
        "tensor_bytes": sizes["tensor_bytes"],
        "tensors": len(header.tensors),
        "weight_tensors": len(weights),
        "stored_elements": sum(math.prod(e.shape) for e in weights),
        "architecture": architecture,
        "total_parameters": total,
        "trainable_parameters": trainable,
        "layers": layers,
        "task": manifest.task,
        "labels": manifest.labels,
        "signature": manifest.signature,
        "metrics": manifest.metrics,
        "hyperparameters": manifest.hyperparameters,
        "preprocessing": (manifest.preprocessing or {}).get("type"),
        "epochs_trained": len(history.get("epoch", [])),
        "history": history,
        "provenance": manifest.provenance,
        "card": manifest.card,
        "lineage": manifest.lineage,
        "optimizer": optimizer,
        "scheduler": (manifest.scheduler or {}).get("class") if manifest.scheduler else None,
        "content_hash": content_hash(header, integrity),
        "sizes": sizes,
        "integrity": verification,
        "unknown_sections": sorted(set(manifest.model_extra or {})),
    }
