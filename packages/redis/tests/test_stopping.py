"""The engine's background loops over the real Redis store stop promptly wherever the stop lands.

On Python 3.11 a cancellation landing while redis-py's ``asyncio.wait_for``-wrapped socket
write is finishing is lost (CPython gh-86296): the command returns normally in a task that
was cancelled. The scheduler, the lifecycle worker and the archive reconcile must end on
their stop all the same, and leave nothing undone for the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from taskcast.core import (
    EventInput,
    EventQuery,
    LifecycleConfig,
    MemoryLongTermStore,
    SchedulerConfig,
    Task,
    TaskEngine,
    TaskInput,
    TaskPage,
    TaskQuery,
    new_id,
    now_ms,
)
from taskcast.redis import RedisShortTermStore

pytestmark = pytest.mark.anyio

ROUNDS = 40


async def _returns(stop: Awaitable[None]) -> bool:
    """Whether ``stop`` returns (within a generous 30 s)."""
    stopping = asyncio.ensure_future(stop)
    done, _ = await asyncio.wait({stopping}, timeout=30)
    for task in done:
        task.result()
    return bool(done)


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


class _Observed(RedisShortTermStore):
    """The real store, telling when a task listing or a task read starts."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url, prefix=prefix)
        self.listing = asyncio.Event()
        self.reading = asyncio.Event()

    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        self.listing.set()
        return await super().list_tasks(query)

    async def get_task(self, task_id: str) -> Task | None:
        self.reading.set()
        return await super().get_task(task_id)


async def test_scheduler_stops_promptly_wherever_the_stop_lands(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = _Observed(redis_url, prefix)
    engine = TaskEngine(short_term=store, scheduler=SchedulerConfig(interval_seconds=0.001))
    due: list[str] = []
    async with engine:
        scheduler = engine.scheduler
        assert await _returns(scheduler.stop())
        for turns in range(ROUNDS):
            # One task past its deadline per round: a transition for the tick to make.
            now = now_ms()
            task = Task(
                id=new_id(), status="running", created_at=now, updated_at=now, ttl=1, deadline_at=1
            )
            await store.create_task(task)
            due.append(task.id)
            store.listing.clear()
            scheduler.start()
            await store.listing.wait()
            await _turns(turns % 20)
            assert await _returns(scheduler.stop()), f"stop() did not return ({turns} turns in)"
        # Nothing is lost: a tick cut short left its work for the next one.
        await scheduler.tick()
        for task_id in due:
            assert (await engine.require_task(task_id)).status == "timeout"
    assert "did not stop" not in caplog.text


async def test_lifecycle_worker_stops_promptly_wherever_the_stop_lands(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = _Observed(redis_url, prefix)
    config = LifecycleConfig(
        terminal_release_after_seconds=0.001,
        idle_release_after_seconds=0,
        sweep_interval_seconds=0.001,
    )
    engine = TaskEngine(
        short_term=store,
        long_term=MemoryLongTermStore(),
        lifecycle=config,
        scheduler=SchedulerConfig(interval_seconds=0),
        reconcile_archive_on_start=False,
    )
    finished: list[str] = []
    async with engine:
        assert engine.archive is not None
        worker = engine.lifecycle
        assert await _returns(worker.stop())
        for turns in range(ROUNDS):
            # One finished, archived task per round: a release for the sweep to make.
            task = await engine.create_task(TaskInput())
            await engine.publish_event(task.id, EventInput(type="n", data=turns))
            await engine.transition_task(task.id, "running")
            await engine.transition_task(task.id, "completed")
            assert await engine.archive.flush(timeout=30)
            finished.append(task.id)
            store.listing.clear()
            worker.start()
            await store.listing.wait()
            await _turns(turns % 20)
            assert await _returns(worker.stop()), f"stop() did not return ({turns} turns in)"
        # Nothing is lost: released or not, every task reads back whole, and a sweep cut
        # short left its releases for the next one.
        while await worker.sweep():
            pass
        for n, task_id in enumerate(finished):
            assert await store.get_task(task_id) is None
            assert (await engine.require_task(task_id)).status == "completed"
            events = [e for e in await engine.get_events(task_id, EventQuery()) if e.type == "n"]
            assert [e.data for e in events] == [n]
    assert "did not stop" not in caplog.text


async def test_archive_reconcile_stops_promptly_wherever_the_stop_lands(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    archive = MemoryLongTermStore()

    def engine_on(store: RedisShortTermStore) -> TaskEngine:
        return TaskEngine(
            short_term=store,
            long_term=archive,
            scheduler=SchedulerConfig(interval_seconds=0),
            lifecycle=LifecycleConfig(enabled=False),
        )

    # Tasks the archive lacks, as after a crash that lost the archive writer's queue.
    seed = RedisShortTermStore(redis_url, prefix=prefix)
    writer = TaskEngine(short_term=seed, reconcile_archive_on_start=False)
    async with writer:
        ids = []
        for n in range(5):
            task = await writer.create_task(TaskInput())
            await writer.publish_event(task.id, EventInput(type="n", data=n))
            ids.append(task.id)
    for turns in range(ROUNDS):
        store = _Observed(redis_url, prefix)
        engine = engine_on(store)
        await engine.start()  # the reconcile starts in the background
        await (store.listing if turns % 2 else store.reading).wait()
        await _turns(turns % 20)
        assert await _returns(engine.stop()), f"stop() did not return ({turns} turns in)"
    # Nothing is lost: a reconcile that runs to its end restores everything.
    store = _Observed(redis_url, prefix)
    async with engine_on(store) as engine:
        assert engine.archive is not None and engine._reconcile is not None
        await asyncio.wait({engine._reconcile}, timeout=30)
        assert await engine.archive.flush(timeout=30)
    for n, task_id in enumerate(ids):
        assert await archive.get_task(task_id) is not None
        stored = await archive.get_events(task_id, EventQuery())
        assert [e.data for e in stored] == [n]
    assert "did not stop" not in caplog.text
