"""Waiting for Redis and PostgreSQL before ``taskcast start`` serves.

A dependency that is still starting (a container started with the server, a failover) is
waited for; one that stays away for ``startup_timeout_seconds`` is one ``taskcast:`` line
and exit status 1, instead of a server that starts anyway and logs warnings for ever
(PostgreSQL) or fails after the driver's own timeouts (Redis). Malformed URLs never get
here: the settings refuse them (exit 2).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from taskcast.core import redact_url

from ._errors import StartupError
from ._settings import TaskcastSettings

__all__ = ["wait_for_dependencies"]

logger = logging.getLogger("taskcast.cli")

# Each attempt is bounded on its own, so one hanging connect cannot overrun the budget.
_ATTEMPT_SECONDS = 5.0
_RETRY_SECONDS = 1.0


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return text or type(exc).__name__


async def _ping_redis(url: str, timeout: float) -> None:
    from redis.asyncio import Redis  # imported before the first attempt (see _wait_all)

    client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _ping_postgres(url: str, timeout: float) -> None:
    import psycopg

    # connect_timeout is whole seconds (libpq ignores values below 2).
    conn = await psycopg.AsyncConnection.connect(
        url, autocommit=True, connect_timeout=max(2, int(timeout))
    )
    try:
        await conn.execute("SELECT 1")
    finally:
        await conn.close()


async def _wait(
    name: str,
    where: str,
    ping: Callable[[float], Awaitable[None]],
    budget: float,
) -> None:
    deadline = time.monotonic() + budget
    attempts = 0
    while True:
        attempts += 1
        left = deadline - time.monotonic()
        # Even the last (or only, with a budget of 0) attempt gets time to connect.
        attempt = max(2.0, min(_ATTEMPT_SECONDS, left))
        try:
            await asyncio.wait_for(ping(attempt), timeout=attempt + 1)
        except Exception as exc:
            reason = _reason(exc)
            if time.monotonic() + _RETRY_SECONDS >= deadline:
                raise StartupError(
                    f"cannot reach {name} ({where}) within {budget:g} s "
                    f"(startupTimeoutSeconds): {reason}"
                ) from None
            if attempts == 1:
                # One line, then quiet retries: a wait is not a flood of warnings.
                logger.warning(
                    "%s (%s) is not reachable yet: %s; retrying for up to %g s",
                    name,
                    where,
                    reason,
                    budget,
                )
            else:
                logger.debug("%s attempt %d failed: %s", name, attempts, reason)
            await asyncio.sleep(_RETRY_SECONDS)
            continue
        if attempts > 1:
            logger.info("%s (%s) is reachable", name, where)
        return


async def _wait_all(settings: TaskcastSettings) -> None:
    budget = settings.startup_timeout_seconds
    redis_url = settings.redis_url if settings.storage == "redis" else None
    postgres_url = settings.long_term_url
    waits = []
    # Imported here, outside the attempts' time limits (an import can take seconds).
    if redis_url:
        import redis.asyncio  # noqa: F401
    if postgres_url:
        import psycopg  # noqa: F401
    if redis_url:
        waits.append(
            _wait(
                "Redis",
                redact_url(redis_url),
                lambda timeout: _ping_redis(redis_url, timeout),
                budget,
            )
        )
    if postgres_url:
        from taskcast.postgres import describe_url

        waits.append(
            _wait(
                "PostgreSQL",
                describe_url(postgres_url),
                lambda timeout: _ping_postgres(postgres_url, timeout),
                budget,
            )
        )
    # Both at once: the budget is the whole wait, not one per dependency.
    await asyncio.gather(*waits)


def wait_for_dependencies(settings: TaskcastSettings) -> None:
    """Return once Redis and PostgreSQL (those configured) answer.

    Raises:
        StartupError: One did not answer within ``settings.startup_timeout_seconds``.
    """
    if (settings.storage == "redis" and settings.redis_url) or settings.long_term_url:
        asyncio.run(_wait_all(settings))
