"""The human-readable JSON form of a model file: layers with their weights and biases as nested lists.

For small models and for teaching: ``export_json`` writes it, ``import_json``
turns it back into a model file whose tensors and manifest are identical to the
original's (floats are written with enough digits to round-trip exactly; NaN
and infinities as the strings "NaN", "Infinity", "-Infinity"). Models above
``MAX_JSON_VALUES`` values are refused unless ``force=True``.

The layout (docs/format.md, "JSON form")::

    {"modelkeep_json": 1, "format_version": 1,
     "manifest": {...},                         # the decoded manifest, or null
     "metadata": {"format": "pt", ...},         # other string metadata
     "layers": [{"name": "layers.hidden.0",
                 "tensors": {"weight": {"dtype": "F32", "shape": [64, 256], "values": [[...], ...]},
                             "bias":   {"dtype": "F32", "shape": [64], "values": [...]}}}, ...]}

Importing treats the JSON as untrusted: every shape is checked against the
values actually present, nesting is bounded, and nothing in it is executed.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_bytes
from ..errors import FormatError
from .format import (
    DTYPE_SIZES, KEY_INTEGRITY, KEY_MANIFEST, KEY_VERSION, MAX_DIMS, MAX_JSON_ELEMENTS, loads_bounded, read_header,
)
from .manifest import validate_manifest

JSON_FORM_VERSION = 1
MAX_JSON_VALUES = 1_000_000  # above this, the JSON form is refused unless forced
MAX_JSON_FILE_BYTES = 256 * 1024 * 1024
#: JSON elements (``{``, ``[`` and ``,`` characters, counted before parsing) a JSON form may hold unless forced:
#: room for ``MAX_JSON_VALUES`` values even as one-value rows (three elements each) plus a manifest.
MAX_JSON_FORM_ELEMENTS = 3 * MAX_JSON_VALUES + MAX_JSON_ELEMENTS
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _human_size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n}"


def _split(name: str) -> tuple[str, str]:
    layer, sep, tensor = name.rpartition(".")
    return (layer, tensor) if sep else ("", name)


def _layer_order(manifest: dict[str, Any] | None) -> dict[str, int]:
    try:
        layers = manifest["architecture"]["spec"]["layers"]  # type: ignore[index]
        return {str(layer["name"]): i for i, layer in enumerate(layers)}
    except (KeyError, TypeError):
        return {}


def _encode_values(tensor: Any) -> Any:
    import torch

    if tensor.dtype == torch.bool:
        return tensor.tolist()
    if tensor.dtype.is_floating_point:
        wide = tensor.to(torch.float64)
        values = wide.tolist()
        if not bool(torch.isfinite(wide).all()):
            values = _replace_nonfinite(values, tensor.dim())
        return values
    return tensor.tolist()


def _replace_nonfinite(values: Any, depth: int) -> Any:
    if depth == 0:
        if math.isnan(values):
            return "NaN"
        if math.isinf(values):
            return "Infinity" if values > 0 else "-Infinity"
        return values
    return [_replace_nonfinite(v, depth - 1) for v in values]


def export_json(
    source: str | os.PathLike[str], destination: str | os.PathLike[str], *, force: bool = False, verify: bool = True
) -> Path:
    """Write the JSON form of the model file ``source`` to ``destination``."""
    from .tensors import TensorFile

    header = read_header(source)
    values = sum(math.prod(e.shape) for e in header.tensors.values())
    if values > MAX_JSON_VALUES and not force:
        tensor_bytes = header.file_size - header.data_start
        raise FormatError(
            f"{header.path} holds {values:,} values ({_human_size(tensor_bytes)} of tensors, roughly "
            f"{_human_size(values * 20)} as JSON); the JSON form is meant for small models (up to "
            f"{MAX_JSON_VALUES:,} values). Pass --force (force=True) to convert it anyway"
        )
    manifest = None
    if KEY_MANIFEST in header.metadata:
        from .manifest import read_manifest

        read_manifest(source, verify=verify)  # the version, the hashes and every field are checked first
        manifest = loads_bounded(header.metadata[KEY_MANIFEST], f"{header.path}: metadata {KEY_MANIFEST!r}")
    order = _layer_order(manifest)
    layers: dict[str, dict[str, Any]] = {}

    def sort_key(name: str) -> tuple[int, str]:
        layer = _split(name)[0]
        parts = layer.split(".")
        rank = order.get(parts[1], len(order)) if len(parts) > 1 and parts[0] == "layers" else len(order)
        return rank, name

    with TensorFile(source, verify=verify) as handle:
        for name in sorted(handle.names(), key=sort_key):
            entry = handle.header.tensors[name]
            layer, tensor_name = _split(name)
            record = layers.setdefault(layer, {"name": layer, "tensors": {}})
            record["tensors"][tensor_name] = {
                "dtype": entry.dtype, "shape": list(entry.shape), "values": _encode_values(handle.tensor(name)),
            }
    document = {
        "modelkeep_json": JSON_FORM_VERSION,
        "format_version": int(header.metadata[KEY_VERSION]) if header.metadata.get(KEY_VERSION, "").isdigit() else None,
        "manifest": manifest,
        "metadata": {k: v for k, v in header.metadata.items() if k not in (KEY_MANIFEST, KEY_INTEGRITY)},
        "layers": list(layers.values()),
    }
    destination = Path(destination)
    atomic_write_bytes(destination, json.dumps(document, indent=1, allow_nan=False).encode("utf-8") + b"\n",
                       durable=False)
    return destination


def _flatten(values: Any, shape: list[int], where: str) -> list[Any]:
    """The values of a nested list whose nesting must be exactly ``shape``; iterative, bounded by the input."""
    if not shape:
        return [values]
    flat: list[Any] = []
    stack: list[tuple[Any, int]] = [(values, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, list) or len(node) != shape[depth]:
            got = f"a list of {len(node)}" if isinstance(node, list) else type(node).__name__
            raise FormatError(f"{where}: values do not match shape {shape} (at depth {depth}: expected a list of "
                              f"{shape[depth]}, got {got})")
        if depth == len(shape) - 1:
            flat.extend(node)
        else:
            stack.extend((child, depth + 1) for child in reversed(node))
    return flat


def _decode_tensor(record: Any, where: str) -> Any:
    import torch

    from .tensors import SAFETENSORS_TO_TORCH

    if not isinstance(record, dict) or set(record) != {"dtype", "shape", "values"}:
        raise FormatError(f"{where}: each tensor needs exactly 'dtype', 'shape' and 'values'")
    dtype, shape = record["dtype"], record["shape"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise FormatError(f"{where}: unknown dtype {str(dtype)[:20]!r}; known: {', '.join(DTYPE_SIZES)}")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise FormatError(f"{where}: shape must be a list of at most {MAX_DIMS} non-negative integers")
    flat = _flatten(record["values"], shape, where)  # proportional to values present, never to the shape
    target = SAFETENSORS_TO_TORCH[dtype]
    try:
        if dtype == "BOOL":
            if not all(type(v) is bool for v in flat):
                raise FormatError(f"{where}: BOOL values must be true or false")
            tensor = torch.tensor(flat, dtype=torch.bool)
        elif target.is_floating_point:
            numbers = [_NONFINITE[v] if isinstance(v, str) and v in _NONFINITE else v for v in flat]
            if not all(type(v) in (int, float) for v in numbers):
                raise FormatError(f"{where}: {dtype} values must be numbers (or 'NaN', 'Infinity', '-Infinity')")
            tensor = torch.tensor(numbers, dtype=torch.float64).to(target)
        else:
            if not all(type(v) is int for v in flat):
                raise FormatError(f"{where}: {dtype} values must be integers")
            tensor = torch.tensor(flat, dtype=target)
    except (RuntimeError, OverflowError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{where}: values cannot be stored as {dtype}: {str(exc)[:200]}") from None
    return tensor.reshape(shape)


def import_json(
    source: str | os.PathLike[str], destination: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Turn the JSON form at ``source`` back into a model file at ``destination`` (written atomically)."""
    from .tensors import write_tensors

    source = Path(source)
    try:
        size = source.stat().st_size
    except FileNotFoundError:
        from ..errors import ModelNotFoundError

        raise ModelNotFoundError(f"no such file: {str(source)!r}") from None
    if size > MAX_JSON_FILE_BYTES and not force:
        raise FormatError(
            f"{source} is {_human_size(size)}; JSON forms above {_human_size(MAX_JSON_FILE_BYTES)} are refused "
            "unless you pass --force (force=True)"
        )
    try:
        text = source.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{source} is not UTF-8 text, so it is not a JSON model") from None
    document = loads_bounded(text, str(source), max_elements=None if force else MAX_JSON_FORM_ELEMENTS)
    if not isinstance(document, dict) or document.get("modelkeep_json") != JSON_FORM_VERSION:
        raise FormatError(
            f"{source} is not a modelkeep JSON model (expected an object with \"modelkeep_json\": {JSON_FORM_VERSION})"
        )
    layers = document.get("layers")
    metadata = document.get("metadata") or {}
    if not isinstance(layers, list) or not isinstance(metadata, dict):
        raise FormatError(f"{source}: 'layers' must be a list and 'metadata' an object")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise FormatError(f"{source}: 'metadata' must map strings to strings")
    metadata = {k: v for k, v in metadata.items() if k != KEY_INTEGRITY}
    manifest = document.get("manifest")
    if manifest is not None:
        validated = validate_manifest(manifest, source)
        metadata.setdefault(KEY_VERSION, str(validated.format_version))
        metadata[KEY_MANIFEST] = json.dumps(manifest, separators=(",", ":"), allow_nan=False)

    declared = 0
    tensors: dict[str, Any] = {}
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str) or not isinstance(layer.get("tensors"), dict):
            raise FormatError(f"{source}: layers[{i}] needs a string 'name' and a 'tensors' object")
        for tensor_name, record in layer["tensors"].items():
            name = f"{layer['name']}.{tensor_name}" if layer["name"] else tensor_name
            where = f"{source}: tensor {name[:80]!r}"
            if name in tensors:
                raise FormatError(f"{where} appears twice")
            if not tensor_name or name == "__metadata__":
                raise FormatError(f"{where}: this tensor name is not allowed")
            if isinstance(record, dict) and isinstance(record.get("shape"), list) and all(
                    type(d) is int and d >= 0 for d in record["shape"]):
                declared += math.prod(record["shape"][:MAX_DIMS])
                if declared > MAX_JSON_VALUES and not force:
                    raise FormatError(
                        f"{source} declares more than {MAX_JSON_VALUES:,} values; pass --force (force=True) to "
                        "convert a model that large"
                    )
            tensors[name] = _decode_tensor(record, where)
    try:
        return write_tensors(destination, tensors, metadata)
    except (ValueError, TypeError) as exc:
        raise FormatError(f"{source}: cannot write this model: {exc}") from None
