"""The ASGI layer around the app: the request body limit, enforced while the body is read, and one access-log
line plus request metrics per request.

A request whose ``Content-Length`` is over the limit is answered 413 before any of its body is read; one
that sends more than it declared, or declares nothing (chunked), is cut off the moment the limit is passed:
``receive`` raises ``RequestTooLarge``, which the app's error handler (or this layer, if the response has
not started) turns into 413. The access log is one JSON object per line on the ``modelkeep.serve.access``
logger; it never records headers (they may carry API keys) or bodies.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Callable

from .http_errors import RequestTooLarge
from .metrics import Metrics

ACCESS_LOGGER = logging.getLogger("modelkeep.serve.access")


class ServingMiddleware:
    def __init__(self, app: Any, *, max_body_bytes: int, metrics: Metrics,
                 model_names: Callable[[], frozenset[str]]) -> None:
        self.app, self.max_body_bytes, self.metrics, self.model_names = app, max_body_bytes, metrics, model_names

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, state = time.perf_counter(), {"status": 500, "started": False, "bytes": 0}

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        async def receiving() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                if state["bytes"] > self.max_body_bytes:
                    raise RequestTooLarge(self._too_large())
            return message

        try:
            if self._declared(scope) > self.max_body_bytes:
                await _send_error(sending, 413, self._too_large())
            else:
                await self.app(scope, receiving, sending)
        except RequestTooLarge as exc:
            if state["started"]:
                raise
            await _send_error(sending, 413, str(exc))
        finally:
            self._record(scope, state, time.perf_counter() - started)

    def _too_large(self) -> str:
        return f"the request body is larger than this server accepts ({self.max_body_bytes:,} bytes)"

    @staticmethod
    def _declared(scope: dict) -> int:
        for key, value in scope.get("headers") or ():
            if key == b"content-length":
                return int(value) if value.isdigit() else 0
        return 0

    def _record(self, scope: dict, state: dict, seconds: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        name = (scope.get("path_params") or {}).get("name")
        model = name if name in self.model_names() else ""
        self.metrics.observe_request(endpoint, model, state["status"], seconds)
        if ACCESS_LOGGER.isEnabledFor(logging.INFO):
            client = scope.get("client") or ("", 0)
            ACCESS_LOGGER.info(json.dumps({
                "time": round(time.time(), 3), "client": client[0], "method": scope.get("method"),
                "path": str(scope.get("path", ""))[:200], "endpoint": endpoint, "model": model,
                "status": state["status"], "bytes_in": state["bytes"], "duration_ms": round(seconds * 1000, 3)}))


async def _send_error(send: Callable, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def configure_access_log(stream=None) -> None:  # noqa: ANN001 - a text stream, stderr by default
    """One JSON object per line on ``stream`` for every request (once per process)."""
    if any(getattr(h, "_modelkeep_access", False) for h in ACCESS_LOGGER.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._modelkeep_access = True  # type: ignore[attr-defined]
    ACCESS_LOGGER.addHandler(handler)
    ACCESS_LOGGER.setLevel(logging.INFO)
    ACCESS_LOGGER.propagate = False


__all__ = ["ACCESS_LOGGER", "ServingMiddleware", "configure_access_log"]
