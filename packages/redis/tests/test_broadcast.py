"""RedisBroadcast: one connection, confirmed subscriptions, fan-out and ordering."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis.asyncio as aredis

from taskcast.core import (
    EventDraft,
    StorageUnavailableError,
    Task,
    TaskEvent,
    new_id,
    now_ms,
)
from taskcast.redis import ReconnectBackoff, RedisBroadcast, RedisShortTermStore

from .conftest import FAST_BACKOFF

pytestmark = pytest.mark.anyio


def draft(data: Any = None, **fields: Any) -> EventDraft:
    return EventDraft(id=new_id(), timestamp=now_ms(), type="t", level="info", data=data, **fields)


async def eventually(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[str, list[TaskEvent]]] = []

    def __call__(self, task_id: str, events: Sequence[TaskEvent]) -> None:
        self.batches.append((task_id, list(events)))

    def events(self, task_id: str | None = None) -> list[TaskEvent]:
        return [e for t, b in self.batches if task_id in (None, t) for e in b]


async def new_task(store: RedisShortTermStore) -> str:
    now = now_ms()
    task = Task(id=new_id(), created_at=now, updated_at=now, status="running")
    await store.create_task(task)
    return task.id


async def test_many_subscriptions_share_one_connection(
    redis_url: str, prefix: str, store: RedisShortTermStore
) -> None:
    name = "tctest-" + uuid.uuid4().hex[:12]
    b = RedisBroadcast(redis_url, prefix=prefix, client_name=name)
    await b.open()
    try:
        rec = Recorder()
        task_ids = [await new_task(store) for _ in range(30)]
        unsubs = [await b.subscribe(t, rec) for t in task_ids]
        unsubs.append(await b.subscribe_all(rec))
        clients = await store.client.client_list()
        assert sum(1 for c in clients if c.get("name") == name) == 1
        assert b.health()["subscriptions"] == 31
        for t in task_ids:
            await store.commit_events(t, [draft()])
        # Each commit arrives twice: on its task channel and through the pattern.
        await eventually(lambda: len(rec.events()) == 60)
        for u in unsubs:
            await u()
        assert b.health()["subscriptions"] == 0
    finally:
        await b.close()


async def test_commits_arrive_in_index_order(
    broadcast: RedisBroadcast, store: RedisShortTermStore, other_store: RedisShortTermStore
) -> None:
    task_id = await new_task(store)
    mine, everything = Recorder(), Recorder()
    unsub = await broadcast.subscribe(task_id, mine)
    unsub_all = await broadcast.subscribe_all(everything)
    acc = {"series_id": "s", "series_mode": "accumulate"}

    async def writer(s: RedisShortTermStore, letter: str) -> None:
        for _ in range(30):
            await s.commit_events(task_id, [draft({"delta": letter}, **acc), draft(letter)])

    await asyncio.gather(writer(store, "a"), writer(other_store, "b"))
    await eventually(lambda: len(mine.events()) == 120)
    got = mine.events()
    assert [e.index for e in got] == list(range(120))
    assert all(tid == task_id for tid, _ in mine.batches)
    for e in got:
        # Accumulate deltas arrive as themselves: the store computes no accumulated values.
        assert not e.has_accumulated
        if e.series_id == "s":
            assert e.data in ({"delta": "a"}, {"delta": "b"})
        else:
            assert e.data in ("a", "b")
    await eventually(lambda: len(everything.events(task_id)) == 120)
    assert [e.index for e in everything.events(task_id)] == list(range(120))
    await unsub()
    await unsub_all()


async def test_subscription_is_live_when_subscribe_returns(
    broadcast: RedisBroadcast, store: RedisShortTermStore
) -> None:
    rec = Recorder()
    task_ids = []
    for _ in range(25):
        task_id = await new_task(store)
        task_ids.append(task_id)
        await broadcast.subscribe(task_id, rec)
        await store.commit_events(task_id, [draft()])
    await eventually(lambda: len(rec.events()) == 25)
    assert [t for t, _ in rec.batches] == task_ids


async def test_handlers_share_a_channel_and_failures_are_isolated(
    broadcast: RedisBroadcast, store: RedisShortTermStore, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = await new_task(store)
    good = Recorder()

    def bad(task_id: str, events: Sequence[TaskEvent]) -> None:
        raise RuntimeError("boom")

    subs = await asyncio.gather(
        broadcast.subscribe(task_id, bad), broadcast.subscribe(task_id, good)
    )
    with caplog.at_level(logging.ERROR, logger="taskcast.redis._broadcast"):
        await store.commit_events(task_id, [draft(1)])
        await eventually(lambda: len(good.events()) == 1)
    assert "broadcast handler failed" in caplog.text
    await subs[0]()
    await subs[0]()  # a second call is harmless
    await store.commit_events(task_id, [draft(2)])
    await eventually(lambda: len(good.events()) == 2)
    await subs[1]()
    await store.commit_events(task_id, [draft(3)])
    await asyncio.sleep(0.1)
    assert len(good.events()) == 2


async def test_foreign_messages(
    broadcast: RedisBroadcast, store: RedisShortTermStore, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = "t1"
    rec = Recorder()
    await broadcast.subscribe(task_id, rec)
    channel = broadcast.keys.channel(task_id)
    event = draft({"x": 1}).at(task_id, 0)
    with caplog.at_level(logging.WARNING, logger="taskcast.redis._broadcast"):
        await store.client.publish(channel, b"not json")
        await store.client.publish(channel, b'[{"id": 1}]')
        # The original publishes one event object per message: accepted too.
        await store.client.publish(channel, _json(event.to_dict()))
        await eventually(lambda: len(rec.events()) == 1)
    assert rec.events()[0].to_dict() == event.to_dict()
    assert caplog.text.count("malformed broadcast message") == 2


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


async def test_publish(broadcast: RedisBroadcast) -> None:
    rec = Recorder()
    await broadcast.subscribe("t", rec)
    await broadcast.publish("t", [])
    event = draft([{}, []]).at("t", 3)
    event.accumulated = {}  # process-local: not carried between processes
    await broadcast.publish("t", [event])
    await eventually(lambda: len(rec.events()) == 1)
    (got,) = rec.events()
    assert got.to_dict() == event.to_dict() and not got.has_accumulated


async def test_subscribe_before_open_and_after_close(redis_url: str, prefix: str) -> None:
    b = RedisBroadcast(redis_url, prefix=prefix)
    with pytest.raises(RuntimeError):
        await b.subscribe("t", Recorder())
    assert b.state == "starting"
    await b.open()
    await b.open()  # idempotent
    assert b.health()["state"] == "healthy"
    await b.close()
    assert b.health()["state"] == "closed"
    with pytest.raises(RuntimeError):
        await b.subscribe_all(Recorder())


async def test_open_fails_fast_when_unreachable() -> None:
    b = RedisBroadcast("redis://127.0.0.1:1/0", connect_timeout=1)
    with pytest.raises(StorageUnavailableError) as info:
        await b.open()
    assert info.value.kind == "connection_refused"
    health = b.health()
    assert health["state"] == "unhealthy"
    assert health["lastErrorKind"] == "connection_refused"
    assert health["consecutiveFailures"] == 1
    await b.close()


async def test_external_client_settings_are_reused(redis_url: str, prefix: str) -> None:
    client = aredis.Redis.from_url(redis_url)
    b = RedisBroadcast(client, prefix=prefix, client_name=None)
    await b.open()
    rec = Recorder()
    await b.subscribe("t", rec)
    await b.publish("t", [draft().at("t", 0)])
    await eventually(lambda: len(rec.events()) == 1)
    await b.close()
    assert await client.ping()
    await client.aclose()


async def test_prefixes_are_isolated(redis_url: str, prefix: str) -> None:
    other = RedisBroadcast(redis_url, prefix=prefix + "*x", backoff=FAST_BACKOFF)
    mine = RedisBroadcast(redis_url, prefix=prefix, backoff=FAST_BACKOFF)
    await other.open()
    await mine.open()
    try:
        rec = Recorder()
        await other.subscribe_all(rec)
        await mine.publish("t", [draft().at("t", 0)])
        await other.publish("t", [draft().at("t", 0)])
        await eventually(lambda: len(rec.events()) == 1)
        await asyncio.sleep(0.05)
        assert len(rec.events()) == 1
    finally:
        await mine.close()
        await other.close()


async def test_second_handler_on_a_confirmed_channel(
    broadcast: RedisBroadcast, store: RedisShortTermStore
) -> None:
    task_id = await new_task(store)
    first, second = Recorder(), Recorder()
    await broadcast.subscribe(task_id, first)
    await broadcast.subscribe(task_id, second)
    await store.commit_events(task_id, [draft()])
    await eventually(lambda: len(first.events()) == 1 and len(second.events()) == 1)


async def test_resubscribe_before_the_first_confirmation(
    broadcast: RedisBroadcast, store: RedisShortTermStore
) -> None:
    task_id = await new_task(store)
    abandoned = asyncio.ensure_future(broadcast.subscribe(task_id, Recorder()))
    for _ in range(3):
        await asyncio.sleep(0)
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    rec = Recorder()
    await broadcast.subscribe(task_id, rec)
    await store.commit_events(task_id, [draft()])
    await eventually(lambda: len(rec.events()) == 1)


async def test_send_failures_are_reported(
    broadcast: RedisBroadcast, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = await broadcast.subscribe("kept", Recorder())
    conn = broadcast._conn
    assert conn is not None

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(conn, "send_command", broken)
    with pytest.raises(StorageUnavailableError) as info:
        await broadcast.subscribe("new", Recorder())
    assert info.value.kind == "connection_reset"
    await kept()  # the UNSUBSCRIBE cannot be sent either; the registry still forgets it
    assert broadcast.health()["subscriptions"] == 0


async def test_listener_survives_an_unexpected_reply(
    broadcast: RedisBroadcast, store: RedisShortTermStore, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = await new_task(store)
    rec = Recorder()
    await broadcast.subscribe(task_id, rec)
    original = broadcast._handle
    calls = 0

    def flaky(reply: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise IndexError("unexpected reply shape")
        original(reply)

    broadcast._handle = flaky  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="taskcast.redis._broadcast"):
        await store.commit_events(task_id, [draft(0)])
        await eventually(lambda: broadcast.state == "healthy" and calls > 1)
    assert "listener failed" in caplog.text
    await store.commit_events(task_id, [draft(1)])
    await eventually(lambda: [e.data for e in rec.events()] == [1])


def test_backoff_is_capped_with_jitter() -> None:
    policy = ReconnectBackoff(base=0.5, cap=4.0)
    for attempt in range(40):
        delay = policy.delay(attempt)
        ceiling = min(4.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    with pytest.raises(ValueError):
        ReconnectBackoff(base=0)
    with pytest.raises(ValueError):
        RedisBroadcast("redis://127.0.0.1:1/0", health_check_interval=0)
