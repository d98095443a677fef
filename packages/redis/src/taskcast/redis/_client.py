"""Creating redis-py clients with the settings this adapter relies on."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["MAX_CONNECTIONS", "POOL_TIMEOUT", "RESP_PROTOCOL", "command_client"]

RESP_PROTOCOL = 2
"""Pinned: the adapter parses RESP2 replies (pub/sub messages arrive as plain arrays)."""

MAX_CONNECTIONS = 64
"""Connections per client. A burst of requests waits for a free connection instead of
opening hundreds at once: on a saturated event loop a storm of new connections made
handshakes time out (1 in 6 SSE opens answered 503 with 256 opens in flight)."""

POOL_TIMEOUT = 20.0
"""Seconds a command waits for a free connection before it counts as an outage."""


def command_client(url: str, *, socket_timeout: float | None, connect_timeout: float) -> Redis:
    """A client for commands and scripts.

    Retries are off: a commit whose reply was lost may have run, and a blind retry would
    store its events twice. The caller sees the failure (``StorageUnavailableError``) and
    decides, e.g. by re-publishing with an idempotency key.
    """
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_TIMEOUT,
        protocol=RESP_PROTOCOL,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )
    client: Redis = Redis.from_pool(pool)
    return client
