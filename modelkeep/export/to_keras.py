"""Write a spec-built model as a Keras 3 ``.keras`` file, without Keras: ``export_keras(model_or_path, out)``.

A ``.keras`` file is a zip of three members (Keras's ``saving_lib``):
``config.json``, the model as Keras serialises it (a ``Functional`` model whose
layers each carry ``module``, ``class_name``, ``config``, ``build_config`` and
their ``inbound_nodes``); ``metadata.json``; and ``model.weights.h5``, where a
layer's weights are datasets ``layers/<slot>/vars/0``, ``1``, ... The slot is
not the layer's name but the snake-cased class name numbered in the order of
``model.layers`` (``conv2d``, ``conv2d_1``, ...), and Keras rebuilds that order
from the graph (``keras.src.ops.function.map_graph``: by depth from the
outputs, ties in depth-first order), which ``keras_order`` reproduces, so each
layer's weights land where Keras looks for them.

The layer conversions live in ``to_keras_layers`` (core, merging,
normalisation, activations), ``to_keras_spatial`` (convolutions, padding,
pooling) and ``to_keras_recurrent`` (LSTM, GRU). The saved input
preprocessing, when affine (``Standardize``, ``MinMaxScale``: a Keras
``Normalization`` with fixed mean and variance; ``Rescale``: ``Rescaling``), is
put in front, so the Keras model takes the raw arrays ``predict`` takes. The
file is written through ``modelkeep.io.atomic``: a refused layer or a failed
write leaves nothing behind. This module never imports Keras.
"""
from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from ..errors import FormatError
from ..io.atomic import atomic_write
from ..spec.model import ModelSpec
from . import to_keras_recurrent as _recurrent  # noqa: F401  (registers the LSTM and GRU converters)
from . import to_keras_spatial as _spatial  # noqa: F401  (registers the convolution and pooling converters)
from ._graph import Affine, affine_steps, feature_steps
from .to_keras_layers import CONVERTERS, KerasGraph, KerasLayer, Step

#: the Keras version whose file layout this writer follows (checked by loading in the tests)
KERAS_VERSION = "3.15.1"


def supported_kinds() -> list[str]:
    """The spec layer kinds ``export_keras`` converts."""
    return sorted(CONVERTERS)


def export_keras(model_or_path: Any, out: str | os.PathLike[str], *, preprocessing: bool = True) -> Path:
    """Write ``model_or_path`` (a modelkeep file, a loaded ``Model``, a ``FitResult`` or a spec-built module)
    to the ``.keras`` file ``out``; returns its path.

    The Keras model takes the inputs ``predict`` takes (images channels first,
    ``(C, H, W)``) and gives the network's raw outputs (logits where the network
    ends without an activation); load it with ``keras.saving.load_model(out)``.
    With ``preprocessing`` (the default) the saved input preprocessing is folded
    in front of the network; ``preprocessing=False`` exports the bare network,
    which takes preprocessed inputs. A layer without an exact Keras equivalent
    raises ``FormatError`` naming it, and nothing is written.
    """
    out = Path(out)
    if out.suffix != ".keras":
        raise FormatError(f"Keras loads a model file only when its name ends in .keras; got {str(out)!r} "
                          f"(use {str(out.with_suffix('.keras'))!r})")
    module, spec, saved = _resolve(model_or_path)
    graph, inputs, outputs = convert(spec, module, affine_preprocessing(saved, spec) if preprocessing else [])
    order = keras_order(graph.layers, inputs, outputs)
    slots = weight_slots(graph.layers, order)
    config = _model_config(spec.name, graph.layers, order, inputs, outputs)
    weights = _weights_file(graph.layers, order, slots, spec.name)
    metadata = {"keras_version": KERAS_VERSION, "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S")}
    with atomic_write(out) as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr("metadata.json", json.dumps(metadata))
            archive.writestr("config.json", json.dumps(config))
            archive.writestr("model.weights.h5", weights)
    return out


def _resolve(model_or_path: Any) -> tuple[nn.Module, ModelSpec, Any]:
    """The spec-built module, its spec and the saved preprocessing (or None), from a path, a loaded ``Model``,
    a ``FitResult`` or a ``SpecModule``."""
    if isinstance(model_or_path, (str, os.PathLike)):
        from ..artifact.loading import load

        model_or_path = load(model_or_path)
    saved = getattr(model_or_path, "preprocessing", None)
    module = model_or_path
    for holder in ("module", "model"):  # a loaded Model keeps the network in .module, a FitResult in .model
        module = getattr(module, holder, None) or module
    spec = getattr(module, "spec", None)
    if not isinstance(spec, ModelSpec) or not isinstance(getattr(module, "layers", None), nn.ModuleDict):
        raise FormatError(f"cannot export a {type(module).__name__} to Keras: only models built from a spec or the "
                          "zoo have an architecture that can be written as a Keras config")
    return module, spec, saved


def affine_preprocessing(saved: Any, spec: ModelSpec) -> list[Affine]:
    """The saved input preprocessing as affine steps to fold in; [] for none. Refuses what cannot be folded."""
    if not feature_steps(saved):
        return []
    steps = affine_steps(saved)
    kinds = ", ".join(type(step).__name__ for step in feature_steps(saved))
    if steps is None or len(spec.inputs) != 1:
        raise FormatError(f"the saved preprocessing ({kinds}) cannot be folded into a Keras model; export the bare "
                          "network with preprocessing=False and preprocess its inputs yourself")
    shape = spec.shapes[spec.inputs[0].name]
    for step in steps:
        if any(np.shape(v) not in ((), shape) for v in (step.a, step.b)) or (
                step.form == "centre" and np.min(step.b) <= 1e-6):  # Keras divides by max(sqrt(variance), 1e-7)
            raise FormatError(f"the saved preprocessing ({kinds}) has a shape or a divisor Keras's Normalization "
                              "cannot hold; export with preprocessing=False and preprocess inputs yourself")
    return steps


def _main_module(module: nn.Module) -> nn.Module:
    """The layer's own module, without the activation ``with_activation`` appends."""
    return module[0] if isinstance(module, nn.Sequential) else module


def _fold(graph: KerasGraph, step: Step, steps: list[Affine]) -> str:
    """Keras layers computing ``steps`` on the input ``step``; returns the last one's name."""
    name = step.name
    for affine in steps:
        a, b = np.asarray(affine.a, np.float64), np.asarray(affine.b, np.float64)
        if affine.form == "centre":  # (x - a) / b
            axis = None if a.shape == () else list(range(1, len(step.out_shape) + 1))
            config = {"axis": axis, "mean": a.tolist(), "variance": (b * b).tolist(), "invert": False}
            name = graph.add(step, "Normalization", config, name=graph.extra_name(step.name, "normalize"),
                             sources=[name])
        else:  # x * a + b
            config = {"scale": float(a), "offset": float(b)}
            name = graph.add(step, "Rescaling", config, name=graph.extra_name(step.name, "rescale"), sources=[name])
    return name


def convert(spec: ModelSpec, module: nn.Module,
            preprocessing: list[Affine] | None = None) -> tuple[KerasGraph, list[str], list[str]]:
    """The Keras layers of ``spec``, with weights from ``module`` and ``preprocessing`` folded in front of its
    (single) input; and the Keras names of its inputs and outputs."""
    graph = KerasGraph(spec)
    output_of: dict[str, str] = {}
    for layer in spec.layers:
        if layer.shares is not None:
            raise FormatError(f"cannot export layer {layer.name!r} ({layer.kind_name}) to Keras: it shares the "
                              f"weights of {layer.shares!r}, and a Keras config cannot express shared layers")
        converter = CONVERTERS.get(layer.kind_name)
        if converter is None:
            raise FormatError(f"cannot export layer {layer.name!r} ({layer.kind_name}) to Keras: that kind has no "
                              f"Keras equivalent here; supported kinds: {', '.join(supported_kinds())}")
        own = module.layers[layer.name] if layer.name in module.layers else None
        step = Step(layer, None if own is None else _main_module(own), [output_of[s] for s in layer.inputs],
                    spec.input_shapes_of(layer), spec.shapes[layer.name], [spec.by_name[s] for s in layer.inputs])
        output_of[layer.name] = converter(step, graph)
        if layer.kind.arity == 0 and preprocessing:
            output_of[layer.name] = _fold(graph, step, preprocessing)
    return graph, [layer.name for layer in spec.inputs], [output_of[name] for name in spec.outputs]


def keras_order(layers: dict[str, KerasLayer], inputs: list[str], outputs: list[str]) -> list[str]:
    """The layers in the order Keras gives ``model.layers`` for this graph (``map_graph``; no shared layers).

    Depth-first from each output, parents in call order, numbering layers as
    first seen; depth is the longest path to an output; layers sort by depth,
    deepest first, then by that number. Layers that reach no output are left out,
    as Keras leaves them out; inputs that reach no output come at depth 0.
    """
    seen: dict[str, int] = {}
    finished: list[str] = []
    done: set[str] = set()
    for output in outputs:
        if output in done:
            continue
        seen.setdefault(output, len(seen))
        stack = [(output, iter(layers[output].inputs))]
        while stack:
            name, parents = stack[-1]
            parent = next((p for p in parents if p not in done), None)
            if parent is None:
                stack.pop()
                if name not in done:
                    done.add(name)
                    finished.append(name)
            else:
                seen.setdefault(parent, len(seen))
                stack.append((parent, iter(layers[parent].inputs)))
    depth: dict[str, int] = {}
    for name in reversed(finished):
        here = depth.setdefault(name, 0)
        for parent in layers[name].inputs:
            depth[parent] = max(here + 1, depth.get(parent, 0))
    for name in inputs:
        if name not in depth:
            depth[name], seen[name] = 0, -1
    return sorted(depth, key=lambda name: (-depth[name], seen[name]))


def _snake_case(name: str) -> str:
    """Keras's ``naming.to_snake_case``: ``MaxPooling2D`` -> ``max_pooling2d``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def weight_slots(layers: dict[str, KerasLayer], order: list[str]) -> dict[str, str]:
    """Layer name -> its group under ``layers/`` in ``model.weights.h5`` (``dense``, ``dense_1``, ...)."""
    used: dict[str, int] = {}
    slots = {}
    for name in order:
        base = _snake_case(layers[name].class_name)
        if base in used:
            used[base] += 1
            slots[name] = f"{base}_{used[base]}"
        else:
            used[base] = 0
            slots[name] = base
    return slots


def _tensor(layer: KerasLayer) -> dict[str, Any]:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [None, *layer.shape], "dtype": layer.dtype, "keras_history": [layer.name, 0, 0]}}


def _layer_entry(layer: KerasLayer, layers: dict[str, KerasLayer]) -> dict[str, Any]:
    entry: dict[str, Any] = {"module": "keras.layers", "class_name": layer.class_name, "config": layer.config,
                             "registered_name": None}
    parents = [layers[name] for name in layer.inputs]
    if parents:
        shapes = [[None, *parent.shape] for parent in parents]
        entry["build_config"] = {"input_shape": shapes if layer.merge else shapes[0]}
        tensors = [_tensor(parent) for parent in parents]
        entry["inbound_nodes"] = [{"args": [tensors] if layer.merge else tensors, "kwargs": {}}]
    else:
        entry["inbound_nodes"] = []
    entry["name"] = layer.name
    return entry


def _model_config(name: str, layers: dict[str, KerasLayer], order: list[str], inputs: list[str],
                  outputs: list[str]) -> dict[str, Any]:
    def ends(names: list[str]) -> list[Any]:
        triples = [[n, 0, 0] for n in names]
        return triples[0] if len(triples) == 1 else triples  # one input or output: a tensor, not a list of one

    config = {"name": name, "trainable": True, "layers": [_layer_entry(layers[n], layers) for n in order],
              "input_layers": ends(inputs), "output_layers": ends(outputs)}
    return {"module": "keras.src.models.functional", "class_name": "Functional", "config": config,
            "registered_name": "Functional", "build_config": {"input_shape": None}}


def _weights_file(layers: dict[str, KerasLayer], order: list[str], slots: dict[str, str], model_name: str) -> bytes:
    """``model.weights.h5`` as bytes, laid out as Keras 3 writes it."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        root = h5.create_group("layers")
        for name in order:
            for path, group_name, arrays in layers[name].weights:
                group = root.create_group(f"{slots[name]}/{path}")
                group.attrs["name"] = group_name
                for index, values in enumerate(arrays):
                    group.create_dataset(str(index), data=values)
        h5.create_group("vars").attrs["name"] = model_name
    return buffer.getvalue()
