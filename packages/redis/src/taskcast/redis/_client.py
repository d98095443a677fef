"""Creating redis-py clients with the settings this adapter relies on."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["RESP_PROTOCOL", "command_client"]

RESP_PROTOCOL = 2
"""Pinned: the adapter parses RESP2 replies (pub/sub messages arrive as plain arrays)."""


def command_client(url: str, *, socket_timeout: float | None, connect_timeout: float) -> Redis:
    """A client for commands and scripts.

    Retries are off: a commit whose reply was lost may have run, and a blind retry would
    store its events twice. The caller sees the failure (``StorageUnavailableError``) and
    decides, e.g. by re-publishing with an idempotency key.
    """
    client: Redis = Redis.from_url(
        url,
        protocol=RESP_PROTOCOL,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )
    return client
