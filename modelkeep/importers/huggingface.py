"""Hugging Face model folders: ``config.json`` and the weights (``hf_files.py`` reads them, bounded).

Nothing from the folder runs: ``auto_map`` and custom code are never
consulted, and weights are never unpickled. A BERT-family folder
(``model_type`` ``bert``: BERT, MiniLM, sentence-transformers models) becomes
the zoo ``bert`` spec with the folder's sizes, pooling and tokenizer
(``hf_bert.py``), its tensors renamed by the ``bert:huggingface`` layout. Any
other model type is read as named tensors, to be matched onto a spec, a zoo
model or a class.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import FormatError
from .base import Imported, register_reader
from .hf_bert import BERT_MODEL_TYPES, bert_imported
from .hf_files import WEIGHT_FILES, read_json, read_weights
from .hf_modelkeep import is_modelkeep_folder


class HuggingFaceReader:
    """A Hugging Face model folder: ``config.json`` + ``model.safetensors`` (sharded or not), ``pytorch_model.bin``."""

    format = "huggingface"
    description = ("a Hugging Face model folder (config.json with model.safetensors, sharded or not, or "
                   "pytorch_model.bin); BERT-family encoders, sentence-transformers included, come with their "
                   "architecture")

    def sniff(self, path: Path, head: bytes) -> bool:
        return path.is_dir() and (path / "config.json").is_file() and any(
            (path / name).is_file() for name in WEIGHT_FILES) and not is_modelkeep_folder(path)

    def read(self, path: Path, limits: Any) -> Imported:
        folder = Path(os.fspath(path))
        config = read_json(folder / "config.json", "the model config")
        if not isinstance(config, dict):
            raise FormatError(f"{folder / 'config.json'} must be a JSON object")
        tensors, details = read_weights(folder, limits)
        model_type = config.get("model_type")
        details = {"model_type": str(model_type)[:80], **details}
        architectures = config.get("architectures")
        if isinstance(architectures, list):
            details["architectures"] = [str(a)[:80] for a in architectures[:8]]
        if model_type in BERT_MODEL_TYPES:
            return bert_imported(folder, config, tensors, details)
        note = (f"model_type {str(model_type)[:40]!r} has no architecture in modelkeep yet; its tensors keep "
                "Hugging Face's names: give spec=, zoo= or model_class= to import them")
        return Imported(format=self.format, tensors=tensors, details=details, notes=[note])


register_reader(HuggingFaceReader())

__all__ = ["HuggingFaceReader"]
