"""Errors raised by the subscriber client.

Exception tree::

    TaskcastClientError            root
    ├── TaskcastHTTPError          the server refused the subscription (``status_code``, ``message``)
    │   ├── UnauthorizedError      401, after any token refresh
    │   ├── ForbiddenError         403
    │   └── NotFoundError          404: no such task (or it was deleted while disconnected)
    └── StreamInterruptedError     reconnecting gave up (``ReconnectConfig.max_attempts``)

The client depends on nothing but httpx, so this root is its own rather than
``taskcast.core.TaskcastError``.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "ForbiddenError",
    "NotFoundError",
    "StreamInterruptedError",
    "TaskcastClientError",
    "TaskcastHTTPError",
    "UnauthorizedError",
    "error_from_response",
]


class TaskcastClientError(Exception):
    """Root of the client's errors."""


class TaskcastHTTPError(TaskcastClientError):
    """The server answered the subscription with an error status.

    Attributes:
        status_code: The HTTP status.
        message: The server's ``error`` text, or ``"HTTP <status>"``.
        body: The decoded response body, when there was one.
    """

    def __init__(self, message: str, *, status_code: int, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.body = body

    def __str__(self) -> str:
        return f"HTTP {self.status_code}: {self.message}"

    @property
    def retryable(self) -> bool:
        """Whether a later attempt may succeed (server errors and throttling)."""
        return self.status_code >= 500 or self.status_code in (408, 429)


class UnauthorizedError(TaskcastHTTPError):
    """401: the token is missing, invalid or expired (and no refresh produced a good one)."""


class ForbiddenError(TaskcastHTTPError):
    """403: the token does not grant ``event:subscribe`` on this task."""


class NotFoundError(TaskcastHTTPError):
    """404: the task does not exist."""


class StreamInterruptedError(TaskcastClientError):
    """The connection kept failing and the reconnect budget ran out.

    The last underlying failure is chained as ``__cause__``.
    """


_BY_STATUS: dict[int, type[TaskcastHTTPError]] = {
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
}


def error_from_response(response: httpx.Response) -> TaskcastHTTPError:
    """The exception for a non-2xx answer; the body must have been read."""
    status = response.status_code
    body: Any = None
    message = f"HTTP {status}"
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text:
            body = message = text
    else:
        if isinstance(body, dict) and "error" in body:
            error = body["error"]
            message = error if isinstance(error, str) else str(error)
    return _BY_STATUS.get(status, TaskcastHTTPError)(message, status_code=status, body=body)
