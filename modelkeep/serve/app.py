"""``create_app(settings)``: the FastAPI application of ``modelkeep serve``.

It loads the models named in the settings (``ModelTable``), mounts the V2 and V1 routers, the model pages
(``page``: ``/``, ``/models/{name}``, ``/static/``) and ``/metrics``,
and wraps everything in the serving middleware (body limit, access log, request metrics). Errors are
answered as ``{"error": "..."}``: a ``modelkeep.errors`` type by its status (``http_errors.status_for``),
the framework's own refusals (unknown route, wrong method, a bad query parameter) with their 4xx, and
anything else -- a bug -- with 500, logged with its traceback. CORS is off unless origins are given.
``app_from_environment`` is the factory uvicorn calls in each worker when there are several.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from .._version import __version__
from ..errors import ModelkeepError
from .http_errors import status_for
from .metrics import Metrics
from .middleware import ServingMiddleware, configure_access_log
from .responses import SafeJSONResponse
from .settings import ServeSettings
from .table import ModelTable

LOGGER = logging.getLogger("modelkeep.serve")


def create_app(settings: ServeSettings, *, table: ModelTable | None = None) -> FastAPI:
    """The app serving ``settings.sources`` (or an already loaded ``table``)."""
    from . import page, repository, v1, v2

    metrics = Metrics()
    table = table if table is not None else ModelTable.load(settings)
    table.on_batch = lambda name, rows, seconds: metrics.observe_batch(name, rows, seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        table.reopen()  # a no-op the first time; an app started again after a shutdown serves again
        follower = None
        if settings.follow_alias_seconds:
            follower = asyncio.get_running_loop().create_task(table.follow_aliases(settings.follow_alias_seconds))
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
            await table.close()

    # /openapi.json describes the API; the Swagger and ReDoc pages are off (they load scripts from a CDN)
    app = FastAPI(title="modelkeep serve", version=__version__, lifespan=lifespan,
                  default_response_class=SafeJSONResponse, docs_url=None, redoc_url=None)
    app.state.settings, app.state.table, app.state.metrics = settings, table, metrics
    app.include_router(v2.router)
    app.include_router(v1.router)
    if settings.management:  # the model-repository endpoints exist only when enabled (with keys: the settings)
        app.include_router(repository.router)
    app.include_router(page.router)  # GET / and /models/{name}: a page per model (static/ holds its script)
    app.add_api_route("/metrics", lambda: Response(metrics.render(), media_type=metrics.content_type),
                      methods=["GET"], include_in_schema=False)
    _add_error_handlers(app)
    _describe_security(app, settings)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(ServingMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics,
                       model_names=table.names)
    return app


def _describe_security(app: FastAPI, settings: ServeSettings) -> None:
    """The OpenAPI document declares both ways to send a key and marks the operations that need one: the
    management endpoints always, ``infer`` and ``predict`` when the server has inference keys."""
    from fastapi.openapi.utils import get_openapi

    from .auth import SECURED, SECURITY_SCHEMES

    def build() -> dict:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = document.setdefault("components", {})
            components["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in document["paths"].items():
                for operation in operations.values():
                    _hoist_definitions(operation, components.setdefault("schemas", {}))
                    if settings.api_keys and path.endswith(("/infer", "/predict")):
                        operation["security"] = SECURED
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


def _hoist_definitions(operation: dict, schemas: dict) -> None:
    """Move the ``$defs`` of a request body schema written by hand (``InferenceRequest``'s ``RequestInput``, ...)
    into ``components.schemas``, where their ``#/components/schemas/...`` references point. Left inside, the
    references dangle, and schemathesis silently generated no JSON body at all for ``infer``."""
    for content in ((operation.get("requestBody") or {}).get("content") or {}).values():
        for name, definition in (content.get("schema") or {}).pop("$defs", {}).items():
            schemas.setdefault(name, definition)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelkeepError)
    async def deliberate(request: Request, exc: ModelkeepError) -> JSONResponse:
        status = status_for(exc)
        if status is None:
            return await unexpected(request, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return SafeJSONResponse({"error": " ".join(str(exc).split())}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def framework(request: Request, exc: HTTPException) -> JSONResponse:
        return SafeJSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "request"
        return SafeJSONResponse({"error": f"{where}: {str(first.get('msg', 'invalid'))[:160]}"}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        LOGGER.error("unexpected %s answering %s %s", type(exc).__name__, request.method, request.url.path,
                     exc_info=exc)
        return SafeJSONResponse({"error": f"internal error ({type(exc).__name__}); this is a bug in modelkeep, "
                                          "please report it"}, status_code=500)


def app_from_environment() -> FastAPI:
    """The app of one worker, from the settings ``modelkeep serve`` put in the environment."""
    import os

    import torch

    settings = ServeSettings.from_environment()
    if os.environ.get("MODELKEEP_SERVE_ACCESS_LOG"):
        configure_access_log()
    if settings.workers > 1:  # N workers each using every core would fight over them: share the cores out
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    return create_app(settings)


__all__ = ["app_from_environment", "create_app"]
