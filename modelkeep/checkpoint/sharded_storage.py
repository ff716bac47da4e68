"""DCP storage plug-ins of sharded checkpoints: raw tensor bytes in the shards, a JSON manifest, never a pickle.

``torch.distributed.checkpoint``'s own ``FileSystemWriter`` serialises every tensor chunk with ``torch.save`` (a
zip holding a pickle) and the metadata with ``pickle.dump``. ``RawShardWriter`` writes each chunk as its raw bytes
(one file per rank, ``__<rank>_0.distcp``, the chunks back to back) and ``finish`` writes ``manifest.json``
(``sharded_manifest``) instead of ``.metadata``; ``RawShardReader`` takes a manifest already parsed and checked,
and checks the hash of every chunk it reads before copying it into the destination. DCP's planners do the rest,
resharding included: a chunk saved by two ranks is narrowed to what each of three ranks needs.

Call order (DCP's): writer ``reset`` → ``set_up_storage_writer`` → ``prepare_local_plan`` →
(coordinator) ``prepare_global_plan`` → ``write_data`` → (coordinator) ``finish``; reader ``reset`` →
``read_metadata`` → ``set_up_storage_reader`` → ``prepare_local_plan`` → (coordinator) ``prepare_global_plan``
→ ``read_data``.

Every file is written through ``modelkeep.io`` (``RenameCommitter``: temporary name, fsync, rename); this module
never opens a destination for writing itself and never calls ``pickle`` or ``torch.load``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import xxhash
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex
from torch.distributed.checkpoint.planner import (LoadItemType, LoadPlan, LoadPlanner, SavePlan, SavePlanner,
                                                  WriteItemType)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from ..artifact.integrity import hash_bytes
from ..errors import CheckpointError, IntegrityError
from ..io.atomic import fsync_directory, start_writeback
from ..io.committer import RenameCommitter
from .sharded_manifest import HASH_PREFIX, MANIFEST_NAME, SHARD_SUFFIX, ShardedManifest, ShardLocation

#: The version of DCP's metadata layout this writer records (the one ``FileSystemWriter`` 2.x writes).
DCP_METADATA_VERSION = "1.0.0"
#: Durable writes ask the kernel to start writing every this many bytes (``atomic.start_writeback``).
WRITEBACK_STEP = 8 << 20
#: Bytes read from a shard at a time when hashing a whole file.
READ_CHUNK = 8 << 20


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of ``tensor`` (on the CPU, contiguous), without a copy where it already is."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def tensor_bytes_writable(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU ``tensor`` as a writable view (reading into it fills the tensor)."""
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy()).cast("B")


def _fills_whole(target: torch.Tensor, item: Any, sizes: Any, dtype: torch.dtype, length: int) -> bool:
    """Whether ``item`` copies a whole stored chunk into all of ``target``, byte for byte."""
    return (length > 0 and target.device.type == "cpu" and target.dtype == dtype and target.is_contiguous()
            and tuple(target.size()) == tuple(sizes) and tuple(item.lengths) == tuple(sizes)
            and not any(item.storage_offsets) and target.numel() * dtype.itemsize == length)


def digest(data: Any) -> str:
    return HASH_PREFIX + hash_bytes(data)


class RawShardWriter(StorageWriter):
    """Writes a sharded checkpoint into ``folder`` (the save's temporary folder): raw chunks, then the manifest.

    ``make_manifest(metadata)`` returns the manifest's bytes; it is called by the coordinator in ``finish``,
    after every rank's shard file is written and fsynced, so the manifest is the last file written.
    """

    def __init__(self, folder: str | os.PathLike[str], make_manifest: Callable[[Metadata], bytes], *,
                 durable: bool = True) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.make_manifest = make_manifest
        self.durable = durable
        self.rank = 0
        self.is_coordinator = True

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        if checkpoint_id:
            self.folder = Path(checkpoint_id)

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.is_coordinator = is_coordinator
        self.rank = int(kwargs.get("rank") or 0)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        for item in plan.items:
            if item.type == WriteItemType.BYTE_IO:
                raise CheckpointError(
                    f"{item.index.fqn!r} is not a tensor: a sharded checkpoint never pickles an object into its "
                    "shards; put it in the document (save_sharded(..., document={...})) or make it a tensor")
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        return [dataclasses.replace(plan, storage_data=f"__{rank}_") for rank, plan in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        results: list[WriteResult] = []
        future: Future[list[WriteResult]] = Future()
        if not plan.items:
            future.set_result(results)
            return future
        name = f"{plan.storage_data or f'__{self.rank}_'}0{SHARD_SUFFIX}"
        whole = xxhash.xxh3_128()
        placed: list[tuple[Any, int, int, str]] = []
        offset = 0
        flushed = 0
        with self._writing(name) as handle:
            for item in plan.items:
                data = tensor_bytes(planner.resolve_data(item))
                handle.write(data)
                offset += data.nbytes
                if self.durable and offset - flushed >= WRITEBACK_STEP:
                    # The disk starts on what is written while the rest is hashed and written; the fsync
                    # at the end then waits only for the tail (as write_tensors does).
                    handle.flush()
                    start_writeback(handle.fileno(), flushed, offset - flushed)
                    flushed = offset
                whole.update(data)
                placed.append((item.index, offset - data.nbytes, data.nbytes, digest(data)))
            self._sync(handle)
        file_hash = HASH_PREFIX + whole.hexdigest()
        for index, start, length, item_hash in placed:
            location = ShardLocation(name, start, length, item_hash, file_size=offset, file_xxh3=file_hash)
            results.append(WriteResult(index=index, size_in_bytes=length, storage_data=location))
        future.set_result(results)
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        metadata.storage_data = {result.index: result.storage_data for rank in results for result in rank}
        metadata.version = metadata.version or DCP_METADATA_VERSION
        data = self.make_manifest(metadata)
        with self._writing(MANIFEST_NAME) as handle:
            handle.write(data)
            self._sync(handle)
        if self.durable:
            fsync_directory(self.folder)  # every file's entry in the folder, once, before the folder is renamed

    def _writing(self, name: str) -> Any:
        """A file of the temporary folder, renamed into place when complete; its fsync is ``_sync``'s, and the
        folder is fsynced once for all of them (the folder itself becomes visible only by its rename)."""
        return RenameCommitter(self.folder, durable=False).writing(name)

    def _sync(self, handle: Any) -> None:
        if self.durable:
            handle.flush()
            os.fsync(handle.fileno())

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return False  # chosen explicitly, never by DCP's automatic storage selection


class RawShardReader(StorageReader):
    """Reads the checkpoint a checked ``ShardedManifest`` describes; every chunk's hash is checked as it is read."""

    def __init__(self, manifest: ShardedManifest) -> None:
        super().__init__()
        self.manifest = manifest
        self.locations: Mapping[MetadataIndex, ShardLocation] = manifest.metadata.storage_data

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        pass  # the manifest, read and checked before DCP starts, fixes the folder

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        return self.manifest.metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        pass

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        per_file: dict[str, list[Any]] = {}
        for item in plan.items:
            if item.type == LoadItemType.BYTE_IO:
                raise CheckpointError(f"{item.storage_index.fqn!r} asks for a pickled object; a sharded checkpoint "
                                      "holds none (non-tensor state is in its manifest)")
            per_file.setdefault(self.locations[item.storage_index].file, []).append(item)
        for name, items in per_file.items():
            with open(self.manifest.folder / name, "rb") as handle:
                for item in sorted(items, key=lambda i: self.locations[i.storage_index].offset):
                    self._read_item(handle, item, planner)
        future: Future[None] = Future()
        future.set_result(None)
        return future

    def _read_item(self, handle: Any, item: Any, planner: LoadPlanner) -> None:
        location = self.locations[item.storage_index]
        entry = self.manifest.metadata.state_dict_metadata[item.storage_index.fqn]
        sizes = next(chunk.sizes for chunk in entry.chunks  # type: ignore[union-attr]
                     if chunk.offsets == item.storage_index.offset)
        dtype = entry.properties.dtype  # type: ignore[union-attr]
        target = planner.resolve_tensor(item).detach()
        handle.seek(location.offset)
        if _fills_whole(target, item, sizes, dtype, location.length):
            # The usual case (the same layout, or a whole tensor): read straight into the destination.
            self._read_checked(handle, location, item, tensor_bytes_writable(target))
        else:
            buffer = bytearray(location.length)
            self._read_checked(handle, location, item, memoryview(buffer))
            stored = (torch.frombuffer(buffer, dtype=dtype) if location.length else torch.empty(0, dtype=dtype))
            tensor = narrow_tensor_by_index(stored.reshape(sizes), item.storage_offsets, item.lengths)
            if target.size() != tensor.size():
                raise CheckpointError(f"{item.dest_index.fqn!r}: the checkpoint gives a {list(tensor.size())} "
                                      f"piece where {list(target.size())} was expected")
            target.copy_(tensor)
        planner.commit_tensor(item, target)

    def _read_checked(self, handle: Any, location: ShardLocation, item: Any, into: memoryview) -> None:
        if handle.readinto(into) != location.length:
            raise IntegrityError(f"{self.manifest.folder / location.file} ended before byte "
                                 f"{location.offset + location.length}: the shard is truncated")
        if digest(into) != location.xxh3:
            raise IntegrityError(
                f"chunk {list(item.storage_index.offset)} of {item.storage_index.fqn!r} in "
                f"{self.manifest.folder / location.file} does not match its hash: the shard is damaged; resume "
                "from an earlier checkpoint")

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return False


def hash_file(path: Path) -> str:
    """The xxh3-128 hash of a whole shard file, read in chunks."""
    whole = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            whole.update(chunk)
    return HASH_PREFIX + whole.hexdigest()
