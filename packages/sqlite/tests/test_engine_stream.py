"""The engine and its streams on top of SQLiteStore (in process, no HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskcast.core import EventInput, StreamOptions, TaskEngine, TaskStream
from taskcast.core.testing import collect, events
from taskcast.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(db_path: Path) -> AsyncIterator[TaskEngine]:
    async with TaskEngine(short_term=SQLiteStore(db_path)) as e:
        yield e


def stream(engine: TaskEngine, task_id: str, **opts: Any) -> AsyncIterator[bytes]:
    return TaskStream(engine, task_id, StreamOptions(**opts)).frames()


async def test_concurrent_publishers_reach_a_live_stream_in_index_order(
    engine: TaskEngine,
) -> None:
    task = await engine.create_task()
    await engine.transition_task(task.id, "running")
    await engine.publish_events(task.id, [EventInput(type="log", data=i) for i in range(5)])
    consumer = asyncio.ensure_future(collect(stream(engine, task.id, page_size=7)))
    await asyncio.sleep(0.05)

    async def publisher(k: int) -> None:
        for i in range(10):
            await engine.publish_event(task.id, EventInput(type="log", data=[k, i]))

    await asyncio.gather(*(publisher(k) for k in range(20)))
    await engine.transition_task(task.id, "completed")
    frames = await asyncio.wait_for(consumer, 10)
    # status(0) + 5 + 200 + status: every index once, in order, no gap.
    assert [e["rawIndex"] for e in events(frames)] == list(range(207))
    assert frames[-1].data == {"reason": "completed"}


async def test_resume_after_restart_by_last_event_id(db_path: Path) -> None:
    async with TaskEngine(short_term=SQLiteStore(db_path)) as engine:
        task = await engine.create_task()
        await engine.transition_task(task.id, "running")
        published = await engine.publish_events(
            task.id, [EventInput(type="log", data=i) for i in range(10)]
        )
    async with TaskEngine(short_term=SQLiteStore(db_path)) as engine:
        await engine.transition_task(task.id, "completed")
        frames = await collect(stream(engine, task.id, since_id=published[4].id))
        assert [e["rawIndex"] for e in events(frames)] == [6, 7, 8, 9, 10, 11]
