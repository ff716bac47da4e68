"""A release model file from a checkpoint: the weights and the model's manifest, optimizer state dropped.

A checkpoint of a spec-built model carries the manifest pieces its caller
passed as ``extra_manifest`` (architecture, labels, preprocessing, task, ...).
``export_checkpoint`` completes them (signature, history, metrics, provenance,
lineage back to the checkpoint), validates the manifest and writes the file
with ``write_tensors`` and the same metadata keys as ``modelkeep.save``, so
``modelkeep.load`` opens it. It never writes except through ``write_tensors``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .manager import CheckpointInfo, describe_checkpoint, read_checkpoint, step_of
from .state import MODEL_PREFIX, decode_tree



def list_checkpoints(directory: str | os.PathLike[str], *, verify: bool = False) -> list[CheckpointInfo]:
    """Every checkpoint in ``directory``, oldest first (damaged ones with ``verified=False`` and an ``error``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{str(directory)!r} is not a folder of checkpoints")
    paths = [p for p in directory.iterdir() if step_of(p.name) is not None]
    return sorted((describe_checkpoint(p, verify=verify) for p in paths), key=lambda info: info.step)


def select_checkpoint(directory: str | os.PathLike[str], *, step: int | None = None, best: bool = False,
                      metric: str | None = None, mode: str | None = None) -> CheckpointInfo:
    """The checkpoint at ``step``, the best by the run's monitored metric (or ``metric``/``mode``), or the newest good one."""
    candidates = [info for info in list_checkpoints(directory) if info.verified is not False]
    if step is not None:
        for info in candidates:
            if info.step == step:
                return info
        raise CheckpointError(f"no usable checkpoint of step {step} in {directory}; steps: "
                              f"{[c.step for c in candidates]}")
    if best:
        monitor = (metric, mode or "min") if metric else next((c.monitor for c in candidates if c.monitor), None)
        if monitor is None:
            raise CheckpointError(f"the checkpoints in {directory} record no monitored metric; pass --metric NAME")
        name, direction = monitor
        scored = [c for c in candidates if isinstance(c.metrics.get(name), (int, float))
                  and math.isfinite(c.metrics[name])]
        if not scored:
            raise CheckpointError(f"no checkpoint in {directory} has a value for metric {name!r}")
        sign = 1.0 if direction == "min" else -1.0
        return min(scored, key=lambda c: (sign * c.metrics[name], -c.step))
    for info in reversed(candidates):
        checked = describe_checkpoint(info.path, verify=True)
        if checked.verified:
            return checked
    raise CheckpointError(f"no usable checkpoint in {directory}")


def export_checkpoint(directory: str | os.PathLike[str], out: str | os.PathLike[str], *, step: int | None = None,
                      best: bool = False, metric: str | None = None, mode: str | None = None,
                      with_optimizer: bool = False, durable: bool = True) -> Path:
    """Write a release model file ``out`` from a checkpoint in ``directory`` (see ``select_checkpoint``)."""
    from ..artifact.format import FORMAT_VERSION, KEY_MANIFEST, KEY_VERSION
    from ..artifact.manifest import Manifest, provenance
    from ..artifact.tensors import write_tensors

    chosen = select_checkpoint(directory, step=step, best=best, metric=metric, mode=mode)
    info, tensors, doc = read_checkpoint(chosen.path)
    pieces = decode_tree(doc.get("extra_manifest"), {})
    if not isinstance(pieces, dict) or not isinstance(pieces.get("architecture"), dict):
        raise CheckpointError(
            f"{info.path} holds no model manifest (it was saved without extra_manifest=...), so no release file "
            "can be made from it; save checkpoints of a spec-built model through fit(), or pass "
            "extra_manifest={'architecture': {'type': 'spec', 'spec': spec.to_dict()}, ...} to save()"
        )
    manifest = {"format_version": FORMAT_VERSION, **pieces}
    manifest["format_version"] = FORMAT_VERSION
    if manifest.get("signature") is None:
        manifest["signature"] = _signature(manifest["architecture"])
    history = decode_tree(doc.get("history"), tensors)
    if manifest.get("history") is None and isinstance(history, dict):
        manifest["history"] = history
    if manifest.get("metrics") is None and info.metrics:
        manifest["metrics"] = dict(info.metrics)
    if manifest.get("provenance") is None:
        manifest["provenance"] = provenance()
    if manifest.get("lineage") is None:
        manifest["lineage"] = {"checkpoint": {"name": info.name, "step": info.step, "epoch": info.epoch,
                                              "batch": info.batch, "created": info.created}}
    weights = {name[len(MODEL_PREFIX):]: t for name, t in tensors.items() if name.startswith(MODEL_PREFIX)}
    if with_optimizer:
        if "optimizer" not in doc["state"]:
            raise CheckpointError(f"{info.path} holds no optimizer state to export")
        # Re-encode in the model file's own layout, so load(...).optimizer_state() reads it back.
        from ..artifact.model_file import flatten_optimizer

        optimizer_tensors, manifest["optimizer"] = flatten_optimizer(decode_tree(doc["state"]["optimizer"], tensors))
        weights.update(optimizer_tensors)
    Manifest.model_validate(manifest)  # fail before writing, never after
    metadata = {
        "format": "pt",
        KEY_VERSION: str(FORMAT_VERSION),
        KEY_MANIFEST: json.dumps({k: v for k, v in manifest.items() if v is not None}, separators=(",", ":")),
    }
    return write_tensors(out, weights, metadata, durable=durable)


def _signature(architecture: dict[str, Any]) -> dict[str, Any] | None:
    if architecture.get("type") != "spec":
        return None
    from ..artifact.model_file import spec_signature  # the same signature modelkeep.save writes
    from ..spec.model import ModelSpec

    return spec_signature(ModelSpec.from_dict(architecture["spec"]))


def manifest_pieces(model: Any, *, spec: Any = None, labels: Any = None, preprocessing: Any = None,
                    task: str | None = None, hyperparameters: dict[str, Any] | None = None,
                    card: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The ``extra_manifest`` a caller passes to ``CheckpointManager.save`` for a spec-built model (None otherwise).

    ``preprocessing`` must already be fitted. Computed once before training; it does not change between saves.
    """
    spec = spec if spec is not None else getattr(model, "spec", None)
    if spec is None or not hasattr(spec, "to_dict"):
        return None
    pieces = {
        "architecture": {"type": "spec", "spec": spec.to_dict()},
        "task": task or "classification",
        "labels": list(labels) if labels is not None else None,
        "preprocessing": preprocessing.to_dict() if preprocessing is not None else None,
        "hyperparameters": dict(hyperparameters) if hyperparameters else None,
        "card": dict(card) if card else None,
    }
    return {k: v for k, v in pieces.items() if v is not None}
