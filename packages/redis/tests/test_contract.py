"""The core contract suites, run against Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskcast.core.testing import (
    BroadcastContract,
    EventCacheContract,
    ReleasableStoreContract,
    ShortTermStoreContract,
)
from taskcast.redis import RedisShortTermStore

# The `store` and `broadcast` fixtures come from conftest.py.


class TestRedisShortTermStore(ShortTermStoreContract):
    pass


class TestRedisBroadcast(BroadcastContract):
    pass


class TestRedisReleasableStore(ReleasableStoreContract):
    pass


class TestRedisEventCache(EventCacheContract):
    @pytest.fixture
    async def uncached_store(
        self, redis_url: str, prefix: str
    ) -> AsyncIterator[RedisShortTermStore]:
        s = RedisShortTermStore(redis_url, prefix=prefix, cache_bytes=0)
        await s.open()
        yield s
        await s.close()
