"""ONNX files in: an inference graph of common operators becomes a modelkeep spec and its weights.

Read with the ``onnx`` package from bytes whose size was checked first;
external data files are never followed (a file could name any path). Every
initializer's declared shape is checked against ``ReaderLimits.max_elements``
and against the bytes it really carries before it becomes an array. The
graph is converted operator by operator (``onnx_graph``, ``onnx_shapes``);
nothing in the file is executed.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from .base import Imported, register_reader

MAX_ONNX_BYTES = 2 << 30            # protobuf's own ceiling for one message
MAX_NODES = 100_000
_FIELD_TAGS = {0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x52, 0x72}   # ModelProto fields 2..14 (length-delimited)


class OnnxReader:
    format = "onnx"
    description = "ONNX model (.onnx): an inference graph of common operators, checked shape by shape"

    def sniff(self, path: Path, head: bytes) -> bool:
        # ModelProto starts with ir_version (field 1, a small varint), then a length-delimited field.
        return len(head) > 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _FIELD_TAGS

    def read(self, path: Path, limits: Any) -> Imported:
        model = _load(path)
        constants = _constants(model.graph, limits)
        shapes = _inferred_shapes(model)
        from . import onnx_shapes  # noqa: F401  (registers the shape operators)
        from .onnx_graph import GraphConverter

        converter = GraphConverter(model.graph, constants, shapes, _opset(model))
        spec_dict, arrays = converter.convert()
        from ..spec import ModelSpec

        spec = ModelSpec.from_dict(spec_dict)
        import torch

        tensors = {name: torch.from_numpy(np.array(value, copy=True)) for name, value in arrays.items()}
        details = {"producer": f"{model.producer_name} {model.producer_version}".strip(),
                   "ir_version": int(model.ir_version), "opset": converter.opset,
                   "operators": sorted({node.op_type for node in model.graph.node})}
        return Imported(self.format, tensors, spec=spec, details=details)


def _load(path: Path) -> Any:
    import onnx

    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise FormatError(f"{path}: {size:,} bytes is over ONNX's 2 GiB limit for one file; such models keep their "
                          "weights in external data files, which modelkeep does not follow")
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError and friends
        raise FormatError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.HasField("graph"):
        raise FormatError(f"{path}: an ONNX file without a graph")
    if len(model.graph.node) > MAX_NODES:
        raise FormatError(f"{path}: {len(model.graph.node):,} nodes is over the limit of {MAX_NODES:,}")
    return model


def _opset(model: Any) -> int:
    foreign = sorted({f"{node.domain}.{node.op_type}" for node in model.graph.node
                      if node.domain not in ("", "ai.onnx")})
    if foreign:
        raise FormatError(f"the graph uses operators outside ONNX's standard set ({', '.join(foreign[:5])}); "
                          "only neural-network operators become a modelkeep spec")
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise FormatError("the ONNX file imports no standard operator set (ai.onnx); only standard operators are read")


def _constants(graph: Any, limits: Any) -> dict[str, np.ndarray]:
    from onnx import TensorProto, numpy_helper

    arrays = {}
    for tensor in graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            raise FormatError(f"initializer {tensor.name!r} lives in an external data file; modelkeep reads only "
                              "self-contained ONNX files (save with onnx.save(model, path, save_as_external_data=False))")
        count = math.prod(tensor.dims)
        if any(d < 0 for d in tensor.dims) or count > limits.max_elements:
            raise FormatError(f"initializer {tensor.name!r} declares shape {list(tensor.dims)} "
                              f"({count:,} elements; the limit is {limits.max_elements:,})")
        item = np.dtype(_numpy_dtype(tensor)).itemsize
        if tensor.raw_data and len(tensor.raw_data) != count * item:
            raise FormatError(f"initializer {tensor.name!r} declares shape {list(tensor.dims)} but carries "
                              f"{len(tensor.raw_data):,} bytes instead of {count * item:,}")
        arrays[tensor.name] = numpy_helper.to_array(tensor)
    return arrays


def _numpy_dtype(tensor: Any) -> Any:
    from onnx import helper

    try:
        return helper.tensor_dtype_to_np_dtype(tensor.data_type)
    except Exception:
        raise FormatError(f"initializer {tensor.name!r} has an unknown element type {tensor.data_type}") from None


def _inferred_shapes(model: Any) -> dict[str, tuple]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:
        raise FormatError(f"ONNX shape inference failed on this graph: {exc}") from None
    shapes = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type" or not value.type.tensor_type.HasField("shape"):
            continue
        shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                   for d in value.type.tensor_type.shape.dim)
    return shapes


READER = register_reader(OnnxReader())

__all__ = ["OnnxReader", "READER"]
