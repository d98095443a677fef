"""Errors raised by the server SDK.

Exception tree::

    TaskcastHTTPError               any failed call; ``status_code`` is None when no response came
    ├── TaskcastTransportError      the request never got an answer (connect, read, timeout)
    ├── BadRequestError             400: the server rejected the input
    ├── UnauthorizedError           401: missing, invalid or expired token
    ├── ForbiddenError              403: the token lacks the scope or the task
    ├── NotFoundError               404: no such task (or blocked request)
    ├── ConflictError               409: invalid transition, duplicate task id
    ├── PayloadTooLargeError        413: request body over the server's limit
    ├── ServiceUnavailableError     503: a storage dependency is down
    └── ServerError                 any other 5xx

The SDK depends on nothing but httpx, so this root is its own rather than
``taskcast.core.TaskcastError``.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "BadRequestError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ServerError",
    "ServiceUnavailableError",
    "TaskcastHTTPError",
    "TaskcastTransportError",
    "UnauthorizedError",
    "error_from_response",
]


class TaskcastHTTPError(Exception):
    """A Taskcast call failed.

    Attributes:
        status_code: The HTTP status, or ``None`` when no response arrived.
        message: The server's ``error`` text (or a description of the failure).
        body: The decoded response body, when there was one.
    """

    def __init__(self, message: str, *, status_code: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.body = body

    def __str__(self) -> str:
        if self.status_code is None:
            return self.message
        return f"HTTP {self.status_code}: {self.message}"


class TaskcastTransportError(TaskcastHTTPError):
    """No response: the connection failed, was cut, or timed out (after any retries)."""


class BadRequestError(TaskcastHTTPError):
    """400: the server rejected the request's input."""


class UnauthorizedError(TaskcastHTTPError):
    """401: the token is missing, invalid or expired."""


class ForbiddenError(TaskcastHTTPError):
    """403: the token does not grant this scope or task."""


class NotFoundError(TaskcastHTTPError):
    """404: the task (or the blocked request) does not exist."""


class ConflictError(TaskcastHTTPError):
    """409: an invalid state transition, or a task id that already exists."""


class PayloadTooLargeError(TaskcastHTTPError):
    """413: the request body exceeds the server's limit."""


class ServiceUnavailableError(TaskcastHTTPError):
    """503: a storage dependency of the server is unavailable."""


class ServerError(TaskcastHTTPError):
    """Any other 5xx answer."""


_BY_STATUS: dict[int, type[TaskcastHTTPError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    503: ServiceUnavailableError,
}


def error_from_response(response: httpx.Response) -> TaskcastHTTPError:
    """The exception for a non-2xx response, carrying the server's ``error`` text."""
    status = response.status_code
    body: Any = None
    message = f"HTTP {status}"
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text:
            body = text
            message = text
    else:
        # The server answers {"error": "..."}; validation errors may carry an object.
        if isinstance(body, dict) and "error" in body:
            error = body["error"]
            message = error if isinstance(error, str) else str(error)
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else TaskcastHTTPError
    return cls(message, status_code=status, body=body)
