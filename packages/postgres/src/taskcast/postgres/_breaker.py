"""A circuit breaker in front of PostgreSQL: fail fast during an outage, retry with one probe.

Without it every archive read during an outage waited the pool's whole timeout (10 s), and
the first one after PostgreSQL came back waited on the pool's growing reconnection backoff.
Breaker libraries wrap a call; this one must also cut short calls already queued for a
connection when a connection attempt fails, hence :meth:`CircuitBreaker.wait_tripped`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """``closed`` → (a failure) → ``open`` → (``retry_seconds`` later) → ``half-open``.

    While open, :meth:`allow` refuses every call. The first call after ``retry_seconds`` is
    let through as the probe (``half-open``; other calls are still refused): its success
    closes the breaker, its failure opens it again for another ``retry_seconds``.
    """

    def __init__(self, retry_seconds: float) -> None:
        self.retry_seconds = retry_seconds
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._last_error: str | None = None
        # Set when the breaker trips; a fresh one for every closed or half-open period, so
        # a waiter only hears of a trip that happened while it waited.
        self._tripped = asyncio.Event()

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def last_error(self) -> str | None:
        """The failure that opened the breaker (None while closed)."""
        return self._last_error

    def reset(self) -> None:
        """Closed, with a fresh event (the store may be reopened in another event loop)."""
        self._state = "closed"
        self._last_error = None
        self._tripped = asyncio.Event()

    def allow(self) -> bool:
        """Whether a call may go ahead now (in ``half-open`` it becomes the probe)."""
        if self._state == "closed":
            return True
        if self._state == "open" and time.monotonic() - self._opened_at >= self.retry_seconds:
            self._state = "half-open"
            self._tripped = asyncio.Event()
            return True
        return False

    def succeeded(self) -> None:
        if self._state != "closed":
            self._state = "closed"
            self._last_error = None
            self._tripped = asyncio.Event()

    def failed(self, error: str) -> None:
        self._state = "open"
        self._opened_at = time.monotonic()
        self._last_error = error
        self._tripped.set()

    def abandoned(self) -> None:
        """A probe ended without an answer (cancelled): the next call probes again."""
        if self._state == "half-open":
            self._state = "open"
            self._opened_at = 0.0

    async def wait_tripped(self) -> None:
        """Return when the breaker trips (a failure while closed or half-open)."""
        await self._tripped.wait()
