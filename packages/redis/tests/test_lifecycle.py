"""Release and restore on Redis: no key is left behind, big histories come back whole."""

from __future__ import annotations

import asyncio

import pytest

from taskcast.core import (
    EventDraft,
    EventInput,
    EventQuery,
    LifecycleConfig,
    MemoryLongTermStore,
    SchedulerConfig,
    Task,
    TaskEngine,
    TaskInput,
    new_id,
    now_ms,
    series_states,
)
from taskcast.redis import RedisBroadcast, RedisShortTermStore

pytestmark = pytest.mark.anyio


async def test_release_leaves_no_task_keys(store: RedisShortTermStore, prefix: str) -> None:
    task = Task(id=new_id(), status="running", created_at=now_ms(), updated_at=now_ms())
    await store.create_task(task)
    drafts = [
        EventDraft(
            id=new_id(), timestamp=1, type="t", level="info", data=i, idempotency_key=f"k{i}"
        )
        for i in range(3)
    ]
    await store.commit_events(task.id, drafts)
    current = await store.get_task_revision(task.id)
    assert current is not None
    assert await store.release_task(task.id, current[1], 2)
    left = [k async for k in store.client.scan_iter(match=f"{prefix}:*{task.id}*")]
    assert left == []
    assert not await store.client.sismember(store.keys.tasks, task.id)
    assert await store.client.zscore(store.keys.task_order, task.id) is None


async def test_restore_of_a_long_history(store: RedisShortTermStore) -> None:
    task = Task(id=new_id(), status="running", created_at=now_ms(), updated_at=now_ms())
    history = [
        EventDraft(
            id=new_id(),
            timestamp=i,
            type="t",
            level="info",
            data={"delta": str(i % 10)},
            series_id="s" if i % 2 else None,
            series_mode="accumulate" if i % 2 else None,
            idempotency_key=f"k{i}",
        ).at(task.id, i)
        for i in range(2500)
    ]
    restored = await store.restore_task(
        task, history, next_index=2500, series=series_states(history), revision=9
    )
    assert restored
    stored = await store.get_events(task.id, EventQuery())
    assert [e.to_dict() for e in stored] == [e.to_dict() for e in history]
    assert await store.resolve_cursor(task.id, history[2222].id) == 2222
    again = await store.commit_events(
        task.id,
        [
            EventDraft(id=new_id(), timestamp=1, type="t", level="info", idempotency_key="k2499"),
            EventDraft(
                id=new_id(), timestamp=1, type="t", level="info", data={"delta": "!"},
                series_id="s", series_mode="accumulate",
            ),
        ],
    )  # fmt: skip
    assert again.events[0].id == history[2499].id
    assert again.fresh[0].index == 2500 and not again.fresh[0].has_accumulated
    keys = store.keys.for_task(task.id)
    assert await store.client.hget(keys.series_meta, "s") == b"accumulate 2500"
    # The restored state's index is what a switch to latest replaces.
    switched = await store.commit_events(
        task.id,
        [
            EventDraft(
                id=new_id(),
                timestamp=1,
                type="t",
                level="info",
                series_id="s",
                series_mode="latest",
            )
        ],
    )
    assert switched.fresh[0].index == 2501
    tail = await store.get_events(task.id, EventQuery(after_index=2497))
    assert [e.index for e in tail] == [2498, 2499, 2501]


async def test_engine_on_redis_releases_and_rehydrates(redis_url: str, prefix: str) -> None:
    hot = RedisShortTermStore(redis_url, prefix=prefix)
    config = LifecycleConfig(
        enabled=False, terminal_release_after_seconds=0.001, idle_release_after_seconds=0.001
    )
    engine = TaskEngine(
        short_term=hot,
        broadcast=RedisBroadcast(redis_url, prefix=prefix),
        long_term=MemoryLongTermStore(),
        lifecycle=config,
        scheduler=SchedulerConfig(interval_seconds=0),
    )
    async with engine:
        task = await engine.create_task(TaskInput())
        await engine.transition_task(task.id, "running")
        first = await engine.publish_events(task.id, [EventInput(type="a") for _ in range(5)])
        assert engine.archive is not None
        assert await engine.archive.flush(5)
        await asyncio.sleep(0.01)
        assert await engine.lifecycle.sweep() == 1
        assert await hot.get_task(task.id) is None
        assert await engine.last_index(task.id) == 5
        assert await engine.resolve_cursor(task.id, first[2].id) == 3
        more = await engine.publish_event(task.id, EventInput(type="b"))
        assert more.index == 6
        assert [e.index for e in await hot.get_events(task.id, EventQuery())] == list(range(7))
