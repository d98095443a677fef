"""Outages: a private redis-server killed and restarted under the adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskcast.core import (
    EventDraft,
    EventQuery,
    StorageUnavailableError,
    Task,
    TaskEvent,
    new_id,
    now_ms,
)
from taskcast.redis import RedisBroadcast, RedisShortTermStore

from ._private_redis import PrivateRedis
from .conftest import FAST_BACKOFF
from .test_broadcast import Recorder, eventually

pytestmark = pytest.mark.anyio


def draft(data: Any = None) -> EventDraft:
    return EventDraft(id=new_id(), timestamp=now_ms(), type="t", level="info", data=data)


@pytest.fixture
def server(tmp_path: Path, redis_url: str) -> Iterator[PrivateRedis]:
    # `redis_url` ties these tests to the same availability rule as the others.
    private = PrivateRedis(tmp_path)
    private.start()
    yield private
    private.kill()


@pytest.fixture
async def store(server: PrivateRedis) -> AsyncIterator[RedisShortTermStore]:
    s = RedisShortTermStore(server.url, socket_timeout=2, connect_timeout=0.5)
    await s.open()
    yield s
    await s.close()


async def new_task(store: RedisShortTermStore) -> str:
    now = now_ms()
    task = Task(id=new_id(), created_at=now, updated_at=now, status="running")
    await store.create_task(task)
    return task.id


async def test_broadcast_reconnects_and_resubscribes(
    server: PrivateRedis, store: RedisShortTermStore
) -> None:
    reconnects: list[str] = []
    b = RedisBroadcast(
        server.url,
        backoff=FAST_BACKOFF,
        connect_timeout=0.5,
        on_reconnect=lambda: reconnects.append("sync"),
    )
    await b.open()
    try:
        task_id = await new_task(store)
        mine, everything = Recorder(), Recorder()
        await b.subscribe(task_id, mine)
        await b.subscribe_all(everything)
        await store.commit_events(task_id, [draft(0)])
        await eventually(lambda: len(mine.events()) == 1)

        server.kill()
        await eventually(lambda: b.state == "reconnecting")
        with pytest.raises(StorageUnavailableError) as info:
            await store.commit_events(task_id, [draft("lost")])
        assert info.value.dependency == "redis"
        with pytest.raises(StorageUnavailableError):
            await b.subscribe(new_id(), Recorder())
        with pytest.raises(StorageUnavailableError):
            await b.publish(task_id, [draft().at(task_id, 9)])
        assert b.health()["state"] == "reconnecting"
        assert b.health()["lastErrorKind"] in {"connection_closed", "connection_reset"}
        # Let a few reconnection attempts fail before the server comes back.
        await eventually(lambda: b.health()["consecutiveFailures"] >= 3)
        assert b.health()["lastErrorKind"] == "connection_refused"

        server.start()
        await eventually(lambda: b.state == "healthy" and reconnects == ["sync"])
        health = b.health()
        assert health["reconnectAttempts"] >= 1 and health["consecutiveFailures"] == 0
        await store.commit_events(task_id, [draft(1)])
        await eventually(lambda: len(mine.events()) == 2 and len(everything.events()) == 2)
        assert [e.index for e in mine.events()] == [0, 1]
        # A new subscription works on the new connection too.
        later = Recorder()
        await b.subscribe(new_id(), later)
    finally:
        await b.close()


async def test_async_reconnect_callback(server: PrivateRedis) -> None:
    done = asyncio.Event()

    async def on_reconnect() -> None:
        done.set()

    async def failing() -> None:
        raise RuntimeError("callback bug")

    b = RedisBroadcast(server.url, backoff=FAST_BACKOFF, on_reconnect=on_reconnect)
    await b.open()
    try:
        server.kill()
        await eventually(lambda: b.state == "reconnecting")
        server.start()
        await asyncio.wait_for(done.wait(), 10)
        b.on_reconnect = failing
        server.kill()
        await eventually(lambda: b.state == "reconnecting")
        server.start()
        await eventually(lambda: b.state == "healthy")

        def broken() -> None:
            raise RuntimeError("sync callback bug")

        b.on_reconnect = broken
        server.kill()
        await eventually(lambda: b.state == "reconnecting")
        server.start()
        await eventually(lambda: b.state == "healthy")
    finally:
        await b.close()


async def test_silent_connection_is_detected_by_ping(server: PrivateRedis) -> None:
    reconnects: list[int] = []
    b = RedisBroadcast(
        server.url,
        backoff=FAST_BACKOFF,
        health_check_interval=0.1,
        subscribe_timeout=0.3,
        on_reconnect=lambda: reconnects.append(1),
    )
    await b.open()
    try:
        rec = Recorder()
        await b.subscribe("t", rec)
        # The server stops answering anyone for a while (CLIENT PAUSE): the PING goes
        # unanswered and the listener gives up on the connection.
        server.command("CLIENT", "PAUSE", "1500", "ALL")
        await eventually(lambda: b.state == "reconnecting")
        assert b.health()["lastErrorKind"] == "timeout"
        await eventually(lambda: b.state == "healthy" and reconnects == [1], seconds=10)
        await b.publish("t", [draft().at("t", 0)])
        await eventually(lambda: len(rec.events()) == 1)
    finally:
        await b.close()


async def test_subscribe_times_out_without_confirmation(server: PrivateRedis) -> None:
    b = RedisBroadcast(server.url, backoff=FAST_BACKOFF, subscribe_timeout=0.2)
    await b.open()
    try:
        server.command("CLIENT", "PAUSE", "600", "ALL")
        with pytest.raises(StorageUnavailableError) as info:
            await b.subscribe("t", Recorder())
        assert info.value.kind == "timeout"
        assert b.health()["subscriptions"] == 0
        await asyncio.sleep(0.6)
        rec = Recorder()
        await b.subscribe("t", rec)
        await b.publish("t", [draft().at("t", 0)])
        await eventually(lambda: len(rec.events()) == 1)
    finally:
        await b.close()


async def test_pending_subscribe_fails_when_connection_drops(server: PrivateRedis) -> None:
    b = RedisBroadcast(server.url, backoff=FAST_BACKOFF, subscribe_timeout=5)
    await b.open()
    try:
        server.command("CLIENT", "PAUSE", "3000", "ALL")
        attempt = asyncio.ensure_future(b.subscribe("t", Recorder()))
        await asyncio.sleep(0.1)
        server.kill()
        with pytest.raises(StorageUnavailableError):
            await attempt
        assert b.health()["subscriptions"] == 0
    finally:
        await b.close()


async def test_no_acknowledged_event_is_lost_on_crash(
    server: PrivateRedis, store: RedisShortTermStore
) -> None:
    """With ``appendfsync always`` every commit that returned survives a SIGKILL."""
    task_id = await new_task(store)
    acknowledged: list[TaskEvent] = []
    failures = 0

    async def writer() -> None:
        nonlocal failures
        for i in range(400):
            try:
                result = await store.commit_events(task_id, [draft(i), draft(i)])
            except StorageUnavailableError:
                failures += 1
                return
            acknowledged.extend(result.events)

    writers = [asyncio.ensure_future(writer()) for _ in range(4)]
    await eventually(lambda: len(acknowledged) >= 200)
    server.kill()
    await asyncio.gather(*writers)
    assert failures == 4
    server.start()
    stored = await store.get_events(task_id, EventQuery())
    by_id = {e.id: e for e in stored}
    for event in acknowledged:
        assert event.id in by_id and by_id[event.id].index == event.index
    # Whatever was stored is contiguous: a commit is all or nothing even across a crash.
    assert [e.index for e in stored] == list(range(len(stored)))
    assert await store.last_index(task_id) == len(stored) - 1
