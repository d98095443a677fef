"""``RedisWebhookOutbox``: webhook deliveries queued in Redis, claimed under leases.

=====================================  =====  ===============================================
key                                    type   content
=====================================  =====  ===============================================
``p:webhook:{deliveryId}``             hash   ``data`` (storage JSON), ``lease``, ``next``
``p:webhooks:due``                     zset   pending delivery ids scored by next attempt (ms)
``p:webhooks:task:{taskId}``           zset   the task's delivery ids scored by creation (ms)
``p:webhooks:done``                    zset   finished delivery ids scored by finish time
=====================================  =====  ===============================================

Claims, outcomes and purges are Lua scripts (``lua/outbox_*.lua``), so processes sharing the
Redis never hold live leases on the same delivery. While a delivery is leased, the hash's
``lease`` and ``next`` fields are authoritative over the copy inside ``data``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final

from redis.asyncio import Redis
from taskcast.core import LeaseSettlingOutbox, WebhookDelivery

from ._client import command_client
from ._codec import dumps
from ._errors import guard
from ._scripts import script_source

__all__ = ["RedisWebhookOutbox"]

_PURGE_BATCH: Final = 1000


class RedisWebhookOutbox(LeaseSettlingOutbox):
    """:class:`taskcast.core.WebhookOutbox` on Redis (durable as the Redis server is).

    Args:
        url_or_client: A Redis URL, or a ``redis.asyncio.Redis`` (``decode_responses=False``)
            you manage; ``RedisShortTermStore.webhook_outbox()`` passes the store's client.
        prefix: Key prefix; processes that share deliveries use the same one.
    """

    name = "redis"

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        prefix: str = "taskcast",
        socket_timeout: float | None = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if isinstance(url_or_client, str):
            self._client = command_client(
                url_or_client, socket_timeout=socket_timeout, connect_timeout=connect_timeout
            )
            self._owned = True
        else:
            self._client = url_or_client
            self._owned = False
        self._hash_prefix = f"{prefix}:webhook:"
        self._task_prefix = f"{prefix}:webhooks:task:"
        self._due = f"{prefix}:webhooks:due"
        self._done = f"{prefix}:webhooks:done"
        self._enqueue = self._client.register_script(script_source("outbox_enqueue"))
        self._claim = self._client.register_script(script_source("outbox_claim"))
        self._settle_script = self._client.register_script(script_source("outbox_settle"))
        self._purge = self._client.register_script(script_source("outbox_purge"))

    async def open(self) -> None:
        with guard():
            await self._client.ping()

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()

    async def enqueue(self, deliveries: Sequence[WebhookDelivery]) -> None:
        if not deliveries:
            return
        keys = [self._due]
        args: list[Any] = []
        for d in deliveries:
            keys += [self._hash_prefix + d.id, self._task_prefix + d.task_id]
            args += [d.id, d.next_attempt_at, d.created_at, dumps(replace(d, lease="").to_dict())]
        with guard():
            await self._enqueue(keys=keys, args=args)

    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[WebhookDelivery]:
        token = secrets.token_hex(8)
        until = now + lease_ms
        with guard():
            flat = await self._claim(
                keys=[self._due], args=[now, limit, until, token, self._hash_prefix]
            )
        out = []
        for i in range(0, len(flat), 2):
            item = WebhookDelivery.from_dict(json.loads(flat[i]))
            out.append(replace(item, lease=flat[i + 1].decode(), next_attempt_at=until))
        return out

    async def _settle(self, delivery_id: str, lease: str, now: int, **changes: Any) -> bool:
        if not lease:
            return False
        hash_key = self._hash_prefix + delivery_id
        with guard():
            raw: list[Any] = await self._client.hmget(hash_key, ["data", "lease", "next"])
        if raw[0] is None or raw[1] is None or raw[1].decode() != lease:
            return False
        current = WebhookDelivery.from_dict(json.loads(raw[0]))
        updated = replace(current, lease="", **changes)
        if "next_attempt_at" not in changes:
            updated = replace(updated, next_attempt_at=int(raw[2]))
        with guard():
            done = await self._settle_script(
                keys=[hash_key, self._due, self._done],
                args=[
                    delivery_id,
                    lease,
                    dumps(updated.to_dict()),
                    updated.status,
                    updated.next_attempt_at,
                    now,
                ],
            )
        return bool(done)

    async def list_for_task(self, task_id: str, limit: int) -> list[WebhookDelivery]:
        with guard():
            ids: list[Any] = await self._client.zrevrange(self._task_prefix + task_id, 0, limit - 1)
            if not ids:
                return []
            pipe = self._client.pipeline(transaction=False)
            for raw_id in ids:
                pipe.hmget(self._hash_prefix + raw_id.decode(), ["data", "lease", "next"])
            rows = await pipe.execute()
        out = []
        for data, lease, next_at in rows:
            if data is None:
                continue
            item = WebhookDelivery.from_dict(json.loads(data))
            out.append(replace(item, lease=(lease or b"").decode(), next_attempt_at=int(next_at)))
        return out

    async def purge(self, finished_before: int) -> int:
        total = 0
        while True:
            with guard():
                n = int(
                    await self._purge(
                        keys=[self._done],
                        args=[finished_before, _PURGE_BATCH, self._hash_prefix, self._task_prefix],
                    )
                )
            total += n
            if n < _PURGE_BATCH:
                return total
