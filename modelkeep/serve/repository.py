"""The management endpoints: the subset of Triton's model-repository extension that fits a fixed set of models.

``POST /v2/repository/index`` lists every name given at start-up with its version and state (``READY`` or
``UNAVAILABLE``); ``{"ready": true}`` keeps only the loaded ones. ``POST /v2/repository/models/{name}/load``
(re)loads a name *from its own start-up source* -- the file read again (and, with ``--require-signature``,
verified again), or the registry alias resolved again -- and ``.../unload`` stops serving it (queued requests
finish first). A name not given at start-up is a 404, and a load request cannot name a file, a config or any
other parameter: the request body can only be empty or ``{}``, so the API never loads from a path a client
chose. Every call needs a management key (``auth.require_management_key``); the router is mounted only when
the settings enable it, and the settings refuse to enable it without a key.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import DataError
from .auth import SECURED, require_management_key
from .protocol import ErrorResponse
from .responses import SafeJSONResponse

EXTENSION = "model_repository"
router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413)}


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ready: bool | None = None


class UnloadParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unload_dependents: bool | None = None  # Triton's; a served model has no dependents here


class LoadRequest(BaseModel):
    """Triton's load may carry a config or files to load instead; this server loads only its own sources."""

    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] | None = Field(default=None, max_length=0)


class UnloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: UnloadParameters | None = None


class IndexEntry(BaseModel):
    name: str
    version: str
    state: str  # READY or UNAVAILABLE
    reason: str


def _body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}},
            "security": SECURED}


async def _parse(request: Request, model: type[BaseModel], what: str) -> Any:
    """The request's optional JSON body as ``model`` (an empty body is ``{}``), after the key is checked."""
    settings = request.app.state.settings
    require_management_key(request.headers, settings.management_keys, settings.api_keys)
    text = await request.body()
    try:
        return model.model_validate_json(text or b"{}")
    except ValidationError as exc:
        from .v2 import describe_validation

        message = describe_validation(exc, what)
        if model is LoadRequest and "parameters" in message:
            message += " (this server loads each name only from the source it was given at start-up)"
        raise DataError(message) from None


@router.post("/v2/repository/index", response_model=list[IndexEntry], responses=ERRORS,
             openapi_extra=_body(IndexRequest))
async def repository_index(request: Request) -> SafeJSONResponse:
    parsed = await _parse(request, IndexRequest, "repository index request")
    entries = request.app.state.table.index()
    if parsed.ready:
        entries = [entry for entry in entries if entry["state"] == "READY"]
    return SafeJSONResponse(entries)


@router.post("/v2/repository/models/{name}/load", responses=ERRORS, openapi_extra=_body(LoadRequest))
async def repository_load(request: Request, name: str) -> SafeJSONResponse:
    await _parse(request, LoadRequest, "load request")
    served = await request.app.state.table.load_name(name)
    return SafeJSONResponse({"name": served.name, "version": served.version})


@router.post("/v2/repository/models/{name}/unload", responses=ERRORS, openapi_extra=_body(UnloadRequest))
async def repository_unload(request: Request, name: str) -> SafeJSONResponse:
    await _parse(request, UnloadRequest, "unload request")
    await request.app.state.table.unload_name(name)
    return SafeJSONResponse({})


__all__ = ["EXTENSION", "router"]
