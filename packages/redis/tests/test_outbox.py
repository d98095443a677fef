"""The webhook outbox contract on Redis, plus what is specific to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskcast.core import StorageUnavailableError, now_ms
from taskcast.core.testing import WebhookOutboxContract
from taskcast.core.testing._webhook_contract import delivery
from taskcast.redis import RedisShortTermStore, RedisWebhookOutbox

pytestmark = pytest.mark.anyio


class TestRedisWebhookOutbox(WebhookOutboxContract):
    @pytest.fixture
    async def outbox(self, redis_url: str, prefix: str) -> AsyncIterator[RedisWebhookOutbox]:
        box = RedisWebhookOutbox(redis_url, prefix=prefix)
        await box.open()
        yield box
        await box.close()


async def test_store_outbox_shares_client_and_prefix(store: RedisShortTermStore) -> None:
    box = store.webhook_outbox()
    await box.open()
    base = now_ms()
    item = delivery("t1", base)
    await box.enqueue([item])
    await box.close()  # the store's client stays open
    other = RedisWebhookOutbox(store.client, prefix=store.keys.prefix)
    (claimed,) = await other.claim_due(base, 5, 1000)
    assert claimed.id == item.id
    raw = await store.client.hget(f"{store.keys.prefix}:webhook:{item.id}", "lease")
    assert raw.decode() == claimed.lease


async def test_purge_handles_many_and_stale_members(redis_url: str, prefix: str) -> None:
    box = RedisWebhookOutbox(redis_url, prefix=prefix)
    base = now_ms()
    items = [delivery("t", base) for _ in range(3)]
    await box.enqueue(items)
    for d in await box.claim_due(base, 10, 1000):
        assert await box.complete(d.id, d.lease, now=base, attempts=1, response_status=200)
    # A stale member of the schedule (its hash is gone) is dropped by the next claim.
    await box._client.zadd(f"{prefix}:webhooks:due", {"ghost": base})
    await box._client.zadd(f"{prefix}:webhooks:done", {"ghost2": base})
    assert await box.claim_due(base, 10, 1000) == []
    assert await box.purge(base + 1) == 4
    assert await box.list_for_task("t", 10) == []
    await box._client.zadd(f"{prefix}:webhooks:task:t", {"ghost3": base})
    assert await box.list_for_task("t", 10) == []
    await box.close()


async def test_unreachable_redis_is_storage_unavailable() -> None:
    box = RedisWebhookOutbox("redis://127.0.0.1:1/0", connect_timeout=0.5)
    with pytest.raises(StorageUnavailableError):
        await box.open()
    with pytest.raises(StorageUnavailableError):
        await box.claim_due(0, 1, 1)
    await box.close()
