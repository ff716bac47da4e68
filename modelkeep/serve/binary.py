"""The binary tensor data extension of the V2 protocol (Triton's ``binary_tensor_data``), which Triton's and
KServe's clients use by default: tensors travel as raw little-endian bytes after the JSON.

Request: the header ``Inference-Header-Content-Length: N`` says the first N bytes of the body are the JSON;
each input whose ``parameters`` hold ``binary_data_size`` takes that many bytes, in the order of the inputs,
from what follows. Response: outputs asked for with ``parameters: {"binary_data": true}`` (or all, with the
request's ``parameters: {"binary_data_output": true}``) are sent the same way, the JSON giving each one's
``binary_data_size`` instead of ``data``. Sizes are checked against the declared shapes before anything is
converted; nothing here runs the model.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..errors import DataError
from .protocol import InferenceRequest, InferenceResponse

HEADER = "inference-header-content-length"
EXTENSION = "binary_tensor_data"


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary part of a request body (all JSON when there is no header)."""
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise DataError(f"Inference-Header-Content-Length is {header_length[:20]!r}; it must be the JSON's length "
                        f"in bytes, at most the body's {len(body)}")
    return body[:int(header_length)], body[int(header_length):]


def binary_inputs(request: InferenceRequest, payload: bytes) -> list[bytes | None]:
    """Each input's bytes (``None`` for an input given as JSON ``data``); every byte must be claimed."""
    pieces, offset = [], 0
    for tensor in request.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            pieces.append(None)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(payload):
            raise DataError(f"input {tensor.name[:40]!r} declares binary_data_size {str(size)[:20]}, but "
                            f"{len(payload) - offset} bytes of binary data are left")
        pieces.append(payload[offset:offset + size])
        offset += size
    if offset != len(payload):
        raise DataError(f"the request carries {len(payload) - offset} bytes of binary data no input claims")
    return pieces


def from_bytes(data: bytes, dtype: str, shape: list[int], name: str) -> np.ndarray:
    """Raw little-endian bytes as an array of ``shape``; the size must match exactly."""
    kind = np.dtype(dtype).newbyteorder("<")
    expected = math.prod(shape) * kind.itemsize
    if len(data) != expected:
        raise DataError(f"input {name!r} of shape {shape} needs {expected} bytes of {dtype}; "
                        f"binary_data_size gives {len(data)}")
    return np.frombuffer(data, dtype=kind).astype(dtype).reshape(shape)


def binary_outputs(request: InferenceRequest, names: list[str]) -> set[str]:
    """The outputs the client wants as binary data."""
    default = bool((request.parameters or {}).get("binary_data_output", False))
    asked = {o.name: (o.parameters or {}).get("binary_data") for o in request.outputs or ()}
    return {name for name in names if (asked.get(name) if asked.get(name) is not None else default)}


def render(response: InferenceResponse, arrays: dict[str, np.ndarray], binary: set[str]) -> tuple[bytes, int]:
    """The body of a response with ``binary`` outputs as raw bytes, and the length of its JSON part."""
    document: dict[str, Any] = response.model_dump(exclude_none=True)
    blobs = []
    for output in document["outputs"]:
        if output["name"] in binary:
            blob = np.ascontiguousarray(arrays[output["name"]]).astype(
                np.asarray(arrays[output["name"]]).dtype.newbyteorder("<"), copy=False).tobytes()
            output.pop("data", None)
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
    header = json.dumps(document, allow_nan=False, separators=(",", ":")).encode()
    return header + b"".join(blobs), len(header)


__all__ = ["EXTENSION", "HEADER", "binary_inputs", "binary_outputs", "from_bytes", "render", "split_body"]
