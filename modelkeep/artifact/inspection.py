"""What a model file holds, read from its header and metadata alone: ``modelkeep inspect``.

``describe`` never imports torch, NumPy or pydantic and never reads tensor
data, except with ``verify=True``, which hashes every tensor through a read-only
memory map (still without torch). The architecture is described by its codec
(``architecture.py``); a class the file names is shown, never imported.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from typing import Any

from .codecs import codec_for
from .format import RESERVED_PREFIX, Header
from .integrity import content_hash, read_integrity, verify_file
from .manifest import read_manifest


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
    described = codec_for(manifest.architecture.get("type"), header.path).describe(manifest.architecture, header)
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
        "architecture": described.summary,
        "total_parameters": described.total,
        "trainable_parameters": described.trainable,
        "layers": described.layers,
        "task": manifest.task,
        "labels": manifest.labels,
        "signature": manifest.signature,
        "metrics": manifest.metrics,
        "hyperparameters": manifest.hyperparameters,
        "preprocessing": (manifest.preprocessing or {}).get("type"),
        "postprocessing": manifest.postprocessing,
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
        "unknown_sections": sorted(manifest.unknown),
    }
