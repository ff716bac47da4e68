"""One name for "a spec from wherever": a zoo name or a spec file, with overrides and an input shape.

This is what ``modelkeep params NAME_OR_SPEC_FILE --set key=value --input-shape ...``
calls. For a zoo model, ``overrides`` are config options (``num_classes=10``);
for a spec file they name a layer's field (``fc.units=10``).
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Sequence

from ..errors import ModelNotFoundError, SpecError
from ..spec.model import ModelSpec, load_spec
from ._base import ZOO


def resolve_spec(source: str | Path, *, overrides: dict[str, Any] | None = None,
                 input_shape: Sequence[int] | None = None) -> ModelSpec:
    """The ``ModelSpec`` named by ``source`` (a zoo model name or a JSON/YAML spec file)."""
    overrides = dict(overrides or {})
    path = Path(source)
    if path.is_file():
        data = load_spec(path).to_dict()
        _set_layer_fields(data, overrides)
    elif str(source) in ZOO:
        entry = ZOO.get(str(source))
        if input_shape is not None and "input_shape" in entry.options():
            overrides["input_shape"] = tuple(input_shape)
            input_shape = None
        data = entry.spec_dict(**overrides)
    elif path.suffix.lower() in (".json", ".yaml", ".yml") or "/" in str(source):
        return ModelSpec.from_file(path)  # raises, saying whether the file is missing or a folder
    else:
        close = difflib.get_close_matches(str(source).lower(), ZOO.names(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise SpecError(
            f"{str(source)!r} is neither a spec file nor a zoo model; {hint}"
            f"give a path to a .json/.yaml spec or one of: {', '.join(ZOO.names())}"
        )
    if input_shape is not None:
        _set_input_shape(data, input_shape)
    return ModelSpec.from_dict(data)


def _set_layer_fields(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    by_name = {layer["name"]: layer for layer in data["layers"]}
    for key, value in overrides.items():
        layer_name, dot, field = key.partition(".")
        if not dot or not field:
            raise SpecError(f"for a spec file, --set takes LAYER.FIELD=VALUE (e.g. fc.units=10), got {key!r}")
        if layer_name not in by_name:
            raise SpecError(f"--set {key}: the spec has no layer {layer_name!r}; layers are {list(by_name)}")
        if field in ("kind", "name"):
            raise SpecError(f"--set {key}: a layer's {field} cannot be changed")
        by_name[layer_name][field] = value


def _set_input_shape(data: dict[str, Any], shape: Sequence[int]) -> None:
    inputs = [layer for layer in data["layers"] if layer["kind"] == "Input"]
    if len(inputs) != 1:
        raise SpecError(f"--input-shape needs a spec with exactly one Input layer; this one has {len(inputs)}")
    inputs[0]["shape"] = [int(d) for d in shape]
