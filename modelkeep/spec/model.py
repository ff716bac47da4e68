"""The model spec: a network as validated data.

A spec is a list of layers. Each layer names its ``kind`` and that kind's
fields; it may give itself a ``name`` and list the ``inputs`` it reads. A layer
without ``inputs`` reads the layer before it, so a plain list is a sequential
network and explicit ``inputs`` make a graph (residual adds, branches).

``ModelSpec.from_dict`` validates everything a spec can get wrong without
building it: unknown kinds and fields, duplicate names, missing inputs, cycles,
and shapes (every layer's output shape is inferred). Nothing here imports torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from ..errors import ModelNotFoundError, SpecError
from . import layers as _built_in_kinds  # noqa: F401  (registers every built-in kind before a spec is read)
from .fields import make_fields
from .kinds import LAYER_KINDS, LayerKind, Shape

SPEC_VERSION = 1
_RESERVED = {"kind", "name", "inputs", "trainable", "shares"}


@dataclass(frozen=True)
class Layer:
    """One validated layer of a spec."""

    name: str
    kind: LayerKind
    inputs: tuple[str, ...]
    trainable: bool = True
    shares: str | None = None  # another layer whose weights this one uses (counted once, there)

    @property
    def kind_name(self) -> str:
        return self.kind.name

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.name, "name": self.name}
        out.update(self.kind.fields.model_dump(mode="json", exclude_defaults=True))
        if self.inputs:
            out["inputs"] = list(self.inputs)
        if not self.trainable:
            out["trainable"] = False
        if self.shares:
            out["shares"] = self.shares
        return out


@dataclass(frozen=True)
class ModelSpec:
    """A validated network: layers in execution order, with their inferred shapes."""

    layers: tuple[Layer, ...]
    outputs: tuple[str, ...]
    name: str = "model"
    head: str | None = None  # the layer ``reset_head`` replaces; None: inferred (see ``head_layer``)
    shapes: dict[str, Shape] = field(default_factory=dict, compare=False, repr=False)

    # ----------------------------------------------------------------- reading
    @classmethod
    def from_dict(cls, data: Any) -> "ModelSpec":
        if not isinstance(data, dict):
            raise SpecError(f"a spec must be a JSON/YAML object with a 'layers' list, got {type(data).__name__}")
        unknown = set(data) - {"name", "layers", "outputs", "head", "format_version"}
        if unknown:
            raise SpecError(
                f"unknown top-level spec field(s) {sorted(unknown)}; expected name, layers, outputs, head"
            )
        version = data.get("format_version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise SpecError(f"spec format_version {version!r} is not supported; this modelkeep reads version {SPEC_VERSION}")
        raw_layers = data.get("layers")
        if not isinstance(raw_layers, list) or not raw_layers:
            raise SpecError("a spec needs a non-empty 'layers' list")
        layers = _parse_layers(raw_layers)
        names = [layer.name for layer in layers]
        outputs = data.get("outputs") or [names[-1]]
        if isinstance(outputs, str):
            outputs = [outputs]
        for out in outputs:
            if out not in names:
                raise SpecError(f"output {out!r} is not the name of a layer; layers are {names}")
        head = data.get("head")
        if head is not None and head not in names:
            raise SpecError(f"head {head!r} is not the name of a layer; layers are {names}")
        ordered = _topological_order(layers)
        spec = cls(tuple(ordered), tuple(outputs), str(data.get("name", "model")), head)
        shapes = _infer_shapes(spec.layers)
        object.__setattr__(spec, "shapes", shapes)
        _check_links(spec)
        return spec

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec is not valid JSON: {exc}") from None
        except RecursionError:
            raise SpecError("spec JSON is nested too deeply") from None

    @classmethod
    def from_yaml(cls, text: str) -> "ModelSpec":
        from .._overrides import load_yaml  # bounded: length, nesting and alias expansion ("billion laughs")

        return cls.from_dict(load_yaml(text, what="spec", error=SpecError))

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelSpec":
        path = Path(path)
        if path.is_dir():
            raise SpecError(f"{str(path)!r} is a folder, not a spec file (.json or .yaml)")
        if not path.is_file():
            raise ModelNotFoundError(f"spec file {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            return cls.from_yaml(text)
        return cls.from_json(text)

    # ----------------------------------------------------------------- writing
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format_version": SPEC_VERSION, "name": self.name}
        out["layers"] = []
        previous: str | None = None
        for layer in self.layers:
            entry = layer.to_dict()
            if previous is not None and list(layer.inputs) == [previous]:
                del entry["inputs"]  # the default: read the layer before
            out["layers"].append(entry)
            previous = layer.name
        if self.outputs != (self.layers[-1].name,):
            out["outputs"] = list(self.outputs)
        if self.head is not None:
            out["head"] = self.head
        return out

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ----------------------------------------------------------------- queries
    @cached_property
    def by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    @property
    def inputs(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.kind.arity == 0)

    @property
    def input_shape(self) -> Shape:
        """Shape of the single input (per sample)."""
        if len(self.inputs) != 1:
            raise SpecError(f"spec {self.name!r} has {len(self.inputs)} inputs; ask for shapes by name")
        return self.shapes[self.inputs[0].name]

    @property
    def output_shape(self) -> Shape:
        return self.shapes[self.outputs[0]]

    def input_shapes_of(self, layer: Layer) -> list[Shape]:
        return [self.shapes[name] for name in layer.inputs]

    def head_layer(self) -> Layer:
        """The layer ``reset_head`` replaces: the spec's ``head``, else the last layer with parameters
        on the way to the (first) output, through parameter-free layers (activations, dropout)."""
        if self.head is not None:
            return self.by_name[self.head]
        layer = self.by_name[self.outputs[0]]
        while True:
            if layer.kind.parameters(self.input_shapes_of(layer)) and layer.shares is None:
                return layer
            if len(layer.inputs) != 1:
                break
            layer = self.by_name[layer.inputs[0]]
        raise SpecError(
            f"spec {self.name!r} has no head: no layer with parameters leads straight to output "
            f"{self.outputs[0]!r}; name one with the top-level field 'head'"
        )

    def replace(self, layer_name: str, **fields: Any) -> "ModelSpec":
        """A new, validated spec with some fields of one layer changed (``spec.replace("fc", units=10)``)."""
        data = self.to_dict()
        for entry in data["layers"]:
            if entry["name"] == layer_name:
                entry.update(fields)
                break
        else:
            raise SpecError(f"spec {self.name!r} has no layer {layer_name!r}; layers are {list(self.by_name)}")
        return ModelSpec.from_dict(data)

    def final_activation(self) -> str | None:
        """The activation the (first) output ends with: 'softmax', 'sigmoid', ... or None for raw logits."""
        return self.by_name[self.outputs[0]].kind.final_activation()


def _parse_layers(raw_layers: list[Any]) -> list[Layer]:
    layers: list[Layer] = []
    seen: dict[str, int] = {}
    counters: dict[str, int] = {}
    for index, raw in enumerate(raw_layers):
        where = f"layer {index}"
        if not isinstance(raw, dict) or "kind" not in raw:
            raise SpecError(f"{where}: each layer must be an object with a 'kind', got {raw!r:.80}")
        cls = LAYER_KINDS.get(raw["kind"])
        counters[cls.name] = counters.get(cls.name, 0) + 1
        name = raw.get("name") or f"{cls.name.lower()}_{counters[cls.name]}"
        if not isinstance(name, str) or not name.isidentifier():
            raise SpecError(f"{where}: layer name {name!r} must be a Python identifier (letters, digits, _)")
        where = f"layer {index} {name!r} ({cls.name})"
        if name in seen:
            raise SpecError(f"{where}: the name {name!r} is already used by layer {seen[name]}")
        seen[name] = index
        fields = {k: v for k, v in raw.items() if k not in _RESERVED}
        try:
            kind = cls(make_fields(cls.Fields, fields), name)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None
        inputs = raw.get("inputs")
        if inputs is None:
            inputs = [] if cls.arity == 0 else ([layers[-1].name] if layers else [])
        elif isinstance(inputs, str):
            inputs = [inputs]
        if cls.arity == 0 and inputs:
            raise SpecError(f"{where}: an {cls.name} layer takes no inputs, got {inputs}")
        if cls.arity != 0 and not inputs:
            raise SpecError(f"{where}: has no input; start the spec with an Input layer")
        if isinstance(cls.arity, tuple) and len(inputs) not in cls.arity:
            counts = " or ".join(map(str, cls.arity))
            raise SpecError(f"{where}: takes {counts} input(s), got {len(inputs)}: {inputs}")
        if isinstance(cls.arity, int) and cls.arity > 0 and len(inputs) != cls.arity:
            raise SpecError(f"{where}: takes {cls.arity} input(s), got {len(inputs)}: {inputs}")
        if cls.arity is None and len(inputs) < 2:
            raise SpecError(f"{where}: takes two or more inputs, got {inputs}")
        trainable = raw.get("trainable", True)
        if not isinstance(trainable, bool):
            raise SpecError(f"{where}: 'trainable' must be true or false, got {trainable!r}")
        shares = raw.get("shares")
        if shares is not None and not isinstance(shares, str):
            raise SpecError(f"{where}: 'shares' must name another layer, got {shares!r}")
        layers.append(Layer(name, kind, tuple(inputs), trainable, shares))
    return layers


def _topological_order(layers: list[Layer]) -> list[Layer]:
    """Order layers so every layer comes after its inputs; a cycle is an error."""
    by_name = {layer.name: layer for layer in layers}
    for layer in layers:
        for source in layer.inputs:
            if source not in by_name:
                raise SpecError(
                    f"layer {layer.name!r} ({layer.kind_name}) reads input {source!r}, which is not a layer; "
                    f"layers are {list(by_name)}"
                )
    position = {layer.name: i for i, layer in enumerate(layers)}
    pending = {layer.name: len(set(layer.inputs)) for layer in layers}
    readers: dict[str, list[str]] = {name: [] for name in by_name}
    for layer in layers:
        for source in set(layer.inputs):
            readers[source].append(layer.name)
    ready = sorted((n for n, count in pending.items() if count == 0), key=position.get)
    ordered: list[Layer] = []
    while ready:
        name = ready.pop(0)
        ordered.append(by_name[name])
        for reader in readers[name]:
            pending[reader] -= 1
            if pending[reader] == 0:
                ready.append(reader)
                ready.sort(key=position.get)
    if len(ordered) != len(layers):
        stuck = [n for n, count in pending.items() if count > 0]
        raise SpecError(f"the spec has a cycle through layer(s) {stuck}; a layer cannot read its own output")
    return ordered


def _infer_shapes(layers: Iterable[Layer]) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for layer in layers:
        received = [shapes[name] for name in layer.inputs]
        shapes[layer.name] = tuple(int(d) for d in layer.kind.output_shape(received))
    return shapes


def _check_links(spec: ModelSpec) -> None:
    """Tied and shared weights: the layers they name exist and have parameters of the same shapes."""
    kinds = {layer.name: layer.kind for layer in spec.layers}
    for layer in spec.layers:
        received = spec.input_shapes_of(layer)
        layer.kind.check_links(kinds, spec.shapes, received)
        if layer.shares is None:
            continue
        where = f"layer {layer.name!r} ({layer.kind_name})"
        owner = spec.by_name.get(layer.shares)
        if owner is None or owner is layer:
            raise SpecError(f"{where}: shares={layer.shares!r} must name another layer; layers are {list(kinds)}")
        if owner.shares is not None:
            raise SpecError(f"{where}: shares={layer.shares!r}, which itself shares {owner.shares!r}; "
                            f"name {owner.shares!r} directly")
        mine = (layer.kind_name, layer.kind.fields, received)
        theirs = (owner.kind_name, owner.kind.fields, spec.input_shapes_of(owner))
        if mine != theirs:
            raise SpecError(
                f"{where}: shares={layer.shares!r} needs the same kind, fields and input shapes to reuse its "
                f"weights; got {mine[0]} {[list(s) for s in mine[2]]} vs {theirs[0]} {[list(s) for s in theirs[2]]}"
            )


def load_spec(source: "str | Path | dict[str, Any] | ModelSpec") -> ModelSpec:
    """A ``ModelSpec`` from a spec, a dict, or a path to a JSON/YAML file."""
    if isinstance(source, ModelSpec):
        return source
    if isinstance(source, dict):
        return ModelSpec.from_dict(source)
    return ModelSpec.from_file(source)
