"""Architecture codecs: how the ``architecture`` section of a manifest is written, rebuilt and described.

Each kind of architecture document (``{"type": "spec", ...}``, ``{"type":
"class", ...}``, and later the kinds importers add) has one codec registered
in ``codecs.ARCHITECTURES`` under its ``type``. ``save`` asks a codec to encode a
module, ``load`` to decode a document into a module, ``inspect`` to describe a
document without torch. No other module branches on the architecture type.

This module and the built-in codecs import neither torch nor the spec layer at
import time; a codec imports what it needs inside the method that needs it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from .format import RESERVED_PREFIX, Header

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class Rebuilt:
    """What decoding an architecture gives ``load``.

    ``module`` has the architecture but not yet the file's weights; ``on_meta``
    says it lives on the meta device (the weights are then assigned, not
    copied). ``rebuild`` makes it again on the CPU, for the rare class whose
    state the file does not hold entirely (non-persistent buffers).
    """

    module: "torch.nn.Module"
    on_meta: bool
    spec: Any = None  # the ModelSpec of a spec architecture
    rebuild: Callable[[], "torch.nn.Module"] | None = None
    final_activation: str | None = None  # the network's last activation, when the architecture says
    output_units: int | None = None  # the width of its (first) output, when the architecture says
    signature: dict[str, Any] | None = None  # inputs and outputs, when the architecture says


@dataclass
class Description:
    """What ``inspect`` shows of an architecture: a summary, per-layer rows, and parameter counts."""

    summary: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    trainable: int = 0


class ArchitectureCodec(Protocol):
    """Writes, rebuilds and describes one ``type`` of architecture document.

    Call order: ``save`` calls ``encode`` once, before any byte is written;
    ``load`` calls ``decode`` after the manifest is validated and before any
    tensor is read; ``inspect`` calls only ``describe``, which must not import
    torch. ``decode`` must honour ``trust_code``/``model_class``: nothing named
    by the document is imported without the caller's permission. A worked
    example, for architectures stored as a TorchScript-free JSON graph::

        class GraphCodec:
            kind = "graph"
            def encode(self, model, *, spec=None, init=None):
                return {"type": "graph", "graph": model.graph_document()}
            def decode(self, document, *, where, trust_code=False, model_class=None):
                import torch
                with torch.device("meta"):
                    module = GraphModule.from_document(document["graph"])  # data only: no code from the file
                return Rebuilt(module, on_meta=True)
            def describe(self, document, header):
                rows = weight_rows(header)
                total = sum(row["parameters"] for row in rows)
                return Description({"type": "graph", "nodes": len(document["graph"])}, rows, total, total)

        ARCHITECTURES.register("graph", GraphCodec())  # modelkeep.artifact.codecs
    """

    kind: str

    def encode(self, model: Any, *, spec: Any = None, init: Mapping[str, Any] | None = None) -> dict[str, Any]: ...

    def decode(self, document: Mapping[str, Any], *, where: object, trust_code: bool = False,
               model_class: type | None = None) -> Rebuilt: ...

    def describe(self, document: Mapping[str, Any], header: Header) -> Description: ...


def weight_rows(header: Header) -> list[dict[str, Any]]:
    """Weights grouped by layer (the tensor name up to its last dot), in file order, as ``inspect`` rows."""
    groups: dict[str, dict[str, Any]] = {}
    for entry in header.tensors.values():
        if entry.name.startswith(RESERVED_PREFIX):
            continue
        layer, _, tensor = entry.name.rpartition(".")
        group = groups.setdefault(layer or tensor, {"name": layer or tensor, "kind": "tensors", "output_shape": None,
                                                    "parameters": 0, "tensors": {}})
        group["tensors"][tensor] = {"dtype": entry.dtype, "shape": list(entry.shape)}
        group["parameters"] += math.prod(entry.shape)
    return list(groups.values())


def stored_values(header: Header) -> int:
    """How many values the file stores as weights (tensors outside reserved sections)."""
    return sum(math.prod(e.shape) for e in header.tensors.values() if not e.name.startswith(RESERVED_PREFIX))


__all__ = ["ArchitectureCodec", "Description", "Rebuilt", "stored_values", "weight_rows"]
