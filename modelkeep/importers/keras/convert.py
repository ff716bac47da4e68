"""A Keras model config and its weights -> a modelkeep spec and tensors under the built spec's names.

The graph of Keras layers is walked in order and each layer goes to its
converter (``layers.py``, ``conv.py``, ``recurrent.py``), which adds spec layers
to a ``SpecBuilder`` (``builder.py``: how channels-last tensors are tracked).
``keras_to_imported`` is the entry point the ``.keras``, ``.h5`` and SavedModel
readers share. Never imports Keras or TensorFlow.
"""
from __future__ import annotations

import heapq
import re
from typing import Any, Mapping

from ...errors import FormatError, SpecError
from ..base import Imported
from .builder import CONVERTERS, KTensor, SpecBuilder
from .config import KerasGraph, KerasNode, parse_model_config


def _order(graph: KerasGraph) -> list[KerasNode]:
    """The nodes with every node after its inputs (Keras configs usually are; checked, not assumed)."""
    by_name = {node.name: node for node in graph.nodes}
    if len(by_name) != len(graph.nodes):
        raise FormatError("two layers of the Keras config share a name; the file is corrupt")
    missing = sorted({i for n in graph.nodes for i in n.inputs if i not in by_name})
    if missing:
        raise FormatError(f"the Keras config's layers read layers that do not exist: {missing[:5]}; the file is "
                          "corrupt")
    waiting = {node.name: len(set(node.inputs)) for node in graph.nodes}
    readers: dict[str, list[KerasNode]] = {name: [] for name in by_name}
    for node in graph.nodes:
        for source in set(node.inputs):
            readers[source].append(node)
    # the model's inputs first, in Keras's order (the spec's inputs are its first layers); then config order
    rank = {node.name: (1, i) for i, node in enumerate(graph.nodes)}
    rank.update({name: (0, i) for i, name in enumerate(graph.inputs)})
    ready = [(rank[node.name], node.name) for node in graph.nodes if not waiting[node.name]]
    heapq.heapify(ready)
    ordered: list[KerasNode] = []
    while ready:
        _, name = heapq.heappop(ready)
        ordered.append(by_name[name])
        for reader in readers[name]:
            waiting[reader.name] -= 1
            if not waiting[reader.name]:
                heapq.heappush(ready, (rank[reader.name], reader.name))
    if len(ordered) != len(graph.nodes):
        raise FormatError("the Keras config's layers form a cycle; the file is corrupt")
    return ordered


def supported_layers() -> list[str]:
    """The Keras layer classes modelkeep imports."""
    from . import conv, layers, merge, recurrent  # noqa: F401  (register the converters)

    return sorted(CONVERTERS)


def _convert(graph: KerasGraph, weights: Mapping[str, list[Any]], builder: SpecBuilder) -> list[KTensor]:
    outputs: dict[str, KTensor] = {}
    for node in _order(graph):
        fn = CONVERTERS.get(node.class_name)
        if fn is None:
            raise FormatError(
                f"layer {node.name!r} is a Keras {node.class_name[:60]!r}, which modelkeep cannot import (custom "
                f"layers need their code, which modelkeep never runs); supported: {', '.join(supported_layers())}"
            )
        inputs = [outputs[name] for name in node.inputs]
        if node.class_name != "InputLayer" and not inputs:
            raise FormatError(f"layer {node.name!r} has no input; the file is corrupt")
        result = fn(builder, node, inputs, list(weights.get(node.name, [])))
        outputs[node.name] = result if result is not None else inputs[0]
    missing = [name for name in graph.inputs + graph.outputs if name not in outputs]
    if missing:
        raise FormatError(f"the Keras config names inputs/outputs {missing} that are not layers; the file is corrupt")
    return [outputs[name] for name in graph.outputs]


def keras_to_imported(config: dict, weights: Mapping[str, list[Any]], *, format: str,
                      details: dict | None = None) -> Imported:
    """A Keras model (``config``: ``{"class_name": ..., "config": ...}``; ``weights``: layer name -> that layer's
    arrays in Keras's order, as ``layer.get_weights()``) as an ``Imported`` with a spec and state-dict tensors."""
    import torch

    from ...spec.model import ModelSpec
    from . import conv, layers, merge, recurrent  # noqa: F401  (register the converters)

    details = dict(details or {})
    graph = parse_model_config(config)
    builder = SpecBuilder(keras_version=str(details.get("keras_version", "")))
    outs = _convert(graph, weights, builder)
    out_names = []
    for t in outs:
        out_names.append(builder.layout(t, False).layer)
    spec_dict = {"name": re.sub(r"[^\w.-]", "_", graph.name)[:100] or "model", "layers": builder.layers,
                 "outputs": out_names}
    try:
        spec = ModelSpec.from_dict(spec_dict)
    except SpecError as exc:
        raise FormatError(f"the Keras model does not convert to a valid spec: {exc}") from None
    tensors = {name: torch.as_tensor(value) for name, value in builder.tensors.items()}
    details.update({"keras_class": config.get("class_name"), "layers": len(graph.nodes)})
    return Imported(format=format, tensors=tensors, spec=spec, details=details, notes=builder.notes,
                    task=task_from_loss(details.get("loss")))


_REGRESSION_LOSSES = {"mse", "mae", "mape", "msle", "mean_squared_error", "mean_absolute_error", "huber", "log_cosh",
                      "logcosh", "mean_absolute_percentage_error", "mean_squared_logarithmic_error", "huber_loss"}
_CLASSIFICATION_LOSSES = {"binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
                          "binary_focal_crossentropy", "categorical_focal_crossentropy", "hinge", "squared_hinge",
                          "categorical_hinge"}


def loss_name(loss: Any) -> str | None:
    """The loss a Keras file was compiled with, as a snake_case name (``"MeanSquaredError"`` -> ``mean_squared_error``)."""
    if isinstance(loss, dict):
        loss = loss.get("class_name") or (loss.get("config") or {}).get("name")
    if not isinstance(loss, str) or len(loss) > 100:
        return None
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", loss).lower()


def task_from_loss(loss: Any) -> str | None:
    """``regression`` or ``classification`` from the compiled loss; None when there is none or it says neither."""
    name = loss_name(loss)
    if name in _REGRESSION_LOSSES:
        return "regression"
    if name in _CLASSIFICATION_LOSSES:
        return "classification"
    return None
