"""``export_hf``: a modelkeep file as a Hugging Face-style folder that hub tools can upload.

The folder holds ``model.safetensors`` (the weights, byte for byte, under the file's own names; the optimizer
state is left out), ``config.json`` (``"model_type": "modelkeep"``, the labels as ``id2label``/``label2id``, and
the file's whole manifest under ``"modelkeep"``, so the folder describes itself and ``modelkeep import`` rebuilds
the model from it) and ``README.md``, a model card whose YAML front matter gives the hub its licence, tags,
datasets, base model and metrics. Nothing in it depends on the clock or the host: exporting the same file twice
gives the same bytes. Each file is written atomically, ``config.json`` (what marks the folder) last.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError, ExportError

OUTPUT_FILES = ("model.safetensors", "config.json", "README.md")


def export_hf(model_or_path: Any, out_dir: str | os.PathLike[str], *, name: str | None = None) -> Path:
    """Write the modelkeep file (or loaded ``Model``) ``model_or_path`` as the folder ``out_dir``; returns it.

    ``out_dir`` is created when missing; it may already hold an earlier export, but nothing else, so that no stale
    weights sit beside the new ones. ``name`` titles the card (default: the card's ``name``, else the file's stem).
    """
    from ..artifact.format import FORMAT_VERSION, RESERVED_PREFIX
    from ..artifact.integrity import content_hash
    from ..artifact.manifest import read_manifest
    from ..artifact.tensors import read_tensors, write_tensors
    from ..importers.hf_modelkeep import CONFIG_KEY, MODEL_TYPE, WEIGHTS_FILE
    from ..io.atomic import atomic_write

    path = _file_of(model_or_path)
    header, manifest = read_manifest(path)
    out = Path(out_dir)
    _check_folder(out)
    tensors = {key: tensor for key, tensor in read_tensors(path).items() if not key.startswith(RESERVED_PREFIX)}
    document = {key: value for key, value in manifest.to_dict().items() if key not in ("optimizer", "scheduler")}
    title = name or str((manifest.card or {}).get("name") or path.stem)
    config: dict[str, Any] = {"model_type": MODEL_TYPE, "architectures": [_architecture_name(manifest)],
                              "library_name": "modelkeep", "task": manifest.task}
    if manifest.labels:
        config["id2label"] = {str(i): label for i, label in enumerate(manifest.labels)}
        config["label2id"] = {label: i for i, label in enumerate(manifest.labels)}
    config[CONFIG_KEY] = {"format_version": FORMAT_VERSION, "content_hash": content_hash(header),
                          "manifest": document}
    out.mkdir(parents=True, exist_ok=True)
    write_tensors(out / WEIGHTS_FILE, tensors, {"format": "pt"})
    with atomic_write(out / "README.md") as handle:
        handle.write(model_card(document, title=title).encode("utf-8"))
    with atomic_write(out / "config.json") as handle:
        handle.write((json.dumps(config, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
    return out


def _file_of(model_or_path: Any) -> Path:
    if isinstance(model_or_path, (str, os.PathLike)):
        return Path(model_or_path)
    path = getattr(model_or_path, "path", None)
    if path is None:
        raise ConfigError("export_hf takes a modelkeep file (or a Model loaded from one); save the model first")
    return Path(path)


def _check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; --format hf writes a folder (give a folder name)")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_FILES and not p.name.startswith("."))
        if others:
            shown = ", ".join(others[:5]) + (f" (+{len(others) - 5} more)" if len(others) > 5 else "")
            raise ExportError(f"{out} already holds other files ({shown}); export into an empty or new folder")


def _architecture_name(manifest: Any) -> str:
    architecture = manifest.architecture
    if manifest.architecture_type == "spec":
        return str((architecture.get("spec") or {}).get("name") or "ModelSpec")
    return str(architecture.get("class", "Module")).rpartition(":")[2] or "Module"


def front_matter(document: Mapping[str, Any], *, title: str) -> dict[str, Any]:
    """The card's YAML metadata, as the hub reads it: licence, library, tags, datasets, base model, metrics."""
    card = dict(document.get("card") or {})
    lineage = dict(document.get("lineage") or {})
    meta: dict[str, Any] = {}
    if card.get("license"):
        meta["license"] = str(card["license"])
    meta["library_name"] = "modelkeep"
    tags = ["modelkeep", str(document.get("task") or "classification")]
    meta["tags"] = tags + [str(t) for t in _as_list(card.get("tags")) if str(t) not in tags]
    datasets = _as_list(card.get("datasets") or card.get("training_data"))
    if datasets:
        meta["datasets"] = [str(d) for d in datasets]
    base = card.get("base_model") or lineage.get("base_model")
    if base:
        meta["base_model"] = str(base)
    metrics = _metrics(document)
    if metrics:
        meta["metrics"] = list(metrics)
        meta["model-index"] = [{"name": title, "results": [{
            "task": {"type": str(document.get("task") or "classification")},
            "metrics": [{"type": key, "name": key, "value": value} for key, value in metrics.items()]}]}]
    return meta


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _metrics(document: Mapping[str, Any]) -> dict[str, float]:
    """Every numeric metric of the file and of its card (the card's win when both name one)."""
    found: dict[str, float] = {}
    card_metrics = (document.get("card") or {}).get("metrics")
    for source in (document.get("metrics") or {}, card_metrics if isinstance(card_metrics, Mapping) else {}):
        for key, value in source.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found[str(key)] = value
    return found


def model_card(document: Mapping[str, Any], *, title: str) -> str:
    """``README.md``: YAML front matter, then the card's sections as Markdown."""
    import yaml

    card = dict(document.get("card") or {})
    lines = ["---", yaml.safe_dump(front_matter(document, title=title), sort_keys=False,
                                   allow_unicode=True).rstrip("\n"), "---", "", f"# {title}", ""]
    lines += [f"A {document.get('task', 'classification')} model saved with modelkeep and exported as a Hugging "
              "Face-style folder. `modelkeep import . model.safetensors` rebuilds the modelkeep file, with its "
              "architecture, labels and processing, from `config.json`.", ""]
    for field, heading in (("intended_use", "Intended use"), ("training_data", "Training data"),
                           ("limitations", "Limitations")):
        if card.get(field):
            lines += [f"## {heading}", "", str(card[field]), ""]
    metrics = _metrics(document)
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {value:g} |" for key, value in metrics.items()] + [""]
    parent = (document.get("lineage") or {}).get("parent")
    if isinstance(parent, Mapping) and parent.get("content_hash"):
        relation = (document.get("lineage") or {}).get("relation", "derived")
        lines += ["## Lineage", "", f"{str(relation).capitalize()} from the model with content hash "
                                    f"`{parent['content_hash']}`.", ""]
    if document.get("labels"):
        lines += ["## Labels", "", ", ".join(f"`{label}`" for label in document["labels"]), ""]
    return "\n".join(lines)


__all__ = ["OUTPUT_FILES", "export_hf", "front_matter", "model_card"]
