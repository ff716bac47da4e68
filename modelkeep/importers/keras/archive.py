"""Keras 3 ``.keras`` archives: a zip of ``config.json``, ``metadata.json`` and ``model.weights.h5``.

Read with ``zipfile`` and ``h5py``, bounded: the member count, each member's
declared size and its compression ratio are checked before anything is
decompressed, and ``model.weights.h5`` is copied out in chunks that stop at
its declared size. In the weights file each layer is a group
``layers/<key>`` (keys count per class, ``dense``, ``dense_1``; the layer's
own name is the ``name`` attribute of its ``vars``) whose arrays are ``vars/0``, ``vars/1``, ... in Keras's
order; a recurrent layer keeps them under ``cell/vars``, ``Bidirectional``
under ``forward_layer`` then ``backward_layer``.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ...errors import FormatError, ModelkeepError
from .._zip import zip_member_count
from ..base import Imported, register_reader
from .h5 import WeightBudget, child, h5_errors, read_dataset

ZIP_MAGIC = b"PK\x03\x04"
MAX_MEMBERS = 10_000
MAX_JSON_BYTES = 64 * 1024 * 1024
_CHILD_ORDER = ("cell", "forward_layer", "backward_layer", "layer")


def _member(archive: zipfile.ZipFile, name: str, limits: Any) -> zipfile.ZipInfo:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise FormatError(f"the .keras archive has no {name}; it is not a Keras 3 model file") from None
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > limits.expansion_cap(info.compress_size):
        raise FormatError(f"{name} in the .keras archive would expand from {info.compress_size:,} to "
                          f"{info.file_size:,} bytes; over the limit (ReaderLimits.max_compression_ratio): refused")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise FormatError(f"{name} in the .keras archive declares two different sizes; the file is corrupt")
    return info


def _read_json(archive: zipfile.ZipFile, name: str, limits: Any) -> Any:
    from ...artifact.format import loads_bounded

    info = _member(archive, name, limits)
    if info.file_size > MAX_JSON_BYTES:
        raise FormatError(f"{name} in the .keras archive is {info.file_size:,} bytes; the limit is {MAX_JSON_BYTES:,}")
    with archive.open(info) as stream:
        data = stream.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise FormatError(f"{name} in the .keras archive holds more than it declares; the file is corrupt")
    return loads_bounded(data, f"{name} of the .keras archive")


def _copy_out(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limits: Any) -> None:
    """Copy a member to ``target`` in chunks, never past its declared size (nor the expansion cap)."""
    cap = info.file_size
    if info.compress_type != zipfile.ZIP_STORED:
        cap = min(cap, limits.expansion_cap(info.compress_size))
    written = 0
    with archive.open(info) as source, open(target, "wb") as out:
        while True:
            chunk = source.read(1 << 20)
            if not chunk:
                break
            written += len(chunk)
            if written > cap:
                raise FormatError(f"{info.filename} in the .keras archive expands past {cap:,} bytes; refused")
            out.write(chunk)


def _vars(group: Any, budget: WeightBudget, where: str) -> list[Any]:
    import h5py

    if "vars" not in group:
        return []
    variables = child(group, "vars", f"the weights of {where}")
    if not isinstance(variables, h5py.Group):
        return []
    keys = list(variables.keys())
    if len(keys) > 10_000 or sorted(keys, key=lambda k: (len(k), k)) != [str(i) for i in range(len(keys))]:
        raise FormatError(f"the weights of {where} are not numbered 0..n-1; the file is corrupt")
    return [read_dataset(child(variables, str(i), f"weight {i} of {where}"), budget, f"weight {i} of {where}")
            for i in range(len(keys))]


def _layer_arrays(group: Any, budget: WeightBudget, where: str, depth: int = 0) -> list[Any]:
    """A layer's arrays in ``layer.get_weights()`` order: its own ``vars``, then its sub-layers'."""
    import h5py

    if depth > 6:
        raise FormatError(f"the weights of {where} are nested too deeply; the file is corrupt")
    out = _vars(group, budget, where)
    children = [k for k in group.keys() if k != "vars" and isinstance(child(group, k, where), h5py.Group)]
    children.sort(key=lambda k: (_CHILD_ORDER.index(k) if k in _CHILD_ORDER else len(_CHILD_ORDER), k))
    for key in children:
        out.extend(_layer_arrays(child(group, key, where), budget, f"{where}/{key}", depth + 1))
    return out


def archive_weights(path: Path, limits: Any) -> dict[str, list[Any]]:
    """Layer name -> arrays, from a Keras 3 ``model.weights.h5``."""
    import h5py

    budget = WeightBudget(limits)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"model.weights.h5 of the .keras archive is not HDF5 ({str(exc)[:120]})") from None
    with f, h5_errors("model.weights.h5 of the .keras archive"):
        if "layers" not in f:
            return {}
        layers = child(f, "layers", "the layers of model.weights.h5")
        if len(layers) > 100_000:
            raise FormatError("model.weights.h5 lists more than 100,000 layers; refusing it")
        out: dict[str, list[Any]] = {}
        _collect(layers, budget, out, 0)
        return out


def _collect(layers: Any, budget: WeightBudget, out: dict[str, list[Any]], depth: int) -> None:
    """Each layer's arrays under its own name; a nested model's ``layers`` group holds its layers."""
    import h5py

    if depth > 8:
        raise FormatError("model.weights.h5 nests models more than 8 deep; refusing it")
    for key in layers.keys():
        group = child(layers, key, f"layer {key!r} of model.weights.h5")
        name = _layer_name(group, key)
        if isinstance(group, h5py.Group) and "layers" in group:
            _collect(child(group, "layers", f"layer {key!r}"), budget, out, depth + 1)
            continue
        if name in out:
            raise FormatError(f"model.weights.h5 holds two layers named {name!r}; the file is corrupt")
        out[name] = _layer_arrays(group, budget, f"layer {name!r}")


def _layer_name(group: Any, key: str) -> str:
    """The layer's own name: the ``name`` attribute of its ``vars`` group (keys are per-class counters)."""
    import h5py

    variables = child(group, "vars", f"layer {key!r}") if isinstance(group, h5py.Group) and "vars" in group else None
    if not isinstance(variables, h5py.Group) or "name" not in variables.attrs:
        return key
    name = variables.attrs["name"]
    name = name.decode("utf-8", errors="replace") if isinstance(name, bytes) else name
    if not isinstance(name, str) or len(name) > 1000:
        raise FormatError(f"layer {key!r} of model.weights.h5 has an invalid name; the file is corrupt")
    return name


@contextmanager
def _zip_errors(name: str) -> Iterator[None]:
    """zipfile's own errors (a bad CRC, an encrypted or oddly compressed member) as ``FormatError``."""
    try:
        yield
    except ModelkeepError:
        raise
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, OSError, zlib.error) as exc:
        raise FormatError(f"{name} is a damaged .keras archive ({type(exc).__name__}: {str(exc)[:120]})") from None


def _open(path: Path) -> zipfile.ZipFile:
    try:
        with open(path, "rb") as handle:   # the declared count first: zipfile builds an object per member
            declared = zip_member_count(handle, os.fstat(handle.fileno()).st_size)
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, FormatError) as exc:
        raise FormatError(f"{path.name} is not a readable zip (.keras) archive ({str(exc)[:100]})") from None
    if max(declared, len(archive.infolist())) > MAX_MEMBERS:
        archive.close()
        raise FormatError(f"{path.name} holds more than {MAX_MEMBERS:,} members; refusing it")
    return archive


def read_keras_archive(path: Path, limits: Any) -> Imported:
    from .convert import keras_to_imported, loss_name

    with _open(path) as archive, _zip_errors(path.name):
        config = _read_json(archive, "config.json", limits)
        names = set(archive.namelist())
        metadata = _read_json(archive, "metadata.json", limits) if "metadata.json" in names else {}
        info = _member(archive, "model.weights.h5", limits)
        with tempfile.TemporaryDirectory(prefix="modelkeep-keras-") as folder:
            target = Path(folder) / "model.weights.h5"
            _copy_out(archive, info, target, limits)
            weights = archive_weights(target, limits)
    metadata = metadata if isinstance(metadata, dict) else {}
    details = {"keras_version": str(metadata.get("keras_version", ""))[:40]}
    compiled = config.get("compile_config") if isinstance(config, dict) else None
    if isinstance(compiled, dict) and loss_name(compiled.get("loss")):
        details["loss"] = loss_name(compiled.get("loss"))   # what the model was trained for: its task
    return keras_to_imported(config, weights, format="keras", details=details)


class KerasArchiveReader:
    format = "keras"
    description = "Keras 3 model archive (.keras: config.json + model.weights.h5)"

    def sniff(self, path: Path, head: bytes) -> bool:
        if not path.is_file() or not head.startswith(ZIP_MAGIC):
            return False
        try:
            with _open(path) as archive:
                names = set(archive.namelist())
        except FormatError:
            return False
        return "config.json" in names and "model.weights.h5" in names

    def read(self, path: Path, limits: Any) -> Imported:
        from ...data.limits import resolve_limits

        return read_keras_archive(Path(path), resolve_limits(limits))


register_reader(KerasArchiveReader())
