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
    tuned = transfer_view(manifest.lineage, manifest.hyperparameters,
                          [(row["name"], row.get("parameters") or 0) for row in described.layers])
    layers = [{**row, **tuned[row["name"]]} if tuned and row.get("parameters") else row for row in described.layers]
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
        "layers": layers,
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
        "transfer": (manifest.lineage or {}).get("transfer") if tuned else None,
        "optimizer": optimizer,
        "scheduler": (manifest.scheduler or {}).get("class") if manifest.scheduler else None,
        "content_hash": content_hash(header, integrity),
        "sizes": sizes,
        "integrity": verification,
        "unknown_sections": sorted(manifest.unknown),
    }


def transfer_view(lineage: Any, hyperparameters: Any,
                  layers: list[tuple[str, int]]) -> dict[str, dict[str, Any]] | None:
    """Per layer (``(name, parameter count)``, input first) of a fine-tuned file, from its lineage's transfer
    record: whether it trained (None when the record does not say) and its learning rate before any
    schedule: the run's, scaled by ``discriminative ** (L - l)`` for the l-th of the L layers with
    parameters when the record says so; None when explicit groups set it. None for a file not fine-tuned."""
    lineage = lineage if isinstance(lineage, dict) else {}
    record = lineage.get("transfer")
    if not isinstance(record, dict):
        return None
    trained = lineage.get("trained_layers", record.get("trained_layers"))
    trained = None if not isinstance(trained, list) else {str(n).removeprefix("layers.") for n in trained}
    rate = (hyperparameters or {}).get("learning_rate")
    decay = record.get("discriminative")
    if record.get("groups") or not isinstance(rate, (int, float)):
        rate = None
    with_parameters = [name for name, count in layers if count]
    view = {}
    for name, count in layers:
        did = None if trained is None or not count else name in trained
        learning_rate = rate
        if rate is not None and isinstance(decay, (int, float)) and name in with_parameters:
            learning_rate = rate * decay ** (len(with_parameters) - 1 - with_parameters.index(name))
        view[name] = {"trained": did, "learning_rate": None if did is False or not count else learning_rate}
    return view
