"""The Open Inference Protocol (KServe V2) and KServe V1's ``predict``, as pydantic models.

These are the documented request and response shapes
(https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/): the server parses requests
with them, builds responses with them, and they make the OpenAPI document. Datatype names are the
protocol's (``FP32``, ``INT64``, ``BOOL``, ``BYTES``); ``DATATYPES`` maps them to NumPy. Nothing here
runs a model or imports torch.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: V2 datatype name -> NumPy dtype name (BYTES: text, a NumPy object array of str).
DATATYPES: dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "object",
}
NUMPY_TO_V2: dict[str, str] = {numpy: v2 for v2, numpy in DATATYPES.items()}

Data = list[Any]  # flat or nested (row-major) list of values; checked in inputs.py, never trusted here


class ErrorResponse(BaseModel):
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]  # -1 for a variable axis (the batch)


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ReadyResponse(BaseModel):
    name: str
    ready: bool


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256)
    shape: list[int] = Field(max_length=32)
    datatype: str = Field(max_length=16)
    data: Data | None = None  # absent when the tensor travels as binary data (parameters.binary_data_size)
    parameters: dict[str, Any] | None = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256)
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=64)
    outputs: list[RequestOutput] | None = Field(default=None, max_length=64)


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]  # flat, row-major, as the protocol's JSON form gives it


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class PredictRequest(BaseModel):
    """KServe V1: ``{"instances": [row, ...]}``, each row a raw input (numbers, nested lists, or text)."""

    model_config = ConfigDict(extra="forbid")

    instances: list[Any] = Field(min_length=1)


class PredictResponse(BaseModel):
    model_name: str
    model_version: str
    predictions: list[dict[str, Any]]


__all__ = ["DATATYPES", "NUMPY_TO_V2", "ErrorResponse", "InferenceRequest", "InferenceResponse", "ModelMetadata",
           "PredictRequest", "PredictResponse", "ReadyResponse", "RequestInput", "RequestOutput", "ResponseOutput",
           "ServerMetadata", "TensorMetadata"]
