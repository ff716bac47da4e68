"""API keys: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.

With no keys configured inference is open; health, metadata and metrics never need one. The management
endpoints always need one of their own keys (the settings refuse to enable them without): no key or an
unknown one is 401, an inference key is 403 (valid, but not for this). Keys are compared in constant time,
and a refusal never echoes what was sent.
"""
from __future__ import annotations

import hmac
from typing import Mapping, Sequence

from .http_errors import Forbidden, Unauthorized

#: the OpenAPI ``securitySchemes`` of both ways to present a key, and the ``security`` of a secured operation
#: (either one will do)
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "X-API-Key: KEY"},
}
SECURED = [{"bearer": []}, {"apiKey": []}]


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
    if not _matches(given, keys):
        raise Unauthorized("the API key is not valid for this server")


def require_management_key(headers: Mapping[str, str], keys: Sequence[str], inference_keys: Sequence[str]) -> None:
    """``Unauthorized`` without one of ``keys`` (never open: no keys means no access), ``Forbidden`` for a key
    that only opens inference."""
    given = presented_key(headers)
    if given is None:
        raise Unauthorized("the management endpoints need a management key: send 'Authorization: Bearer KEY' "
                           "or 'X-API-Key: KEY'")
    if keys and _matches(given, keys):
        return
    if inference_keys and _matches(given, inference_keys):
        raise Forbidden("this key is for inference only; the management endpoints need a management key")
    raise Unauthorized("the management key is not valid for this server")


def _matches(given: str, keys: Sequence[str]) -> bool:
    matched = False
    for key in keys:  # every key compared, so the time does not tell which one came close
        matched |= hmac.compare_digest(given.encode(), key.encode())
    return matched


__all__ = ["SECURED", "SECURITY_SCHEMES", "presented_key", "require_key", "require_management_key"]
