"""The one place a manifest is assembled: ``save``, ``export_checkpoint`` and importers all call ``build_manifest``.

It turns the pieces of a model (architecture document, signature, labels,
pre- and post-processing, task, hyperparameters, history, metrics, card,
lineage, provenance, optimizer and scheduler state) into plain JSON, fills what
can be derived (the post-processor, the provenance), validates the result and
returns the ``Manifest``; ``manifest_metadata`` gives the metadata strings a
file stores. It never writes: the caller hands the metadata to ``write_tensors``.

``choose_postprocessing`` is also what ``load`` uses for a file written before
the ``postprocessing`` section existed, so old and new files agree.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from typing import Any, Mapping

from ..errors import ConfigError
from ..processing.postprocess import PostProcessor, make_postprocessor, postprocessor_for
from .codecs import codec_for
from .format import FORMAT_VERSION, KEY_MANIFEST, KEY_VERSION
from .manifest import Manifest, check_section

CARD_FIELDS = ("license", "intended_use", "training_data", "limitations", "metrics")


def jsonable(value: Any, where: str, *, finite_only: bool = False) -> Any:
    """``value`` as plain JSON data (tuples become lists, numpy scalars numbers); anything else is refused."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            if finite_only:
                raise ConfigError(f"{where} is {value}; the file stores only finite numbers there")
            return None  # as the history does: JSON has no NaN
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise ConfigError(f"{where} has a key of type {type(key).__name__}; JSON keys are strings")
            out[str(key)] = jsonable(item, f"{where}.{key}", finite_only=finite_only)
        return out
    if isinstance(value, (list, tuple)):
        return [jsonable(item, f"{where}[{i}]", finite_only=finite_only) for i, item in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy or 0-d torch scalar
        return jsonable(value.item(), where, finite_only=finite_only)
    raise ConfigError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which is not JSON data; the model "
        "file stores only JSON (never pickles). Pass numbers, strings, lists and dicts"
    )


def signature_output_units(signature: Mapping[str, Any] | None) -> int | None:
    """The last axis of the first output in a signature, when it is a fixed number."""
    outputs = (signature or {}).get("outputs") or []
    shape = outputs[0].get("shape") if outputs and isinstance(outputs[0], Mapping) else None
    if isinstance(shape, list) and len(shape) > 1 and isinstance(shape[-1], int) and not isinstance(shape[-1], bool):
        return shape[-1]
    return None


def choose_postprocessing(*, task: str | None, labels: Any = None, signature: Mapping[str, Any] | None = None,
                          hyperparameters: Mapping[str, Any] | None = None, final_activation: str | None = None,
                          output_units: int | None = None) -> PostProcessor:
    """The post-processor a model's own record implies: its task, recorded loss, output width and final activation."""
    loss = (hyperparameters or {}).get("loss")
    units = output_units if output_units is not None else signature_output_units(signature)
    return postprocessor_for(task or "classification", output_units=units, final_activation=final_activation,
                             loss=loss if isinstance(loss, str) else None,
                             labels=tuple(str(label) for label in labels) if labels is not None else None)


def provenance_record(data_fingerprint: str | None = None, *, source: Mapping[str, Any] | None = None,
                      reproducible: bool = False) -> dict[str, Any]:
    """Where and with what a model was made; ``source``: the foreign file an imported model came from.

    ``reproducible`` leaves out everything that differs between two saves of the same content (the clock, the
    host's Python, platform and torch, the git commit): ``created`` is ``SOURCE_DATE_EPOCH`` when set, else the
    Unix epoch, and ``reproducible: true`` says so.
    """
    from .._version import __version__

    if reproducible:
        record: dict[str, Any] = {"modelkeep_version": __version__, "created": reproducible_timestamp(),
                                  "reproducible": True}
        if data_fingerprint:
            record["data_fingerprint"] = data_fingerprint
        if source:
            record["source"] = jsonable(dict(source), "provenance.source")
        return record
    record = {
        "modelkeep_version": __version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(terse=True),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        record["torch_version"] = torch.__version__
    commit = _git_commit()
    if commit:
        record["git_commit"] = commit
    if data_fingerprint:
        record["data_fingerprint"] = data_fingerprint
    if source:
        record["source"] = jsonable(dict(source), "provenance.source")
    return record


def reproducible_timestamp() -> str:
    """``SOURCE_DATE_EPOCH`` (the reproducible-builds convention) as ISO 8601 UTC, else the Unix epoch."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    seconds = int(text) if text.isdigit() and len(text) <= 12 else 0
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    """The commit of the code that is training, when it runs inside a git work tree."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


def _as_document(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def build_manifest(
    architecture: Mapping[str, Any],
    *,
    task: str | None = None,
    labels: Any = None,
    preprocessing: Any = None,
    postprocessing: Any = None,
    signature: Mapping[str, Any] | None = None,
    history: Any = None,
    metrics: Mapping[str, Any] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    card: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
    optimizer: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    final_activation: str | None = None,
    output_units: int | None = None,
    extra: Mapping[str, Any] | None = None,
    where: str = "save()",
) -> Manifest:
    """The validated ``Manifest`` of a model, from its pieces; ``ConfigError``/``FormatError`` before anything is written.

    ``preprocessing`` and ``history`` may be objects with ``to_dict``;
    ``postprocessing`` a name (``"sigmoid"``), a section dict or a post-processor,
    and when ``None`` it is chosen from the task, ``hyperparameters["loss"]``, the
    output width (``output_units`` or the signature) and ``final_activation``.
    ``provenance`` defaults to a fresh record. ``extra`` holds sections this
    modelkeep does not know (kept as they are).
    """
    codec_for(architecture.get("type"), where)  # an unknown type is refused at write time too
    if card is not None and not isinstance(card, Mapping):
        raise ConfigError(f"card= must be a dict with fields such as {', '.join(CARD_FIELDS)}")
    task = check_section("task", task or "classification", where)  # before the post-processor is chosen from it
    labels = [str(label) for label in labels] if labels is not None else None
    if postprocessing is None:
        chosen = choose_postprocessing(task=task, labels=labels, signature=signature, hyperparameters=hyperparameters,
                                       final_activation=final_activation, output_units=output_units)
    else:
        chosen = make_postprocessor(postprocessing, labels=labels)
    _check_outputs(chosen.to_dict()["type"], output_units or signature_output_units(signature), labels, where)
    sections = {
        "format_version": FORMAT_VERSION,
        "architecture": dict(architecture),
        "task": task,
        "labels": labels,
        "preprocessing": _as_document(preprocessing),
        "postprocessing": chosen.to_dict(),
        "history": _as_document(history),
        "metrics": dict(metrics) if metrics else None,
        "hyperparameters": dict(hyperparameters) if hyperparameters else None,
        "signature": dict(signature) if signature is not None else None,
        "provenance": dict(provenance) if provenance is not None else provenance_record(),
        "card": dict(card) if card else None,
        "lineage": dict(lineage) if lineage else None,
        "optimizer": optimizer,
        "scheduler": scheduler,
    }
    for key, value in (extra or {}).items():
        if key not in sections:
            sections[key] = value
    document = {key: jsonable(value, key) for key, value in sections.items() if value is not None}
    return Manifest.from_document(document, where)


def _check_outputs(kind: str, units: int | None, labels: list[str] | None, where: str) -> None:
    """Refuse, before writing, a post-processor or labels that the network's output width contradicts."""
    if units is None or kind not in ("sigmoid", "softmax"):
        return
    if (kind == "sigmoid") != (units == 1):
        raise ConfigError(
            f"{where}: the network gives {units} output{'s' if units != 1 else ''} but the post-processing is "
            f"{kind!r}; use 'sigmoid' for one output (two classes) and 'softmax' for one output per class"
        )
    classes = 2 if kind == "sigmoid" else units
    if labels is not None and len(labels) != classes:
        raise ConfigError(
            f"{where}: {len(labels)} labels were given but the network's output gives {classes} classes; "
            "pass one label per class (two for a one-output binary model)"
        )


def manifest_metadata(manifest: Manifest) -> dict[str, str]:
    """The metadata strings a model file stores for ``manifest`` (the integrity record is added by the writer)."""
    return {
        "format": "pt",  # what Hugging Face tooling expects of a PyTorch safetensors file
        KEY_VERSION: str(FORMAT_VERSION),
        KEY_MANIFEST: json.dumps(manifest.to_dict(), separators=(",", ":"), allow_nan=False),
    }


__all__ = ["CARD_FIELDS", "build_manifest", "choose_postprocessing", "jsonable", "manifest_metadata",
           "provenance_record", "reproducible_timestamp", "signature_output_units"]
