"""Every error answers ``{"error": "<readable message>"}`` with the right status.

Core errors map to statuses by type; FastAPI's 422 validation errors become 400 with a
message naming the offending field. There is deliberately no handler for ``Exception``: a
server fault stays a 500 (and is logged by the server) instead of posing as a client error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskcast.core import (
    InvalidTransitionError,
    StaleRevisionError,
    StorageUnavailableError,
    TaskcastError,
    TaskConflictError,
    TaskNotFoundError,
    TaskTerminalError,
    UsageError,
)

from ._auth import AuthError, auth_error_response

__all__ = ["ApiError", "error_response", "install_error_handlers", "validation_message"]

logger = logging.getLogger(__name__)

# Union branches of request bodies are tagged; the tags mean nothing to a caller.
_HIDDEN_LOC = frozenset({"object", "array"})


class ApiError(Exception):
    """An HTTP error raised by the routes themselves (bad query, body too large, ...)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def error_response(status_code: int, message: str) -> Response:
    return Response(
        to_json({"error": message}), status_code=status_code, media_type="application/json"
    )


def _status_of(exc: TaskcastError) -> int:
    if isinstance(exc, TaskNotFoundError):
        return 404
    if isinstance(exc, TaskConflictError | InvalidTransitionError | StaleRevisionError):
        return 409
    if isinstance(exc, TaskTerminalError | UsageError):
        return 400
    if isinstance(exc, StorageUnavailableError):
        return 503
    return 500


def validation_message(errors: Sequence[Any]) -> str:
    """One readable line from pydantic/FastAPI error dicts."""
    parts: list[str] = []
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ())]
        source = loc[0] if loc and loc[0] in ("body", "query", "path", "header") else None
        path = [p for p in (loc[1:] if source else loc) if p not in _HIDDEN_LOC]
        msg = str(err.get("msg", "invalid value"))
        if source in ("query", "header", "path"):
            parts.append(f"Invalid {source} parameter {'.'.join(path)}: {msg}")
        elif path:
            parts.append(f"Invalid field {'.'.join(path)}: {msg}")
        else:
            parts.append(f"Invalid request body: {msg}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more errors")
    return "; ".join(parts) or "Invalid request"


async def _taskcast_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TaskcastError)
    status = _status_of(exc)
    if status >= 500:
        logger.error("request failed: %s %s: %s", request.method, request.url.path, exc.message)
    return error_response(status, exc.message)


async def _auth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    return auth_error_response(exc)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.message)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, validation_message(exc.errors()))


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = "Not found" if exc.status_code == 404 else str(exc.detail)
    response = error_response(exc.status_code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TaskcastError, _taskcast_error)
    app.add_exception_handler(AuthError, _auth_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
