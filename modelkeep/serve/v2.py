"""The Open Inference Protocol (KServe V2) endpoints: health, server and model metadata, readiness, infer.

``infer`` takes the model's raw input (the saved preprocessing is applied here, as ``predict`` and the
ONNX export do) and answers the network's outputs by the signature's names plus ``probabilities`` for a
classifier; ``outputs`` in the request selects among them. Requests are parsed and checked before they
are queued (``inputs.v2_rows``); the work happens in the model's batcher.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from .._version import __version__
from ..errors import DataError
from . import binary
from .auth import require_key
from .inputs import v2_rows
from .models import ServedModel
from .protocol import (NUMPY_TO_V2, ErrorResponse, InferenceRequest, InferenceResponse, ModelMetadata,
                       ReadyResponse, ResponseOutput, ServerMetadata)
from .responses import SafeJSONResponse

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413)}
# The body is the request's JSON, or (the binary tensor extension) that JSON followed by raw little-endian
# tensor bytes, the header saying where the JSON ends.
INFER_BODY = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    "parameters": [{"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                    "description": "binary tensor extension: the length in bytes of the JSON at the body's start; "
                                   "the tensors whose parameters give binary_data_size follow it",
                    "schema": {"type": "integer", "minimum": 0}}],
    "responses": {"200": {"description": "the outputs, as JSON or (binary tensor extension) JSON and raw bytes",
                          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}}


@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(request: Request) -> dict[str, bool]:
    return {"ready": bool(request.app.state.table.models())}


@router.get("/v2", response_model=ServerMetadata)
async def server_metadata(request: Request) -> ServerMetadata:
    extensions = [binary.EXTENSION] + (["model_repository"] if request.app.state.settings.management else [])
    return ServerMetadata(name="modelkeep", version=__version__, extensions=extensions)


@router.get("/v2/models/{name}", response_model=ModelMetadata, responses=ERRORS)
@router.get("/v2/models/{name}/versions/{version}", response_model=ModelMetadata, responses=ERRORS)
async def model_metadata(request: Request, name: str, version: str | None = None) -> ModelMetadata:
    served = request.app.state.table.get(name, version)
    return ModelMetadata(name=served.name, versions=[served.version], platform=served.platform,
                         inputs=[t.metadata() for t in served.inputs], outputs=[t.metadata() for t in served.outputs])


@router.get("/v2/models/{name}/ready", response_model=ReadyResponse, responses=ERRORS)
@router.get("/v2/models/{name}/versions/{version}/ready", response_model=ReadyResponse, responses=ERRORS)
async def model_ready(request: Request, name: str, version: str | None = None) -> ReadyResponse:
    served = request.app.state.table.get(name, version)
    return ReadyResponse(name=served.name, ready=True)


def _path_parameters(*names: str) -> dict[str, Any]:
    """``infer`` reads its path parameters from the request itself (FastAPI's validation of two strings cost about
    a fifth of the server's time per request), so the document lists them here."""
    listed = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names]
    return {**INFER_BODY, "parameters": [*listed, *INFER_BODY["parameters"]]}


@router.post("/v2/models/{name}/infer", response_model=InferenceResponse, responses=ERRORS,
             openapi_extra=_path_parameters("name"), response_model_exclude_none=True)
@router.post("/v2/models/{name}/versions/{version}/infer", response_model=InferenceResponse, responses=ERRORS,
             openapi_extra=_path_parameters("name", "version"), response_model_exclude_none=True)
async def infer(request: Request) -> InferenceResponse | Response:
    state = request.app.state
    name, version = request.path_params["name"], request.path_params.get("version")
    require_key(request.headers, state.settings.api_keys)
    state.table.get(name, version)  # an unknown model is a 404 before its body is read
    document, payload = binary.split_body(await request.body(), request.headers.get(binary.HEADER))
    try:
        parsed = InferenceRequest.model_validate_json(document)
    except ValidationError as exc:
        raise DataError(describe_validation(exc, "inference request")) from None
    served = state.table.get(name, version)  # again: an alias may have moved while the body was read
    wanted = _wanted_outputs(parsed, served)
    pieces = binary.binary_inputs(parsed, payload)
    rows = v2_rows(parsed, served, max_rows=state.settings.max_request_rows, binary=pieces[0])
    results = await served.batchers["infer"].submit(rows)
    response = InferenceResponse(model_name=served.name, model_version=served.version, id=parsed.id,
                                 outputs=[_tensor(output, results[output]) for output in wanted])
    as_bytes = binary.binary_outputs(parsed, wanted)
    if not as_bytes:  # already a checked InferenceResponse: skip the framework's second validation
        return SafeJSONResponse(response.model_dump(exclude_none=True))
    body, header_length = binary.render(response, results, as_bytes)
    return Response(body, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(header_length)})


def _wanted_outputs(parsed: InferenceRequest, served: ServedModel) -> list[str]:
    names = [t.name for t in served.outputs]
    if not parsed.outputs:
        return names
    unknown = [o.name for o in parsed.outputs if o.name not in names]
    if unknown:
        raise DataError(f"model {served.name!r} has no output {unknown[0][:60]!r}; its outputs are "
                        f"{', '.join(map(repr, names))}")
    return [o.name for o in parsed.outputs]


def _tensor(name: str, values: np.ndarray) -> ResponseOutput:
    values = np.asarray(values)
    flat: list[Any] = values.reshape(-1).tolist()
    if values.dtype.kind == "f" and not np.isfinite(values).all():  # only with --allow-nonfinite: JSON null
        flat = [v if np.isfinite(v) else None for v in flat]
    return ResponseOutput(name=name, shape=list(values.shape), datatype=NUMPY_TO_V2.get(values.dtype.name, "FP32"),
                          data=flat)


def describe_validation(exc: ValidationError, what: str) -> str:
    """A pydantic error in a few words: where in the body, and what was wrong (never the body itself)."""
    errors = exc.errors(include_input=False, include_url=False)
    if errors and errors[0]["type"] == "json_invalid":
        return f"the body is not valid JSON ({errors[0]['msg'].removeprefix('Invalid JSON: ')[:120]})"
    parts = []
    for error in errors[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg'][:120]}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"malformed {what}: " + "; ".join(parts) + more


__all__ = ["describe_validation", "router"]
