"""The pieces every Keras layer conversion shares: ``KTensor``, ``SpecBuilder`` and the ``CONVERTERS`` registry.

Keras keeps images channels-last, ``(H, W, C)``; modelkeep's convolutions are
channels-first, ``(C, H, W)``. The imported model takes the same input as the
Keras model, so where a layer needs channels first a ``Permute`` moves the last
axis to the front, and where a layer needs Keras's own order again (``Flatten``,
``Dense``, recurrent layers, the model's outputs) a ``Permute`` moves it back:
a ``Flatten`` after convolutions then orders its elements as Keras does, and
the ``Dense`` weights after it load unchanged. Each Keras tensor is tracked as
``KTensor``: the spec layer holding it and whether its last axis was moved first.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ...errors import FormatError, SpecError
from .config import KerasNode


@dataclass(frozen=True)
class KTensor:
    """A Keras tensor inside the spec: made by spec layer ``layer``; ``moved``: its last axis is first in the spec."""

    layer: str
    moved: bool = False


@dataclass
class SpecBuilder:
    """Collects spec layers and tensors while the Keras layers are converted one by one."""

    keras_version: str = ""
    layers: list[dict[str, Any]] = field(default_factory=list)
    tensors: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    permuted: dict[tuple[str, bool], KTensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def unique(self, name: str) -> str:
        """``name`` as a spec layer name: a Python identifier not used yet."""
        base = re.sub(r"\W", "_", name) or "layer"
        if not base.isidentifier():
            base = f"layer_{base}"
        candidate, n = base, 1
        while candidate in self.names:
            n += 1
            candidate = f"{base}_{n}"
        self.names.add(candidate)
        return candidate

    def add(self, kind: str, name: str, inputs: list[KTensor], *, moved: bool = False,
            params: Mapping[str, Any] | None = None, **fields: Any) -> KTensor:
        """Append a spec layer (shape checked now), store its ``params`` (torch names), return its output."""
        from ...spec.fields import make_fields
        from ...spec.kinds import LAYER_KINDS

        name = self.unique(name)
        fields = {k: v for k, v in fields.items() if v is not None}
        cls = LAYER_KINDS.get(kind)
        try:
            layer_kind = cls(make_fields(cls.Fields, fields), name)
            shape = layer_kind.output_shape([self.shapes[t.layer] for t in inputs])
        except SpecError as exc:
            raise FormatError(f"Keras layer {name!r} cannot be imported: {exc}") from None
        self.shapes[name] = tuple(int(d) for d in shape)
        entry: dict[str, Any] = {"kind": kind, "name": name, **fields}
        if inputs:
            entry["inputs"] = [t.layer for t in inputs]
        self.layers.append(entry)
        wrapped = fields.get("activation") not in (None, "linear")  # with_activation: Sequential(layer, act)
        for param, value in (params or {}).items():
            self.tensors[f"layers.{name}.{'0.' if wrapped else ''}{param}"] = value
        return KTensor(name, moved)

    def keras_shape(self, t: KTensor) -> tuple[int, ...]:
        """The per-sample shape as Keras sees it."""
        shape = self.shapes[t.layer]
        return (*shape[1:], shape[0]) if t.moved else shape

    def layout(self, t: KTensor, moved: bool) -> KTensor:
        """``t`` with its last axis first (``moved=True``) or in Keras's order; one ``Permute`` at most, reused."""
        rank = len(self.shapes[t.layer])
        if t.moved == moved or rank < 2:
            return KTensor(t.layer, moved if rank >= 2 else False)
        key = (t.layer, moved)
        if key not in self.permuted:
            dims = [rank - 1, *range(rank - 1)] if moved else [*range(1, rank), 0]
            suffix = "channels_first" if moved else "channels_last"
            self.permuted[key] = self.add("Permute", f"{t.layer}_to_{suffix}", [t], moved=moved, dims=dims)
        return self.permuted[key]

    def set_input_dtype(self, t: KTensor, dtype: str) -> None:
        """Make the Input layer ``t`` comes from take ``dtype`` (token ids for an Embedding)."""
        for entry in self.layers:
            if entry["name"] == t.layer and entry["kind"] == "Input":
                entry["dtype"] = dtype


Converter = Callable[[SpecBuilder, KerasNode, list[KTensor], list[Any]], KTensor | None]
CONVERTERS: dict[str, Converter] = {}


def converter(*class_names: str) -> Callable[[Converter], Converter]:
    """Register a function turning the Keras layers ``class_names`` into spec layers."""
    def register(fn: Converter) -> Converter:
        for class_name in class_names:
            CONVERTERS[class_name] = fn
        return fn
    return register
