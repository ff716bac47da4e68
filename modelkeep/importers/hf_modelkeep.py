"""Hugging Face-style folders written by ``modelkeep export --format hf``, read back with their architecture.

The folder is ``model.safetensors`` (the weights under modelkeep's own names), ``config.json`` and a
``README.md`` model card. ``config.json`` says ``"model_type": "modelkeep"`` and carries the file's manifest
under ``"modelkeep"``: that marker is what ``sniff`` recognises, and what keeps the generic Hugging Face reader
(``huggingface.py``) from claiming the folder too. The manifest gives the spec, labels, task, pre- and
post-processing, so ``import`` needs no target and predicts as the exported file did. Nothing from the folder
runs; the JSON is read bounded and the weights through the bounded safetensors reader.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import FormatError
from .base import Imported, register_reader
from .hf_files import read_bounded, read_weights

MODEL_TYPE = "modelkeep"                 # config.json's "model_type" in a folder this package wrote
CONFIG_KEY = "modelkeep"                 # config.json's key holding {"format_version", "manifest", ...}
WEIGHTS_FILE = "model.safetensors"
MAX_CONFIG_BYTES = 64 << 20              # the manifest can be as large as the file format allows one metadata value


def read_config(folder: Path) -> dict[str, Any] | None:
    """The folder's ``config.json`` when it is one this package wrote (the marker), else ``None``."""
    from ..artifact.format import loads_bounded

    path = folder / "config.json"
    if not path.is_file():
        return None
    with open(path, "rb") as handle:  # a cheap look first: a foreign config is never parsed in full
        head = handle.read(256)
    if b'"modelkeep"' not in head:
        return None
    config = loads_bounded(read_bounded(path, "the model config", cap=MAX_CONFIG_BYTES), str(path))
    if not isinstance(config, dict) or config.get("model_type") != MODEL_TYPE:
        return None
    return config


def is_modelkeep_folder(path: Path) -> bool:
    """True for a folder written by ``modelkeep export --format hf`` (its config.json carries the marker)."""
    try:
        return path.is_dir() and (path / WEIGHTS_FILE).is_file() and read_config(path) is not None
    except (OSError, ValueError):
        return False


class ModelkeepFolderReader:
    """A folder written by ``modelkeep export --format hf``: weights, architecture and processing come back."""

    format = "modelkeep-hf"
    description = ("a Hugging Face-style folder written by `modelkeep export --format hf` (config.json with "
                   "model_type 'modelkeep'); it comes with its architecture, labels and processing")

    def sniff(self, path: Path, head: bytes) -> bool:
        return is_modelkeep_folder(path)

    def read(self, path: Path, limits: Any) -> Imported:
        from ..artifact.manifest import validate_manifest

        folder = Path(path)
        config = read_config(folder)
        section = config.get(CONFIG_KEY) if config else None
        if not isinstance(section, dict) or not isinstance(section.get("manifest"), dict):
            raise FormatError(f"{folder / 'config.json'}: '{CONFIG_KEY}' must hold the model's manifest")
        manifest = validate_manifest(section["manifest"], folder / "config.json")
        tensors, details = read_weights(folder, limits)
        details = {"model_type": MODEL_TYPE, **details}
        if isinstance(section.get("content_hash"), str):
            details["content_hash"] = section["content_hash"][:80]
        spec, notes = None, []
        if manifest.architecture_type == "spec":
            from ..artifact.spec_codec import spec_of

            spec = spec_of(manifest.architecture, folder / "config.json")
        else:
            reference = str(manifest.architecture.get("class", "?"))[:120]
            notes.append(f"the model is the class {reference}, whose code the folder does not hold: give "
                         "model_class= (and init=) to import it")
        return Imported(format=self.format, tensors=tensors, spec=spec, labels=manifest.labels,
                        preprocessing=manifest.preprocessing, postprocessing=manifest.postprocessing,
                        task=manifest.task, details=details, notes=notes)


register_reader(ModelkeepFolderReader())

__all__ = ["CONFIG_KEY", "MODEL_TYPE", "ModelkeepFolderReader", "WEIGHTS_FILE", "is_modelkeep_folder",
           "read_config"]
