"""API keys for the inference endpoints: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.

With no keys configured inference is open; health, metadata and metrics never need one. Keys are
compared in constant time, and a refusal never echoes what was sent.
"""
from __future__ import annotations

import hmac
from typing import Mapping, Sequence

from .http_errors import Unauthorized


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries, if any."""
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def require_key(headers: Mapping[str, str], keys: Sequence[str]) -> None:
    """``Unauthorized`` unless ``keys`` is empty or the request carries one of them."""
    if not keys:
        return
    given = presented_key(headers)
    if given is None:
        raise Unauthorized("this endpoint needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
    matched = False
    for key in keys:  # every key compared, so the time does not tell which one came close
        matched |= hmac.compare_digest(given.encode(), key.encode())
    if not matched:
        raise Unauthorized("the API key is not valid for this server")


__all__ = ["presented_key", "require_key"]
