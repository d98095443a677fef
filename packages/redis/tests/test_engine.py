"""End to end: two engines sharing Redis, a TaskStream on one fed by the other."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskcast.core import (
    EventInput,
    InvalidInputError,
    StreamOptions,
    TaskEngine,
    TaskInput,
    TaskStream,
)
from taskcast.redis import ReconnectBackoff, RedisBroadcast, RedisShortTermStore

from ._private_redis import PrivateRedis
from .conftest import FAST_BACKOFF

pytestmark = pytest.mark.anyio


def make_engine(url: str, prefix: str) -> TaskEngine:
    broadcast = RedisBroadcast(url, prefix=prefix, backoff=FAST_BACKOFF)
    engine = TaskEngine(short_term=RedisShortTermStore(url, prefix=prefix), broadcast=broadcast)
    broadcast.on_reconnect = engine.hub.notify_gap
    return engine


@pytest.fixture
async def engines(redis_url: str, prefix: str) -> AsyncIterator[tuple[TaskEngine, TaskEngine]]:
    a, b = make_engine(redis_url, prefix), make_engine(redis_url, prefix)
    async with a, b:
        yield a, b


def parse(frames: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in frames:
        name, data = None, None
        for line in frame.decode().split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if name is not None and data is not None:
            out.append((name, data))
    return out


async def test_stream_on_one_engine_sees_publishes_of_another(
    engines: tuple[TaskEngine, TaskEngine],
) -> None:
    reader, writer = engines
    task = await writer.create_task(TaskInput(type="e2e"))
    await writer.transition_task(task.id, "running")
    frames: list[bytes] = []

    async def consume() -> None:
        async for frame in TaskStream(reader, task.id, StreamOptions()).frames():
            frames.append(frame)

    consumer = asyncio.ensure_future(consume())
    for _ in range(500):
        if reader.subscriber_count(task.id) == 1 and len(frames) >= 2:
            break
        await asyncio.sleep(0.01)
    assert reader.subscriber_count(task.id) == 1

    async def publish(engine: TaskEngine, tag: str) -> None:
        for i in range(20):
            await engine.publish_events(
                task.id,
                [
                    EventInput(type="log", data={"tag": tag, "i": i}),
                    EventInput(
                        type="out",
                        data={"delta": tag},
                        series_id="text",
                        series_mode="accumulate",
                    ),
                ],
            )

    # Both engines publish at once: the stream must still see one contiguous order.
    await asyncio.gather(publish(writer, "w"), publish(reader, "r"))
    await writer.transition_task(task.id, "completed", result={"ok": True})
    await asyncio.wait_for(consumer, 10)

    parsed = parse(frames)
    events = [data for name, data in parsed if name == "taskcast.event"]
    assert [e["rawIndex"] for e in events] == list(range(82))
    assert [e["filteredIndex"] for e in events] == list(range(82))
    assert events[0]["data"] == {"status": "running"}
    assert events[-1]["data"]["status"] == "completed"
    assert parsed[-1] == ("taskcast.done", {"reason": "completed"})
    for tag in "wr":
        mine = [e["data"]["i"] for e in events if e["type"] == "log" and e["data"]["tag"] == tag]
        assert mine == list(range(20))
    stored = await writer.get_events(task.id)
    assert [e.index for e in stored] == list(range(82))


async def test_delete_reaches_streams_on_other_engines(
    engines: tuple[TaskEngine, TaskEngine],
) -> None:
    reader, writer = engines
    task = await writer.create_task(TaskInput())
    await writer.transition_task(task.id, "running")
    frames: list[bytes] = []

    async def consume() -> None:
        async for frame in TaskStream(reader, task.id, StreamOptions()).frames():
            frames.append(frame)

    consumer = asyncio.ensure_future(consume())
    for _ in range(500):
        if len(frames) >= 2:
            break
        await asyncio.sleep(0.01)
    assert await writer.delete_task(task.id) is True
    await asyncio.wait_for(consumer, 10)
    assert parse(frames)[-1] == ("taskcast.done", {"reason": "deleted"})
    assert await reader.get_task(task.id) is None


async def test_stream_fills_events_missed_while_pubsub_reconnects(
    tmp_path: Path, redis_url: str
) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    slow = ReconnectBackoff(base=1.0, cap=1.0)
    reader_bus = RedisBroadcast(server.url, backoff=slow)
    reader = TaskEngine(short_term=RedisShortTermStore(server.url), broadcast=reader_bus)
    reader_bus.on_reconnect = reader.hub.notify_gap
    writer = make_engine(server.url, "taskcast")
    try:
        async with reader, writer:
            task = await writer.create_task(TaskInput())
            await writer.transition_task(task.id, "running")
            frames: list[bytes] = []

            async def consume() -> None:
                async for frame in TaskStream(reader, task.id, StreamOptions()).frames():
                    frames.append(frame)

            consumer = asyncio.ensure_future(consume())
            for _ in range(500):
                if len(frames) >= 2:
                    break
                await asyncio.sleep(0.01)
            # Drop every pub/sub connection: commits still succeed, broadcasts are missed.
            server.command("CLIENT", "KILL", "TYPE", "pubsub")
            for _ in range(500):
                if reader_bus.state == "reconnecting":
                    break
                await asyncio.sleep(0.01)
            for i in range(5):
                await writer.publish_event(task.id, EventInput(type="during", data=i))
            assert reader_bus.health()["state"] == "reconnecting"
            for _ in range(500):
                if reader_bus.health()["state"] == "healthy":
                    break
                await asyncio.sleep(0.01)
            await writer.publish_event(task.id, EventInput(type="after"))
            await writer.transition_task(task.id, "completed")
            await asyncio.wait_for(consumer, 10)
    finally:
        server.kill()
    events = [data for name, data in parse(frames) if name == "taskcast.event"]
    assert [e["rawIndex"] for e in events] == list(range(8))
    assert [e["type"] for e in events[1:7]] == ["during"] * 5 + ["after"]
    assert parse(frames)[-1] == ("taskcast.done", {"reason": "completed"})


async def test_in_process_publish_of_nul_data_is_refused_before_it_is_stored(
    engines: tuple[TaskEngine, TaskEngine],
) -> None:
    """PostgreSQL cannot archive a NUL: the Redis store refuses it, as the HTTP API does."""
    engine, _ = engines
    task = await engine.create_task(TaskInput(id="nul"))
    await engine.transition_task(task.id, "running")
    before = await engine.get_events(task.id)
    for data in ("\u0000", {"delta": "a\u0000"}, [1, {"k\u0000": 2}]):
        with pytest.raises(InvalidInputError, match="contains a NUL character"):
            await engine.publish_event(task.id, EventInput(type="x", data=data))
    assert await engine.get_events(task.id) == before
    # A backslash followed by "u0000" is text, and is stored as such.
    text = {"text": "\\u0000"}
    stored = await engine.publish_event(task.id, EventInput(type="x", data=text))
    assert (await engine.get_events(task.id))[-1].data == text == stored.data
