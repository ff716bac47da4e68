"""KServe V1's ``predict``: raw rows in, class names and probabilities (or values) out.

``POST /v1/models/{name}/predict`` takes ``{"instances": [row, ...]}`` as JSON, or a ``multipart/form-data``
upload in the field ``file`` (an image, or a CSV table of numbers). The rows go through ``Model.predict``
(the model's saved pre- and post-processing) in the model's batcher; each prediction is the record
``Prediction.to_records`` gives, its ``top`` list cut to ``?top=K`` classes (default 5).
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from ..errors import DataError
from .auth import require_key
from .inputs import v1_rows
from .protocol import PredictRequest, PredictResponse, ReadyResponse
from .uploads import upload_rows
from .v2 import ERRORS, describe_validation

router = APIRouter()
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}}}}}


@router.get("/v1/models/{name}", response_model=ReadyResponse, responses=ERRORS)
async def v1_model(request: Request, name: str) -> ReadyResponse:
    served = request.app.state.table.get(name)
    return ReadyResponse(name=served.name, ready=True)


@router.post("/v1/models/{name}/predict", response_model=PredictResponse, responses=ERRORS,
             openapi_extra=PREDICT_BODY)
async def predict(request: Request, name: str, top: int = Query(5, ge=1, le=1000)) -> PredictResponse:
    state = request.app.state
    require_key(request.headers, state.settings.api_keys)
    state.table.get(name)  # an unknown model is a 404 before its body is read
    max_rows = state.settings.max_request_rows
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        content = await _uploaded(request)
        served = state.table.get(name)  # after every await: an alias may have moved meanwhile
        rows = upload_rows(content, served, max_rows=max_rows)
    else:
        try:
            parsed = PredictRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise DataError(describe_validation(exc, "predict request")) from None
        served = state.table.get(name)
        rows = v1_rows(parsed.instances, served, max_rows=max_rows)
    results = await served.batchers["predict"].submit(rows)
    records = [_cut(record, top) for record in results["records"]]
    return PredictResponse(model_name=served.name, model_version=served.version, predictions=records)


async def _uploaded(request: Request) -> bytes:
    form = await request.form(max_files=1, max_fields=8)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise DataError("a multipart predict request carries its file in the field 'file'")
    return await upload.read()


def _cut(record: dict[str, Any], top: int) -> dict[str, Any]:
    ranked = record.get("top")
    if ranked is None:
        return record
    if ranked and isinstance(ranked[0], list):  # a sequence: a ranking per position
        return {**record, "top": [position[:top] for position in ranked]}
    return {**record, "top": ranked[:top]}


__all__ = ["router"]
