"""Request inputs checked against the model's signature before any work: name, datatype, shape, size, values.

``v2_rows`` turns a V2 request's tensor into the NumPy rows the model takes; ``v1_rows`` does the same
for V1 ``instances`` (raw rows: flat or nested numbers, or text for a model with a saved tokenizer).
Every refusal is a ``DataError`` (400) or ``RequestTooLarge`` (413) that says what was received and what
the model takes. Non-finite floats are refused unless the server allows them; integer inputs that index
an embedding must lie inside it (an id out of range would otherwise fail deep inside the network).
Nothing here runs the model.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import DataError
from .binary import from_bytes
from .http_errors import RequestTooLarge
from .models import ServedModel, TensorInfo
from .protocol import NUMPY_TO_V2, InferenceRequest

_KIND_NAMES = {"f": "floating-point numbers", "i": "integers", "u": "integers", "b": "booleans",
               "U": "text", "S": "bytes", "O": "mixed values or lists of different lengths"}


def v2_rows(request: InferenceRequest, served: ServedModel, *, max_rows: int, binary: bytes | None = None) -> np.ndarray:
    """The rows of the request's one input tensor (``binary``: its raw bytes, when sent so), checked."""
    expected = served.inputs[0]
    if len(request.inputs) != 1 or request.inputs[0].name != expected.name:
        given = ", ".join(repr(t.name[:40]) for t in request.inputs)
        raise DataError(f"model {served.name!r} takes one input named {expected.name!r}; the request gives {given}")
    tensor = request.inputs[0]
    wanted = NUMPY_TO_V2[expected.dtype]
    if tensor.datatype != wanted:
        raise DataError(f"input {expected.name!r} of model {served.name!r} is {wanted}; the request says "
                        f"{tensor.datatype[:16]!r}")
    shape = tensor.shape
    _check_shape(shape, expected, served.name, max_rows)
    if binary is not None:
        array = from_bytes(binary, expected.dtype, shape, expected.name)
    elif tensor.data is None:
        raise DataError(f"input {expected.name!r} carries neither data nor parameters.binary_data_size")
    else:
        array = as_array(tensor.data, expected.dtype, f"input {expected.name!r}")
    if array.size != math.prod(shape):
        raise DataError(f"input {expected.name!r} declares shape {shape} ({math.prod(shape)} values) but its data "
                        f"holds {array.size}")
    array = array.reshape(shape)
    check_values(array, served)
    return array


def v1_rows(instances: list[Any], served: ServedModel, *, max_rows: int) -> np.ndarray:
    """The rows of V1 ``instances``: each a raw input shaped like the model's (flat rows are reshaped)."""
    if len(instances) > max_rows:
        raise RequestTooLarge(f"{len(instances)} instances in one request; this server takes at most {max_rows}")
    if served.takes_text:
        if not all(isinstance(row, str) for row in instances):
            raise DataError(f"model {served.name!r} reads text: give each instance as a string")
        return np.asarray(instances, dtype=object)
    expected = served.inputs[0]
    array = as_array(instances, expected.dtype, "instances", whole_floats=True)
    sample = expected.shape
    if None not in sample and array.ndim >= 1 and array.shape[1:] != sample \
            and array.size == len(array) * math.prod(sample):
        array = array.reshape(len(array), *sample)
    if array.ndim != 1 + len(sample) or any(d is not None and d != n for d, n in zip(sample, array.shape[1:])):
        raise DataError(f"instances have shape {list(array.shape)}; model {served.name!r} takes rows of shape "
                        f"{_shape_text(sample)}")
    check_values(array, served)
    return array


def _check_shape(shape: list[int], expected: TensorInfo, model: str, max_rows: int) -> None:
    sample = expected.shape
    if len(shape) != 1 + len(sample) or any(d < 0 for d in shape) \
            or any(d is not None and d != n for d, n in zip(sample, shape[1:])):
        raise DataError(f"input {expected.name!r} has shape {shape[:8]}; model {model!r} takes "
                        f"[batch, {', '.join('-1' if d is None else str(d) for d in sample)}]")
    if shape[0] < 1:
        raise DataError(f"input {expected.name!r} has no rows (shape {shape}); send at least one")
    if shape[0] > max_rows:
        raise RequestTooLarge(f"{shape[0]} rows in one request; this server takes at most {max_rows}")


def as_array(data: Any, dtype: str, where: str, *, whole_floats: bool = False) -> np.ndarray:
    """``data`` (nested lists of JSON values) as an array of ``dtype``; values of another kind are refused."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        array = np.empty(0, dtype=object)
    target = np.dtype(dtype)
    allowed = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}.get(target.kind, "")
    if whole_floats and target.kind in "iu" and array.dtype.kind == "f" and np.all(np.isfinite(array)) \
            and np.array_equal(array, np.round(array)):
        array = array.astype(np.int64)
    if array.dtype.kind not in allowed:
        raise DataError(f"{where} holds {_KIND_NAMES.get(array.dtype.kind, array.dtype.name)}; the model takes "
                        f"{_KIND_NAMES.get(target.kind, target.name)} ({NUMPY_TO_V2.get(target.name, target.name)})"
                        " in lists of equal lengths")
    if target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise DataError(f"{where} holds integers outside the range of {target.name}")
    return array.astype(target, copy=False)


def check_values(array: np.ndarray, served: ServedModel) -> None:
    """Non-finite floats (unless allowed) and ids outside the model's embedding are refused."""
    if array.dtype.kind == "f" and not served.allow_nonfinite:
        finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if not finite.all():
            rows = np.flatnonzero(~finite)
            shown = ", ".join(str(int(r)) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
            raise DataError(f"row{'s' if len(rows) > 1 else ''} {shown} of the input hold{'' if len(rows) > 1 else 's'} "
                            "NaN or infinite values, which this server refuses; send finite numbers")
    limit = served.token_limit
    if limit is not None and array.dtype.kind in "iu" and array.size and (array.min() < 0 or array.max() >= limit):
        raise DataError(f"model {served.name!r} takes token ids from 0 to {limit - 1}; the input holds "
                        f"{int(array.min())} to {int(array.max())}")


def _shape_text(sample: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("any" if d is None else str(d) for d in sample) + "]"


__all__ = ["as_array", "check_values", "v1_rows", "v2_rows"]
