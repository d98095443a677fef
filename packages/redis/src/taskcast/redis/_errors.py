"""Mapping redis-py failures to :class:`~taskcast.core.StorageUnavailableError`."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from redis import exceptions as rx
from taskcast.core import StorageUnavailableError

__all__ = ["DEPENDENCY", "TRANSIENT_ERRORS", "error_kind", "guard", "refusal", "unavailable"]

DEPENDENCY: Final = "redis"

TRANSIENT_ERRORS: Final = (rx.ConnectionError, rx.TimeoutError, OSError, TimeoutError)
"""Errors that mean "Redis cannot be reached right now" rather than a bug."""

# Server replies that refuse a command because the server is not in a state to take it
# (e.g. MISCONF: persistence is failing, so writes are refused — an outage, not a bug).
_UNAVAILABLE_REPLIES: Final = ("MISCONF", "MASTERDOWN", "NOREPLICAS", "OOM", "BUSY")


def error_kind(exc: BaseException) -> str:
    """One of the reference's error kinds for a failure (``/health/detail`` vocabulary)."""
    if isinstance(exc, rx.AuthenticationError):
        return "authentication"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (rx.TimeoutError, TimeoutError, socket.timeout)):
            return "timeout"
        if isinstance(seen, ConnectionRefusedError):
            return "connection_refused"
        if isinstance(seen, (ConnectionResetError, BrokenPipeError)):
            return "connection_reset"
        if isinstance(seen, socket.gaierror):
            return "dns"
        text = str(seen)
        if "Connection refused" in text:
            return "connection_refused"
        if "Connection reset" in text:
            return "connection_reset"
        if "closed by server" in text or "Connection closed" in text:
            return "connection_closed"
        seen = seen.__cause__ or seen.__context__
    return "unavailable"


def unavailable(exc: BaseException) -> StorageUnavailableError:
    return StorageUnavailableError(DEPENDENCY, error_kind(exc))


def _reply_text(exc: rx.ResponseError) -> str:
    """Redis's reply with its error code, without the script location of a Lua error."""
    text = str(exc)
    # redis-py strips the code of the replies it has a class for; put it back.
    if isinstance(exc, rx.OutOfMemoryError) and not text.startswith("OOM"):
        text = f"OOM {text}"
    elif isinstance(exc, rx.ReadOnlyError) and not text.startswith("READONLY"):
        text = f"READONLY {text}"
    return text.split(" script: ", 1)[0].rstrip(".")


def refusal(exc: rx.ResponseError) -> StorageUnavailableError | None:
    """The error for a reply refusing a write because of the server's state, else None.

    The message carries Redis's own reason: a client must be able to tell "Redis is full"
    (free memory or raise ``maxmemory``) from "Redis is down".
    """
    text = _reply_text(exc)
    if text.startswith("OOM"):
        return StorageUnavailableError(
            DEPENDENCY, "out_of_memory", f"redis is out of memory ({text})"
        )
    if text.startswith(("READONLY", *_UNAVAILABLE_REPLIES)):
        return StorageUnavailableError(DEPENDENCY, "refused", f"redis refuses writes ({text})")
    return None


@contextmanager
def guard() -> Iterator[None]:
    """Re-raise connection-level failures and refused writes as
    :class:`StorageUnavailableError`."""
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise unavailable(exc) from exc
    except rx.ResponseError as exc:
        error = refusal(exc)
        if error is not None:
            raise error from exc
        raise
