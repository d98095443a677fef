"""Behaviour every :class:`~taskcast.core.WebhookOutbox` must have."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .._ids import new_id, now_ms
from .._ports import WebhookOutbox
from .._webhooks import WebhookDelivery, WebhookRetry

LEASE = 30_000


def delivery(task_id: str = "t", at: int = 0, **fields: Any) -> WebhookDelivery:
    fields.setdefault("created_at", at)
    return WebhookDelivery(
        id=fields.pop("id", new_id()),
        task_id=task_id,
        event_id=fields.pop("event_id", new_id()),
        event_type=fields.pop("event_type", "log"),
        url=fields.pop("url", "http://example.invalid/hook"),
        body=fields.pop("body", '{"k":1}'),
        next_attempt_at=fields.pop("next_attempt_at", at),
        **fields,
    )


class WebhookOutboxContract:
    """Subclass and provide an async ``outbox`` fixture yielding an opened outbox.

    Times are explicit arguments, so the suite never sleeps; task ids are unique per test.
    """

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def base(self) -> int:
        return now_ms()

    async def test_is_a_webhook_outbox(self, outbox: WebhookOutbox) -> None:
        assert isinstance(outbox, WebhookOutbox)
        assert isinstance(outbox.name, str)

    async def test_round_trip_of_every_field(self, outbox: WebhookOutbox, base: int) -> None:
        task = new_id()
        item = delivery(
            task,
            base,
            secret="s3cret",
            retry=WebhookRetry(retries=5, backoff="linear", initial_delay_ms=7, jitter=0.0),
            global_hook=True,
            body='{"a":"é","b":[1,2]}',
        )
        await outbox.enqueue([item])
        (got,) = await outbox.list_for_task(task, 10)
        assert got == item
        assert got.max_attempts == 6

    async def test_claims_due_deliveries_earliest_first(
        self, outbox: WebhookOutbox, base: int
    ) -> None:
        task = new_id()
        late = delivery(task, base, next_attempt_at=base + 10)
        first = delivery(task, base, next_attempt_at=base - 5)
        second = delivery(task, base, next_attempt_at=base)
        future = delivery(task, base, next_attempt_at=base + 60_000)
        await outbox.enqueue([late, first, second, future])
        claimed = await outbox.claim_due(base + 10, 2, LEASE)
        assert [d.id for d in claimed] == [first.id, second.id]
        assert all(d.lease and d.next_attempt_at == base + 10 + LEASE for d in claimed)
        assert len({d.lease for d in claimed}) == 2
        rest = await outbox.claim_due(base + 10, 10, LEASE)
        assert [d.id for d in rest] == [late.id]
        assert await outbox.claim_due(base + 10, 10, LEASE) == []

    async def test_a_lease_hides_the_delivery_until_it_runs_out(
        self, outbox: WebhookOutbox, base: int
    ) -> None:
        item = delivery(new_id(), base)
        await outbox.enqueue([item])
        (claimed,) = await outbox.claim_due(base, 10, LEASE)
        assert await outbox.claim_due(base + LEASE - 1, 10, LEASE) == []
        (again,) = await outbox.claim_due(base + LEASE, 10, LEASE)
        assert again.id == item.id and again.lease != claimed.lease
        # The first claimer lost its lease: its outcome is refused and changes nothing.
        assert not await outbox.complete(
            item.id, claimed.lease, now=base, attempts=1, response_status=200
        )
        assert await outbox.complete(
            item.id, again.lease, now=base + LEASE, attempts=1, response_status=204
        )
        (done,) = await outbox.list_for_task(item.task_id, 10)
        assert (done.status, done.attempts, done.response_status, done.completed_at) == (
            "delivered",
            1,
            204,
            base + LEASE,
        )
        assert done.lease == ""
        assert await outbox.claim_due(base + 10 * LEASE, 10, LEASE) == []

    async def test_retry_makes_it_due_again_and_records_the_error(
        self, outbox: WebhookOutbox, base: int
    ) -> None:
        item = delivery(new_id(), base)
        await outbox.enqueue([item])
        (claimed,) = await outbox.claim_due(base, 10, LEASE)
        assert await outbox.retry_at(
            item.id,
            claimed.lease,
            now=base + 1,
            next_attempt_at=base + 100,
            attempts=1,
            error="HTTP 500",
            response_status=500,
        )
        assert not await outbox.retry_at(
            item.id,
            claimed.lease,
            now=base + 1,
            next_attempt_at=base + 100,
            attempts=1,
            error="HTTP 500",
            response_status=500,
        )
        assert await outbox.claim_due(base + 99, 10, LEASE) == []
        (again,) = await outbox.claim_due(base + 100, 10, LEASE)
        assert (again.status, again.attempts, again.last_error, again.response_status) == (
            "pending",
            1,
            "HTTP 500",
            500,
        )
        assert again.last_attempt_at == base + 1

    async def test_fail_is_final(self, outbox: WebhookOutbox, base: int) -> None:
        item = delivery(new_id(), base)
        await outbox.enqueue([item])
        (claimed,) = await outbox.claim_due(base, 10, LEASE)
        assert await outbox.fail(
            item.id, claimed.lease, now=base + 3, attempts=4, error="boom", response_status=None
        )
        assert await outbox.claim_due(base + 10 * LEASE, 10, LEASE) == []
        (got,) = await outbox.list_for_task(item.task_id, 10)
        assert (got.status, got.attempts, got.last_error, got.completed_at) == (
            "failed",
            4,
            "boom",
            base + 3,
        )
        assert got.response_status is None
        assert not await outbox.fail(
            "missing-" + new_id(), "x", now=base, attempts=1, error="e", response_status=None
        )

    async def test_release_gives_it_back_unattempted(
        self, outbox: WebhookOutbox, base: int
    ) -> None:
        item = delivery(new_id(), base)
        await outbox.enqueue([item])
        (claimed,) = await outbox.claim_due(base, 10, LEASE)
        assert await outbox.release(item.id, claimed.lease, now=base + 5)
        assert not await outbox.release(item.id, claimed.lease, now=base + 5)
        (again,) = await outbox.claim_due(base + 5, 10, LEASE)
        assert (again.attempts, again.last_error) == (0, None)

    async def test_enqueue_is_idempotent_by_id(self, outbox: WebhookOutbox, base: int) -> None:
        item = delivery(new_id(), base)
        await outbox.enqueue([item])
        (claimed,) = await outbox.claim_due(base, 10, LEASE)
        await outbox.enqueue([item])  # a replayed enqueue must not reset the claim
        assert await outbox.claim_due(base, 10, LEASE) == []
        assert len(await outbox.list_for_task(item.task_id, 10)) == 1
        assert await outbox.release(item.id, claimed.lease, now=base)

    async def test_list_is_newest_first_per_task_and_limited(
        self, outbox: WebhookOutbox, base: int
    ) -> None:
        task, other = new_id(), new_id()
        items = [delivery(task, base + i) for i in range(5)]
        await outbox.enqueue([*items, delivery(other, base)])
        got = await outbox.list_for_task(task, 3)
        assert [d.id for d in got] == [items[4].id, items[3].id, items[2].id]
        assert await outbox.list_for_task("missing-" + new_id(), 10) == []
        await outbox.enqueue([])

    async def test_concurrent_claims_never_share_a_delivery(
        self, outbox: WebhookOutbox, base: int
    ) -> None:
        task = new_id()
        await outbox.enqueue([delivery(task, base) for _ in range(20)])
        batches = await asyncio.gather(*(outbox.claim_due(base, 7, LEASE) for _ in range(4)))
        ids = [d.id for batch in batches for d in batch]
        assert len(ids) == len(set(ids)) == 20

    async def test_purge_removes_only_old_finished_records(
        self, outbox: WebhookOutbox, base: int
    ) -> None:
        task = new_id()
        old, recent, pending = delivery(task, base), delivery(task, base), delivery(task, base)
        await outbox.enqueue([old, recent, pending])
        claimed = {d.id: d for d in await outbox.claim_due(base, 10, LEASE)}
        assert await outbox.complete(
            old.id, claimed[old.id].lease, now=base + 1, attempts=1, response_status=200
        )
        assert await outbox.fail(
            recent.id,
            claimed[recent.id].lease,
            now=base + 1000,
            attempts=1,
            error="x",
            response_status=None,
        )
        assert await outbox.purge(base + 500) >= 1
        assert {d.id for d in await outbox.list_for_task(task, 10)} == {recent.id, pending.id}
