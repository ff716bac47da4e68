"""Reading a Hugging Face model folder's files, bounded: its JSON documents and its weights, one file or shards.

The weights are ``model.safetensors``, shards named by ``model.safetensors.index.json``,
or ``pytorch_model.bin`` (sharded: ``pytorch_model.bin.index.json``). Each file is read
by the bounded readers of ``pytorch.py`` (safetensors by modelkeep's own header
checks, a ``.bin`` only through ``torch.load(weights_only=True)`` after a dry run),
so nothing is unpickled. Every JSON file is read with a size cap and bounded
parsing; an index may name at most ``MAX_SHARDS`` shards, each a plain file name
inside the folder, and every tensor must be in the shard the index names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifact.format import loads_bounded
from ..errors import FormatError

MAX_JSON_BYTES = 1 << 20          # config.json, modules.json, a pooling config, sentence_bert_config.json
MAX_INDEX_BYTES = 32 << 20        # a shard index (a few hundred kilobytes for the largest public models)
MAX_SHARDS = 1024
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def read_bounded(path: Path, what: str, *, cap: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of ``path``, refused unread when it is larger than ``cap``."""
    size = path.stat().st_size
    if size > cap:
        raise FormatError(f"{path}: {what} is {size:,} bytes; the limit is {cap:,}, so it is refused unread")
    with open(path, "rb") as handle:
        raw = handle.read(cap + 1)
    if len(raw) > cap:
        raise FormatError(f"{path}: {what} grew past {cap:,} bytes while it was read; refusing it")
    return raw


def read_json(path: Path, what: str, *, cap: int = MAX_JSON_BYTES, required: bool = True) -> Any:
    """The JSON document at ``path``, refused unread when larger than ``cap`` bytes (None if optional and absent)."""
    if not path.is_file():
        if required:
            raise FormatError(f"{path.parent}: {what} ({path.name}) is missing")
        return None
    return loads_bounded(read_bounded(path, what, cap=cap), f"{path}")


def folder_file(folder: Path, name: Any, what: str) -> Path:
    """``folder / name`` for a plain file name the folder's JSON gave (no separators, no ``..``), which exists."""
    if (not isinstance(name, str) or not name or len(name) > 255 or name in (".", "..")
            or any(sep in name for sep in ("/", "\\", "\0"))):
        raise FormatError(f"{folder}: {what} names {str(name)[:80]!r}, which is not a plain file name in the "
                          "folder; refusing it")
    path = folder / name
    if not path.is_file():
        raise FormatError(f"{folder}: {what} names {name!r}, which is not in the folder; the download is incomplete")
    return path


def _weights_file(folder: Path) -> str:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return name
    raise FormatError(f"{folder} has a config.json but no weights ({', '.join(WEIGHT_FILES)})")


def _shards(folder: Path, index_name: str) -> tuple[list[Path], dict[str, str]]:
    index = read_json(folder / index_name, "the shard index", cap=MAX_INDEX_BYTES)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError(f"{folder / index_name}: 'weight_map' must map tensor names to shard files")
    files = sorted({str(v) if isinstance(v, str) else "" for v in weight_map.values()})
    if len(files) > MAX_SHARDS:
        raise FormatError(f"{folder / index_name} names {len(files):,} shards; the limit is {MAX_SHARDS:,}")
    return [folder_file(folder, name, "the shard index") for name in files], weight_map


def _read_one(path: Path, limits: Any) -> dict[str, Any]:
    from .pytorch import SafetensorsReader, TorchReader

    reader = SafetensorsReader() if path.name.endswith(".safetensors") else TorchReader()
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not reader.sniff(path, head):
        raise FormatError(f"{path} is not a {reader.format} file as its name says; the folder is corrupt")
    return reader.read(path, limits).tensors


def read_weights(folder: Path, limits: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every tensor of the folder under its Hugging Face name, and what was read (for the provenance)."""
    name = _weights_file(folder)
    if not name.endswith(".index.json"):
        return _read_one(folder / name, limits), {"weights": name}
    paths, weight_map = _shards(folder, name)
    tensors: dict[str, Any] = {}
    for path in paths:
        for tensor_name, tensor in _read_one(path, limits).items():
            if tensor_name in tensors:
                raise FormatError(f"{folder}: tensor {tensor_name[:80]!r} is in more than one shard; refusing it")
            if weight_map.get(tensor_name) != path.name:
                raise FormatError(f"{path}: holds {tensor_name[:80]!r}, which the index puts in "
                                  f"{str(weight_map.get(tensor_name))[:80]!r}; the folder is inconsistent")
            tensors[tensor_name] = tensor
    absent = [n for n in weight_map if n not in tensors]
    if absent:
        raise FormatError(f"{folder}: the index lists {len(absent)} tensor(s) no shard holds, e.g. "
                          f"{absent[0][:80]!r}; the download is incomplete")
    return tensors, {"weights": name, "shards": [p.name for p in paths]}


__all__ = ["MAX_INDEX_BYTES", "MAX_JSON_BYTES", "MAX_SHARDS", "WEIGHT_FILES", "folder_file", "read_bounded",
           "read_json", "read_weights"]
