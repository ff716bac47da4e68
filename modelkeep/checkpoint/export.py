"""A release model file from a checkpoint: the weights and the model's manifest, optimizer state dropped.

A checkpoint of a spec-built model carries the manifest pieces its caller
passed as ``extra_manifest`` (architecture, labels, preprocessing, task, ...).
``export_checkpoint`` completes them (signature, history, metrics, provenance,
lineage back to the checkpoint) through the one manifest builder
(``artifact.manifest_builder``, which ``modelkeep.save`` uses too) and writes the
file with ``write_tensors``, so ``modelkeep.load`` opens it. It never writes
except through ``write_tensors``.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .reading import CheckpointInfo, CheckpointWarning, describe_stored, misnamed, position_order, read_stored
from .state import MODEL_PREFIX, decode_tree
from .storage import CheckpointReader, is_url, run_checkpoints, step_of


def list_checkpoints(directory: str | os.PathLike[str] | CheckpointReader, *,
                     verify: bool = False) -> list[CheckpointInfo]:
    """Every checkpoint in ``directory`` (a checkpoint folder or a run folder holding ``checkpoints/``, an fsspec
    URL or a storage backend), oldest first by the position each records (never by file name).

    Damaged ones have ``verified=False`` and an ``error``; a file whose name disagrees with the step it
    records gets a ``CheckpointWarning``.
    """
    if isinstance(directory, (str, os.PathLike)) and not is_url(directory) and not Path(directory).is_dir():
        raise CheckpointError(f"{str(directory)!r} is not a folder of checkpoints; give the run folder or its "
                              "checkpoints/ folder")
    storage = run_checkpoints(directory)
    infos = [describe_stored(storage, name, verify=verify) for name in storage.names() if step_of(name) is not None]
    for info in infos:
        if (problem := misnamed(info)) is not None:
            warnings.warn(problem, CheckpointWarning, stacklevel=2)
    return sorted(infos, key=position_order)


def select_checkpoint(directory: str | os.PathLike[str] | CheckpointReader, *, step: int | None = None,
                      best: bool = False, metric: str | None = None, mode: str | None = None) -> CheckpointInfo:
    """The checkpoint at ``step``, the best by the run's monitored metric (or ``metric``/``mode``), or the newest good one."""
    storage = run_checkpoints(directory)
    candidates = [info for info in list_checkpoints(storage) if info.verified is not False]
    if step is not None:
        for info in candidates:
            if info.step == step:
                return info
        raise CheckpointError(f"no usable checkpoint of step {step} in {storage.location}; steps: "
                              f"{[c.step for c in candidates]}")
    if best:
        monitor = (metric, mode or "min") if metric else next((c.monitor for c in candidates if c.monitor), None)
        if monitor is None:
            raise CheckpointError(f"the checkpoints in {storage.location} record no monitored metric; "
                                  "pass --metric NAME")
        name, direction = monitor
        scored = [c for c in candidates if isinstance(c.metrics.get(name), (int, float))
                  and math.isfinite(c.metrics[name])]
        if not scored:
            raise CheckpointError(f"no checkpoint in {storage.location} has a value for metric {name!r}")
        sign = 1.0 if direction == "min" else -1.0
        return min(scored, key=lambda c: (sign * c.metrics[name], -c.step))
    for info in reversed(candidates):
        checked = describe_stored(storage, info.name, verify=True)
        if checked.verified:
            return checked
    raise CheckpointError(f"no usable checkpoint in {storage.location}")


def export_checkpoint(directory: str | os.PathLike[str], out: str | os.PathLike[str], *, step: int | None = None,
                      best: bool = False, metric: str | None = None, mode: str | None = None,
                      with_optimizer: bool = False, durable: bool = True) -> Path:
    """Write a release model file ``out`` from a checkpoint in ``directory`` (see ``select_checkpoint``)."""
    from ..artifact.manifest_builder import build_manifest, manifest_metadata
    from ..artifact.tensors import write_tensors

    storage = run_checkpoints(directory)
    chosen = select_checkpoint(storage, step=step, best=best, metric=metric, mode=mode)
    info, tensors, doc = read_stored(storage, chosen.name)
    pieces = decode_tree(doc.get("extra_manifest"), {})
    if not isinstance(pieces, dict) or not isinstance(pieces.get("architecture"), dict):
        raise CheckpointError(
            f"{info.path} holds no model manifest (it was saved without extra_manifest=...), so no release file "
            "can be made from it; save checkpoints of a spec-built model through fit(), or pass "
            "extra_manifest={'architecture': {'type': 'spec', 'spec': spec.to_dict()}, ...} to save()"
        )
    architecture = _architecture_facts(pieces["architecture"], info.path)
    history = decode_tree(doc.get("history"), tensors)
    weights = {name[len(MODEL_PREFIX):]: t for name, t in tensors.items() if name.startswith(MODEL_PREFIX)}
    optimizer = None
    if with_optimizer:
        if "optimizer" not in doc["state"]:
            raise CheckpointError(f"{info.path} holds no optimizer state to export")
        # Re-encode in the model file's own layout, so load(...).optimizer_state() reads it back.
        from ..artifact.optimizer_state import flatten_optimizer

        optimizer_tensors, optimizer = flatten_optimizer(decode_tree(doc["state"]["optimizer"], tensors))
        weights.update(optimizer_tensors)
    checkpoint = {"checkpoint": {"name": info.name, "step": info.step, "epoch": info.epoch, "batch": info.batch,
                                 "created": info.created}}
    manifest = build_manifest(  # fails before writing, never after
        pieces["architecture"], task=pieces.get("task"), labels=pieces.get("labels"),
        preprocessing=pieces.get("preprocessing"), postprocessing=pieces.get("postprocessing"),
        signature=pieces.get("signature") or (architecture.signature if architecture else None),
        history=pieces.get("history") or (history if isinstance(history, dict) else None),
        metrics=pieces.get("metrics") or (dict(info.metrics) if info.metrics else None),
        hyperparameters=pieces.get("hyperparameters"), provenance=pieces.get("provenance"),
        card=pieces.get("card"), lineage=pieces.get("lineage") or checkpoint, optimizer=optimizer,
        scheduler=pieces.get("scheduler"),
        final_activation=architecture.final_activation if architecture else None,
        output_units=architecture.output_units if architecture else None,
        extra={k: v for k, v in pieces.items() if k not in _BUILDER_SECTIONS}, where=str(info.path),
    )
    return write_tensors(out, weights, manifest_metadata(manifest), durable=durable)


# Sections the builder makes itself or takes as arguments above; any other piece is kept as an unknown section.
_BUILDER_SECTIONS = frozenset({"format_version", "architecture", "task", "labels", "preprocessing", "postprocessing",
                               "signature", "history", "metrics", "hyperparameters", "provenance", "card", "lineage",
                               "optimizer", "scheduler"})


def _architecture_facts(architecture: dict[str, Any], where: Any) -> Any:
    """What the architecture document says of the network (signature, output width, final activation), or None.

    The architecture's codec rebuilds it on the meta device (no memory for weights), which also checks it
    before anything is written. A user class is not imported to export it: its facts stay unknown.
    """
    from ..artifact.codecs import codec_for
    from ..errors import TrustError

    try:
        return codec_for(architecture.get("type"), where).decode(architecture, where=where)
    except TrustError:
        return None


def manifest_pieces(model: Any, *, spec: Any = None, labels: Any = None, preprocessing: Any = None,
                    task: str | None = None, hyperparameters: dict[str, Any] | None = None,
                    card: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The ``extra_manifest`` a caller passes to ``CheckpointManager.save`` for a spec-built model (None otherwise).

    Made by the one manifest builder (so it is validated, and the post-processor is chosen, before training
    starts); ``export_checkpoint`` completes it. ``preprocessing`` must already be fitted. Computed once before
    training; it does not change between saves.
    """
    spec = spec if spec is not None else getattr(model, "spec", None)
    if spec is None or not hasattr(spec, "to_dict"):
        return None
    from ..artifact.codecs import codec_for
    from ..artifact.manifest_builder import build_manifest
    from ..artifact.spec_codec import output_units, spec_signature

    manifest = build_manifest(
        codec_for("spec").encode(model, spec=spec), task=task, labels=labels, preprocessing=preprocessing,
        signature=spec_signature(spec), hyperparameters=hyperparameters, card=card, provenance={},
        final_activation=spec.final_activation(), output_units=output_units(spec), where="manifest_pieces()",
    )
    pieces = manifest.to_dict()
    for made_at_export in ("format_version", "provenance"):
        pieces.pop(made_at_export, None)
    return pieces
