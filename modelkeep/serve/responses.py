"""``SafeJSONResponse``: the server's JSON, always valid.

A NaN or an infinity (answered only when the server allows non-finite inputs) becomes ``null``, as the
CLI's ``--json`` does, instead of the bare ``NaN`` that JSON forbids (or a 500).
"""
from __future__ import annotations

import json
import math
from typing import Any

from fastapi.responses import JSONResponse


class SafeJSONResponse(JSONResponse):
    """JSON that is always valid: a NaN or infinity (served only with ``allow_nonfinite``) becomes null."""

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except ValueError:
            return json.dumps(_finite(content), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


__all__ = ["SafeJSONResponse"]
