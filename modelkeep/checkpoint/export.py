"""A release model file from a checkpoint: the weights and the model's manifest, optimizer state dropped.

A checkpoint of a spec-built model carries the manifest pieces its caller
passed as ``extra_manifest`` (architecture, labels, preprocessing, task, ...).
``export_checkpoint`` completes them (signature, history, metrics, provenance,
lineage back to the checkpoint) through the one manifest builder
(``artifact.manifest_builder``, which ``modelkeep.save`` uses too) and writes the
file with ``write_tensors``, so ``modelkeep.load`` opens it. It never writes
except through ``write_tensors``.

A sharded checkpoint (``sharded.save_sharded``) is exported the same way by ``export_sharded``: its shards are
assembled into full tensors in one process, without a process group, and its document's ``extra_manifest``
plays the part of the file checkpoint's.
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
    """Write a release model file ``out`` from a checkpoint in ``directory`` (see ``select_checkpoint``).

    ``directory`` may also be a sharded checkpoint (a ``step-<n>`` folder of ``sharded.save_sharded``) or a
    folder of them: its shards are assembled into full tensors in this one process (``export_sharded``).
    """
    if isinstance(directory, (str, os.PathLike)) and not is_url(directory):
        from .sharded import is_sharded

        if is_sharded(directory) and not any(step_of(p.name) is not None for p in _files_of(directory)):
            if best or metric or mode:
                raise CheckpointError(f"{directory} holds sharded checkpoints; pick one with --step (not --best, "
                                      "--metric or --mode)")
            return export_sharded(directory, out, step=step, with_optimizer=with_optimizer, durable=durable)
    storage = run_checkpoints(directory)
    chosen = select_checkpoint(storage, step=step, best=best, metric=metric, mode=mode)
    info, tensors, doc = read_stored(storage, chosen.name)
    pieces = decode_tree(doc.get("extra_manifest"), {})
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
    return _write_release(out, pieces, weights, where=info.path, history=history, metrics=info.metrics,
                          lineage=checkpoint, optimizer=optimizer, durable=durable)


def _files_of(directory: str | os.PathLike[str]) -> list[Path]:
    """The files of ``directory`` and of its ``checkpoints/`` sub-folder (where a run folder keeps them)."""
    found = []
    for folder in (Path(directory), Path(directory) / "checkpoints"):
        if folder.is_dir():
            found += [entry for entry in folder.iterdir() if entry.is_file()]
    return found


def export_sharded(location: str | os.PathLike[str], out: str | os.PathLike[str], *, step: int | None = None,
                   with_optimizer: bool = False, durable: bool = True) -> Path:
    """Write a release model file ``out`` from a sharded checkpoint (``location``: a ``step-<n>`` folder, a folder
    of them or a run folder; ``step`` picks one, else the newest good one), in this process alone.

    The weights are the tensors saved under the state dict's ``"model"`` key (``_sharded_weights``); the model's
    manifest pieces are the document's ``"extra_manifest"`` (as for file checkpoints: ``manifest_pieces(model,
    spec=...)``), which fit's own sharded checkpoints (``strategy: fsdp``) carry. ``with_optimizer`` keeps the
    optimizer state of fit's checkpoints (the document's ``state`` tree), whole, in the model file's own layout.
    """
    from .sharded import MANIFEST_NAME, latest_sharded, read_sharded, sharded_name, sharded_root

    folder = Path(location)
    if not (folder / MANIFEST_NAME).is_file():
        root = sharded_root(folder)
        chosen = root / sharded_name(step) if step is not None else latest_sharded(root)
        if chosen is None or not (chosen / MANIFEST_NAME).is_file():
            raise CheckpointError(f"no committed sharded checkpoint{'' if step is None else f' of step {step}'} "
                                  f"in {root}")
        folder = chosen
    manifest, tensors = read_sharded(folder)
    weights = _sharded_weights(manifest.paths, tensors)
    if not weights:
        raise CheckpointError(f"{folder} holds no model weights (tensors under the state dict's 'model' key)")
    document = manifest.document
    position = document.get("position") if isinstance(document.get("position"), dict) else {}
    checkpoint = {"checkpoint": {"name": folder.name, "step": manifest.step, "epoch": position.get("epoch", 0),
                                 "batch": position.get("batch", 0), "created": manifest.created}}
    metrics = document.get("metrics") if isinstance(document.get("metrics"), dict) else {}
    optimizer = None
    if with_optimizer:
        tree = document.get("state") if isinstance(document.get("state"), dict) else {}
        if "optimizer" not in tree:
            raise CheckpointError(f"{folder} holds no optimizer state to export")
        from ..artifact.optimizer_state import flatten_optimizer

        optimizer_tensors, optimizer = flatten_optimizer(decode_tree(tree["optimizer"], tensors))
        weights.update(optimizer_tensors)
    return _write_release(out, document.get("extra_manifest"), weights, where=folder, history=document.get("history"),
                          metrics=metrics, lineage=checkpoint, optimizer=optimizer, durable=durable)


def _sharded_weights(paths: Any, tensors: dict[str, Any]) -> dict[str, Any]:
    """The model's weights among a sharded checkpoint's full tensors, by parameter name.

    Two layouts put them under the state dict's ``"model"`` key: a nested state dict such as
    ``{"model": get_model_state_dict(model), "optim": ...}`` (DCP key ``model.<name>``, path ``["model", name]``),
    and fit's flat capture (``checkpoint.state.capture``: key and path ``["model/<name>"]``). FSDP2 shards in
    place, so both name the parameters as the unsharded model does (no wrapper prefix to strip).
    """
    weights = {}
    for key, tensor in tensors.items():
        path = paths.get(key, ())
        if len(path) == 2 and path[0] == "model":
            weights[str(path[1])] = tensor
        elif len(path) == 1 and str(path[0]).startswith(MODEL_PREFIX):
            weights[str(path[0])[len(MODEL_PREFIX):]] = tensor
    return weights


def _write_release(out: str | os.PathLike[str], pieces: Any, weights: dict[str, Any], *, where: Any, history: Any,
                   metrics: Any, lineage: dict[str, Any], optimizer: Any, durable: bool) -> Path:
    """The release file: the manifest pieces completed by the one manifest builder, then ``write_tensors``."""
    from ..artifact.manifest_builder import build_manifest, manifest_metadata
    from ..artifact.tensors import write_tensors

    if not isinstance(pieces, dict) or not isinstance(pieces.get("architecture"), dict):
        raise CheckpointError(
            f"{where} holds no model manifest (it was saved without extra_manifest=...), so no release file "
            "can be made from it; save checkpoints of a spec-built model through fit(), or pass "
            "extra_manifest={'architecture': {'type': 'spec', 'spec': spec.to_dict()}, ...} to save() "
            "(document={'extra_manifest': ...} to save_sharded())"
        )
    architecture = _architecture_facts(pieces["architecture"], where)
    manifest = build_manifest(  # fails before writing, never after
        pieces["architecture"], task=pieces.get("task"), labels=pieces.get("labels"),
        preprocessing=pieces.get("preprocessing"), postprocessing=pieces.get("postprocessing"),
        signature=pieces.get("signature") or (architecture.signature if architecture else None),
        history=pieces.get("history") or (history if isinstance(history, dict) else None),
        metrics=pieces.get("metrics") or (dict(metrics) if metrics else None),
        hyperparameters=pieces.get("hyperparameters"), provenance=pieces.get("provenance"),
        card=pieces.get("card"), lineage=pieces.get("lineage") or lineage, optimizer=optimizer,
        scheduler=pieces.get("scheduler"),
        final_activation=architecture.final_activation if architecture else None,
        output_units=architecture.output_units if architecture else None,
        extra={k: v for k, v in pieces.items() if k not in _BUILDER_SECTIONS}, where=str(where),
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
