"""The manifest of a sharded checkpoint: DCP's ``Metadata`` as JSON, never a pickle, read with every size bounded.

``torch.distributed.checkpoint`` (DCP) describes a checkpoint with a ``Metadata`` object that its own
``FileSystemWriter`` pickles into ``.metadata``; loading that file runs whatever the pickle says. A sharded
modelkeep checkpoint carries the same facts in ``manifest.json`` instead (the layout is normative, see
``docs/format.md``)::

    {"format": "modelkeep.sharded-checkpoint", "format_version": 1, "step": 120, "created": "...",
     "world_size": 2, "byteorder": "little", "dcp_version": "1.0.0",
     "tensors": {"model.0.weight": {"dtype": "float32", "requires_grad": false, "size": [8, 4],
                 "chunks": [{"offsets": [0, 0], "sizes": [4, 4], "file": "__0_0.distcp",
                             "start": 0, "length": 64, "xxh3": "xxh3-128:..."}, ...]}},
     "files": {"__0_0.distcp": {"size": 64, "xxh3": "xxh3-128:..."}},
     "paths": {"model.0.weight": ["model", "0.weight"], "optim.param_groups.0.lr": ["optim", "param_groups", 0, "lr"]},
     "values": {"optim.param_groups.0.lr": 0.001, ...},
     "planner_data": {...}, "document": {...}}

Each chunk is the raw little-endian bytes of one contiguous tensor chunk (no header, no pickle). ``values`` holds
the state that is not a tensor (learning rates, betas, counters) and ``document`` the caller's own JSON (position,
metrics, the model's manifest pieces); both in ``state.encode_tree``'s JSON-safe form.

``decode_manifest`` checks everything before it allocates or opens a shard: the size of the manifest, counts of
tensors, chunks, dimensions and files, that every chunk lies inside its tensor and its file, that the chunks of
each file tile it exactly and that the files on disk have the sizes recorded. This module never writes a file.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.distributed.checkpoint.metadata import (BytesStorageMetadata, ChunkStorageMetadata, Metadata,
                                                   MetadataIndex, TensorProperties, TensorStorageMetadata)

from ..artifact.integrity import HASH_ALGORITHM
from ..errors import CheckpointError, FormatError, IntegrityError, UnsupportedVersionError

FORMAT = "modelkeep.sharded-checkpoint"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_SUFFIX = ".distcp"
HASH_PREFIX = f"{HASH_ALGORITHM}:"  # the model file's hash, named the same way

#: Limits of what a reader accepts; a larger manifest is refused before it is parsed.
MAX_MANIFEST_BYTES = 256 << 20
MAX_TENSORS = 1_000_000
MAX_CHUNKS = 4_000_000
MAX_FILES = 100_000
MAX_DIMS = 64
MAX_NAME = 4096

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
    # The wider unsigned integers (torch >= 2.3 has them as "shell" dtypes: storage, views and copies, few
    # kernels) travel as raw bytes like every other dtype; NumPy's random state is uint32.
    "uint16": torch.uint16, "uint32": torch.uint32, "uint64": torch.uint64,
    "bool": torch.bool, "complex64": torch.complex64, "complex128": torch.complex128,
    "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class ShardLocation:
    """Where DCP's write item lives: ``length`` bytes at ``offset`` of ``file``, hashed.

    The writer also stamps every item with its file's final size and hash, so the coordinator learns them from
    the write results it already gathers (no second pass over the files).
    """

    file: str
    offset: int
    length: int
    xxh3: str
    file_size: int = 0
    file_xxh3: str = ""


@dataclass(frozen=True)
class ShardedManifest:
    """A parsed, checked manifest: DCP ``Metadata`` (its ``storage_data`` maps ``MetadataIndex`` to
    ``ShardLocation``) plus what modelkeep adds around it."""

    folder: Path
    step: int
    created: str
    world_size: int
    metadata: Metadata
    files: Mapping[str, tuple[int, str]]
    paths: Mapping[str, tuple[Any, ...]]
    values: Mapping[str, Any]
    document: Mapping[str, Any]


# --------------------------------------------------------------------------- writing


def encode_manifest(*, step: int, world_size: int, metadata: Metadata, paths: Mapping[str, tuple[Any, ...]],
                    values: Mapping[str, Any], document: Any) -> bytes:
    """The manifest's bytes; ``values`` and ``document`` are already JSON-safe (``encode_tree``)."""
    tensors: dict[str, Any] = {}
    files: dict[str, dict[str, Any]] = {}
    storage: Mapping[MetadataIndex, ShardLocation] = metadata.storage_data or {}
    for fqn, entry in metadata.state_dict_metadata.items():
        if isinstance(entry, BytesStorageMetadata) or not isinstance(entry, TensorStorageMetadata):
            raise CheckpointError(
                f"{fqn!r} is not a tensor: a sharded checkpoint never pickles an object into its shards; put "
                "non-tensor state in the document (save_sharded(..., document={...})) or make it a tensor")
        if entry.properties.dtype not in DTYPE_NAMES:
            raise CheckpointError(f"{fqn!r} has dtype {entry.properties.dtype}, which a sharded checkpoint cannot "
                                  f"hold; supported: {sorted(DTYPES)}")
        chunks = []
        for chunk in entry.chunks:
            where = storage.get(MetadataIndex(fqn, chunk.offsets))
            if where is None:
                raise CheckpointError(f"DCP wrote no data for chunk {list(chunk.offsets)} of {fqn!r}")
            chunks.append({"offsets": list(chunk.offsets), "sizes": list(chunk.sizes), "file": where.file,
                           "start": where.offset, "length": where.length, "xxh3": where.xxh3})
            files[where.file] = {"size": where.file_size, "xxh3": where.file_xxh3}
        tensors[fqn] = {"dtype": DTYPE_NAMES[entry.properties.dtype],
                        "requires_grad": bool(entry.properties.requires_grad),
                        "size": list(entry.size), "chunks": chunks}
    planner = metadata.planner_data
    document_out = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "world_size": int(world_size), "byteorder": sys.byteorder, "dcp_version": metadata.version,
        "tensors": tensors, "files": files, "paths": {key: list(path) for key, path in paths.items()},
        "values": dict(values),
        "planner_data": {k: list(v) for k, v in planner.items()} if isinstance(planner, dict) else None,
        "document": document,
    }
    return json.dumps(document_out, allow_nan=False, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------- reading


def _refuse(where: Path, why: str) -> FormatError:
    return FormatError(f"{where} is not a valid sharded checkpoint manifest: {why}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError(f"duplicate key {next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))!r}")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes, where: Path) -> dict[str, Any]:
    """``data`` parsed as one JSON object; duplicate keys, NaN and over-deep nesting are refused."""
    try:
        parsed = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _refuse(where, f"not JSON ({str(exc)[:200]})") from None
    if not isinstance(parsed, dict):
        raise _refuse(where, "not a JSON object")
    return parsed


class _Checker:
    """Type and range checks of one manifest, each failure a ``FormatError`` naming the manifest."""

    def __init__(self, where: Path) -> None:
        self.where = where

    def dict(self, value: Any, what: str, limit: int = MAX_TENSORS) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _refuse(self.where, f"{what} must be an object")
        if len(value) > limit:
            raise _refuse(self.where, f"{what} has {len(value)} entries, over the limit of {limit}")
        return value

    def int(self, value: Any, what: str, low: int = 0, high: int = 1 << 62) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise _refuse(self.where, f"{what} must be an integer in [{low}, {high}], got {str(value)[:40]!r}")
        return value

    def ints(self, value: Any, what: str) -> list[int]:
        if not isinstance(value, list) or len(value) > MAX_DIMS:
            raise _refuse(self.where, f"{what} must be a list of at most {MAX_DIMS} integers")
        return [self.int(v, what) for v in value]

    def hash(self, value: Any, what: str) -> str:
        if not (isinstance(value, str) and value.startswith(HASH_PREFIX) and len(value) == len(HASH_PREFIX) + 32):
            raise _refuse(self.where, f"{what} must be an {HASH_PREFIX}<32 hex digits> hash")
        return value

    def file_name(self, value: Any) -> str:
        if not (isinstance(value, str) and value.endswith(SHARD_SUFFIX) and 0 < len(value) <= MAX_NAME
                and "/" not in value and "\\" not in value and not value.startswith(".")):
            raise _refuse(self.where, f"shard file name {str(value)[:80]!r} must be a plain '*{SHARD_SUFFIX}' name")
        return value


def decode_manifest(data: bytes, folder: Path, sizes_on_disk: Mapping[str, int]) -> ShardedManifest:
    """The checked manifest of the checkpoint in ``folder``; ``sizes_on_disk`` are the sizes of its shard files."""
    from .state import decode_tree

    where = folder / MANIFEST_NAME
    if len(data) > MAX_MANIFEST_BYTES:
        raise _refuse(where, f"{len(data)} bytes, over the limit of {MAX_MANIFEST_BYTES}")
    raw = parse_json(data, where)
    check = _Checker(where)
    if raw.get("format") != FORMAT:
        raise _refuse(where, f"its format is {str(raw.get('format'))[:60]!r}, not {FORMAT!r}")
    version = check.int(raw.get("format_version"), "format_version", 1)
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(f"{where} has format version {version}; this modelkeep reads up to "
                                      f"{FORMAT_VERSION}. Upgrade modelkeep to read it")
    if raw.get("byteorder") != sys.byteorder:
        raise _refuse(where, f"it was written on a {str(raw.get('byteorder'))[:20]}-endian machine; this one is "
                             f"{sys.byteorder}-endian")
    files = _decode_files(check, raw.get("files"), sizes_on_disk)
    state_dict_metadata, storage = _decode_tensors(check, raw.get("tensors"), files)
    paths = _decode_paths(check, raw.get("paths"))
    values = check.dict(raw.get("values", {}), "values")
    document = raw.get("document", {})
    planner = raw.get("planner_data")
    planner_data = ({k: tuple(v) for k, v in check.dict(planner, "planner_data").items() if isinstance(v, list)}
                    if planner is not None else None)
    metadata = Metadata(state_dict_metadata=state_dict_metadata, planner_data=planner_data, storage_data=storage,
                        version=raw.get("dcp_version") if isinstance(raw.get("dcp_version"), str) else None)
    created = raw.get("created")
    return ShardedManifest(
        folder=folder, step=check.int(raw.get("step"), "step"), created=created if isinstance(created, str) else "",
        world_size=check.int(raw.get("world_size"), "world_size", 1), metadata=metadata, files=files, paths=paths,
        values={key: decode_tree(value, {}) for key, value in values.items()},
        document=decode_tree(check.dict(document, "document"), {}))


def _decode_files(check: _Checker, raw: Any, sizes_on_disk: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    files = {}
    for name, entry in check.dict(raw, "files", MAX_FILES).items():
        check.file_name(name)
        entry = check.dict(entry, f"files[{name!r}]", 8)
        size = check.int(entry.get("size"), f"the size of {name}")
        if name not in sizes_on_disk:
            raise IntegrityError(f"{check.where.parent} lacks shard file {name}, which its manifest lists; the "
                                 "checkpoint is incomplete: resume from an earlier one")
        if sizes_on_disk[name] != size:
            raise IntegrityError(f"shard file {check.where.parent / name} has {sizes_on_disk[name]} bytes, its "
                                 f"manifest records {size}: the file was damaged or replaced")
        files[name] = (size, check.hash(entry.get("xxh3"), f"the hash of {name}"))
    return files


def _decode_tensors(check: _Checker, raw: Any, files: Mapping[str, tuple[int, str]]
                    ) -> tuple[dict[str, Any], dict[MetadataIndex, ShardLocation]]:
    metadata: dict[str, Any] = {}
    storage: dict[MetadataIndex, ShardLocation] = {}
    spans: dict[str, list[tuple[int, int]]] = {name: [] for name in files}
    total_chunks = 0
    for fqn, entry in check.dict(raw, "tensors").items():
        entry = check.dict(entry, f"tensor {fqn[:80]!r}", 16)
        dtype = DTYPES.get(entry.get("dtype"))  # type: ignore[arg-type]
        if dtype is None:
            raise _refuse(check.where, f"tensor {fqn[:80]!r} has unknown dtype {str(entry.get('dtype'))[:30]!r}")
        size = check.ints(entry.get("size"), f"the size of {fqn[:80]!r}")
        raw_chunks = entry.get("chunks")
        if not isinstance(raw_chunks, list):
            raise _refuse(check.where, f"the chunks of {fqn[:80]!r} must be a list")
        total_chunks += len(raw_chunks)
        if total_chunks > MAX_CHUNKS:
            raise _refuse(check.where, f"more than {MAX_CHUNKS} chunks")
        chunks, covered = [], 0
        for chunk in raw_chunks:
            chunk = check.dict(chunk, f"a chunk of {fqn[:80]!r}", 8)
            offsets = check.ints(chunk.get("offsets"), "chunk offsets")
            sizes = check.ints(chunk.get("sizes"), "chunk sizes")
            if len(offsets) != len(size) or len(sizes) != len(size) or any(
                    o + s > whole for o, s, whole in zip(offsets, sizes, size)):
                raise _refuse(check.where, f"a chunk of {fqn[:80]!r} at {offsets} of {sizes} lies outside its "
                                           f"tensor of size {size}")
            name = check.file_name(chunk.get("file"))
            if name not in files:
                raise _refuse(check.where, f"a chunk of {fqn[:80]!r} is in {name}, which the manifest does not list")
            start, length = check.int(chunk.get("start"), "chunk start"), check.int(chunk.get("length"), "length")
            volume = math.prod(sizes)
            if length != volume * dtype.itemsize or start + length > files[name][0]:
                raise _refuse(check.where, f"a chunk of {fqn[:80]!r} claims {length} bytes at {start} of {name} "
                                           f"({files[name][0]} bytes) for {volume} {entry['dtype']} elements")
            covered += volume
            spans[name].append((start, length))
            location = ShardLocation(name, start, length, check.hash(chunk.get("xxh3"), "a chunk hash"))
            storage[MetadataIndex(fqn, offsets)] = location
            chunks.append(ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(sizes)))
        if covered != math.prod(size):
            raise _refuse(check.where, f"the chunks of {fqn[:80]!r} hold {covered} elements, its size {size} "
                                       f"has {math.prod(size)}")
        properties = TensorProperties(dtype=dtype, requires_grad=entry.get("requires_grad") is True)
        metadata[fqn] = TensorStorageMetadata(properties=properties, size=torch.Size(size), chunks=chunks)
    for name, taken in spans.items():
        _check_tiling(check, name, sorted(taken), files[name][0])
    return metadata, storage


def _check_tiling(check: _Checker, name: str, spans: list[tuple[int, int]], size: int) -> None:
    """The chunks of one file must cover it exactly, without gaps or overlaps: no byte goes unaccounted for."""
    position = 0
    for start, length in spans:
        if start != position:
            raise _refuse(check.where, f"the chunks in {name} {'overlap' if start < position else 'leave a gap'} "
                                       f"at byte {min(start, position)}")
        position += length
    if position != size:
        raise _refuse(check.where, f"the chunks in {name} end at byte {position}, the file has {size}")


def _decode_paths(check: _Checker, raw: Any) -> dict[str, tuple[Any, ...]]:
    paths = {}
    for key, path in check.dict(raw, "paths", MAX_TENSORS + MAX_CHUNKS).items():
        if not (isinstance(path, list) and 0 < len(path) <= MAX_DIMS and all(
                isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool)) for p in path)):
            raise _refuse(check.where, f"the path of {key[:80]!r} must be a list of strings and integers")
        paths[key] = tuple(path)
    return paths
