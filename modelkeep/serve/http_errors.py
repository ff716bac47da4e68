"""The errors a request can meet, and the HTTP status each one answers with.

Every error is a ``modelkeep.errors`` type; ``status_for`` maps it to a 4xx. Anything else reaching the
app's catch-all is a bug in modelkeep, answered 500 and logged with its traceback.
"""
from __future__ import annotations

from ..errors import ConfigError, DataError, FormatError, ModelkeepError, ModelNotFoundError


class RequestTooLarge(DataError):
    """The request body (or its rows) is larger than the server accepts: 413."""


class Unauthorized(ModelkeepError, PermissionError):
    """An inference endpoint was called without a valid API key: 401."""


class Forbidden(ModelkeepError, PermissionError):
    """A valid key that does not open this endpoint (an inference key on a management endpoint): 403."""


def status_for(exc: BaseException) -> int | None:
    """The HTTP status of a deliberate error, or ``None`` for anything unexpected (a bug: 500)."""
    if isinstance(exc, RequestTooLarge):
        return 413
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, ModelNotFoundError):
        return 404
    if isinstance(exc, (DataError, ConfigError, FormatError)):
        return 400
    return None


__all__ = ["Forbidden", "RequestTooLarge", "Unauthorized", "status_for"]
