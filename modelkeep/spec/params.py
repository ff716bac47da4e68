"""Parameter accounting: per layer and in total, with the formula behind each number.

For a spec the counts come from each layer kind's formula, computed from the
inferred shapes: nothing is allocated and torch is not imported, so a
GPT-3-sized spec is counted in milliseconds. The test-suite checks every
formula against the ``numel`` of the same spec built on the meta device.

Parameters are what gradient descent trains; buffers (batch-norm running
statistics) are saved with the model but not trained, and are reported apart.
Weights a layer shares with another (``shares``, ``tied_to``) are counted once,
at the layer that owns them. Any other ``torch.nn.Module`` is counted from its
parameters and buffers, each shared tensor once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import SpecError
from .model import ModelSpec, load_spec

DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


@dataclass(frozen=True)
class LayerCount:
    """One row of the table: a layer's parameters, how many are trainable, and why that many."""

    name: str
    kind: str
    output_shape: tuple[int, ...] | None
    parameters: int
    trainable: int
    formula: str
    buffers: int = 0
    note: str = ""

    @property
    def frozen(self) -> bool:
        return self.parameters > 0 and self.trainable == 0

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["output_shape"] = list(self.output_shape) if self.output_shape is not None else None
        row["frozen"] = self.frozen
        return row


@dataclass(frozen=True)
class ParameterReport:
    layers: tuple[LayerCount, ...]
    dtype: str = "float32"

    @property
    def total(self) -> int:
        """Every parameter, trainable or not (buffers excluded)."""
        return sum(row.parameters for row in self.layers)

    @property
    def trainable(self) -> int:
        return sum(row.trainable for row in self.layers)

    @property
    def non_trainable(self) -> int:
        """Frozen parameters. Keras also counts batch-norm running statistics here; those are ``buffers``."""
        return self.total - self.trainable

    @property
    def buffers(self) -> int:
        return sum(row.buffers for row in self.layers)

    @property
    def bytes(self) -> int:
        """Memory of the parameters in ``dtype``."""
        return self.total * DTYPE_BYTES[self.dtype]

    @property
    def buffer_bytes(self) -> int:
        return self.buffers * DTYPE_BYTES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        size = DTYPE_BYTES[self.dtype]
        layers = []
        for row in self.layers:
            entry = row.to_dict()
            entry["bytes"] = row.parameters * size
            layers.append(entry)
        return {
            "total": self.total,
            "trainable": self.trainable,
            "non_trainable": self.non_trainable,
            "buffers": self.buffers,
            "dtype": self.dtype,
            "bytes": self.bytes,
            "buffer_bytes": self.buffer_bytes,
            "layers": layers,
        }


def count_parameters(model: Any, *, dtype: str = "float32") -> ParameterReport:
    """Count the parameters of a spec (or spec dict/path) or of any ``torch.nn.Module``.

    ``dtype`` sets the size used for ``bytes`` (float32, float16, bfloat16, float64, int8).

    >>> report = count_parameters({"layers": [{"kind": "Input", "shape": [64]}, {"kind": "Dense", "units": 10}]})
    >>> report.total, report.layers[1].formula
    (650, '64*10+10')
    """
    if dtype not in DTYPE_BYTES:
        raise SpecError(f"dtype {dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
    if hasattr(model, "named_parameters"):
        spec = getattr(model, "spec", None)
        if isinstance(spec, ModelSpec) and hasattr(model, "layers"):
            return _count_spec(spec, dtype, module=model)
        return _count_module(model, dtype)
    return _count_spec(load_spec(model), dtype)


def _count_spec(spec: ModelSpec, dtype: str, module: Any = None) -> ParameterReport:
    rows = []
    for layer in spec.layers:
        received = spec.input_shapes_of(layer)
        if layer.shares is not None:
            count, formula, buffers = 0, f"0 (shares the weights of {layer.shares!r})", 0
        else:
            groups = layer.kind.parameters(received)
            count = sum(g.count for g in groups)
            formula = " + ".join(g.formula for g in groups) if groups else "0"
            buffers = sum(g.count for g in layer.kind.buffers(received))
        trainable = count if layer.trainable else 0
        if module is not None and layer.shares is None and count:
            trainable = _trainable_in(module.layers[layer.name])
        rows.append(LayerCount(layer.name, layer.kind_name, spec.shapes[layer.name], count, trainable, formula,
                               buffers, layer.kind.note()))
    return ParameterReport(tuple(rows), dtype)


def _trainable_in(module: Any) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _count_module(module: Any, dtype: str) -> ParameterReport:
    seen: set[int] = set()
    rows = []
    for name, child in module.named_modules():
        own = [(n, p) for n, p in child.named_parameters(recurse=False) if id(p) not in seen]
        own_buffers = [b for _, b in child.named_buffers(recurse=False) if b is not None and id(b) not in seen]
        if not own and not own_buffers:
            continue
        seen.update(id(p) for _, p in own)
        seen.update(id(b) for b in own_buffers)
        count = sum(p.numel() for _, p in own)
        trainable = sum(p.numel() for _, p in own if p.requires_grad)
        formula = " + ".join(f"{n} {'x'.join(map(str, p.shape)) or 'scalar'}" for n, p in own) or "0"
        rows.append(LayerCount(name or "(root)", type(child).__name__, None, count, trainable, formula,
                               sum(b.numel() for b in own_buffers)))
    return ParameterReport(tuple(rows), dtype)
