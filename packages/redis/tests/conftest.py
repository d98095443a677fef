"""Fixtures: a real Redis (TASKCAST_TEST_REDIS_URL), a unique key prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from taskcast.redis import ReconnectBackoff, RedisBroadcast, RedisShortTermStore

REDIS_URL = os.environ.get("TASKCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis not reachable at {REDIS_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        client.close()
    return REDIS_URL


def delete_prefix(url: str, prefix: str) -> None:
    """SCAN + DEL of one prefix's keys, nothing else."""
    client = redis.Redis.from_url(url)
    try:
        batch = [key for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(batch), 500):
            client.delete(*batch[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = "tctest-" + uuid.uuid4().hex
    yield value
    delete_prefix(redis_url, value)


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisShortTermStore]:
    s = RedisShortTermStore(redis_url, prefix=prefix)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def other_store(redis_url: str, prefix: str) -> AsyncIterator[RedisShortTermStore]:
    """A second store on the same prefix: another server process, as far as Redis knows."""
    s = RedisShortTermStore(redis_url, prefix=prefix)
    await s.open()
    yield s
    await s.close()


FAST_BACKOFF = ReconnectBackoff(base=0.05, cap=0.4)


@pytest.fixture
async def broadcast(redis_url: str, prefix: str) -> AsyncIterator[RedisBroadcast]:
    b = RedisBroadcast(redis_url, prefix=prefix, backoff=FAST_BACKOFF)
    await b.open()
    yield b
    await b.close()
