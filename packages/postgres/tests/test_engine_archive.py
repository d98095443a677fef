"""The archive in use: the engine over PostgreSQL, and an outage simulated with a TCP proxy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskcast.core import (
    EventDraft,
    EventInput,
    EventQuery,
    LongTermStore,
    MemoryShortTermStore,
    Task,
    TaskEngine,
    TaskEvent,
    TaskInput,
    new_id,
    now_ms,
)
from taskcast.postgres import ArchiveWriter, PostgresLongTermStore, RetryPolicy

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def settle() -> None:
    """Let the engine's archive jobs (scheduled after each commit) run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def eventually(predicate: Any, what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never became true: {what}")


async def publish_story(engine: TaskEngine) -> str:
    task = await engine.create_task(TaskInput(type="llm.chat", params={"prompt": "héllo"}))
    await engine.transition_task(task.id, "running")
    await engine.publish_events(
        task.id,
        [EventInput(type="llm.delta", data={"text": f"tok{i}"}) for i in range(5)]
        + [
            EventInput(type="progress", data={"pct": p}, series_id="pct", series_mode="latest")
            for p in (10, 50)
        ],
    )
    await engine.publish_event(
        task.id, EventInput(type="note", data={"n": 2**64}, idempotency_key="k")
    )
    await engine.transition_task(task.id, "completed", result={"answer": 42})
    return task.id


@pytest.mark.parametrize("wrapped", [False, True], ids=["direct", "archive-writer"])
async def test_engine_reads_archive_after_hot_store_forgets(
    pg_url: str, migrated: str, wrapped: bool
) -> None:
    def long_term() -> LongTermStore:
        store = PostgresLongTermStore(pg_url, schema=migrated)
        return ArchiveWriter(store) if wrapped else store

    engine = TaskEngine(short_term=MemoryShortTermStore(), long_term=long_term())
    async with engine:
        task_id = await publish_story(engine)
        await settle()
        hot = await engine.get_events(task_id)
    # engine.stop() waited for the archive writes. A new engine with an empty hot store:
    later = TaskEngine(short_term=MemoryShortTermStore(), long_term=long_term())
    async with later:
        task = await later.get_task(task_id)
        assert task is not None and task.status == "completed" and task.result == {"answer": 42}
        archived = await later.get_events(task_id)
        assert [e.to_dict() for e in archived] == [e.to_dict() for e in hot]
        # The latest series kept only its newest entry; statuses are archived too.
        assert [e.data for e in archived if e.series_id == "pct"] == [{"pct": 50}]
        assert archived[0].type == "taskcast:status"
        assert [e.index for e in await later.get_events(task_id, EventQuery(after_index=5))] == [
            e.index for e in hot if e.index > 5
        ]
        assert await later.delete_task(task_id) is True
        assert await later.get_task(task_id) is None


async def test_outage_loses_nothing(pg_url: str, migrated: str, proxy: Any) -> None:
    """PostgreSQL unreachable mid-stream: publishing goes on, the archive catches up after."""
    through_proxy = PostgresLongTermStore(
        proxy.url(pg_url), schema=migrated, timeout=0.5, connect_timeout=1
    )
    writer = ArchiveWriter(
        through_proxy, retry=RetryPolicy(initial=0.05, maximum=0.2), max_batch=50
    )
    engine = TaskEngine(short_term=MemoryShortTermStore(), long_term=writer)
    direct = PostgresLongTermStore(pg_url, schema=migrated)
    await direct.open()
    try:
        async with engine:
            task = await engine.create_task(TaskInput(type="job"))
            await engine.transition_task(task.id, "running")
            for i in range(20):
                await engine.publish_event(task.id, EventInput(type="before", data={"i": i}))
            await settle()
            assert await writer.flush(timeout=10)
            assert len(await direct.get_events(task.id, EventQuery())) == 21

            proxy.cut()
            other = await engine.create_task(TaskInput(type="job"))
            await engine.transition_task(other.id, "running")
            for i in range(30):
                await engine.publish_events(
                    task.id, [EventInput(type="during", data={"i": i, "j": j}) for j in range(3)]
                )
                await engine.publish_event(other.id, EventInput(type="during", data={"i": i}))
                await asyncio.sleep(0)
            await settle()
            await eventually(lambda: writer.state == "retrying", "writer notices the outage")
            health = writer.health()
            assert health["degraded"] is True and health["backlog"] > 0
            assert health["provider"] == "postgres"
            await engine.transition_task(task.id, "completed", result={"ok": True})
            await settle()
            assert writer.backlog > 0

            proxy.restore()
            assert await writer.flush(timeout=30)
            assert writer.backlog == 0 and writer.state == "healthy"
            assert writer.health()["dropped"] == 0

            hot = await engine.get_events(task.id)
            archived = await direct.get_events(task.id, EventQuery())
            assert len(archived) == 1 + 20 + 90 + 1
            assert [e.to_dict() for e in archived] == [e.to_dict() for e in hot]
            assert len(await direct.get_events(other.id, EventQuery())) == 31
            final = await direct.get_task(task.id)
            assert final is not None and final.status == "completed"
    finally:
        await direct.close()


async def test_reconcile_after_losing_the_queue(
    pg_url: str, migrated: str, proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The process stops during an outage with writes queued; the next one restores them."""
    hot = MemoryShortTermStore()  # stands for Redis/SQLite, which outlive the process
    first = ArchiveWriter(
        PostgresLongTermStore(proxy.url(pg_url), schema=migrated, timeout=0.5, connect_timeout=1),
        retry=RetryPolicy(initial=0.05, maximum=0.2),
        drain_timeout=0.2,
    )
    engine = TaskEngine(short_term=hot, long_term=first)
    async with engine:
        task = await engine.create_task(TaskInput(type="job"))
        await engine.transition_task(task.id, "running")
        await engine.publish_events(task.id, [EventInput(type="a", data=i) for i in range(10)])
        await settle()
        assert await first.flush(timeout=10)
        proxy.cut()
        await engine.publish_events(task.id, [EventInput(type="b", data=i) for i in range(15)])
        await engine.transition_task(task.id, "completed")
        await settle()
    assert first.backlog > 0  # the drain timed out: these writes were only in memory
    assert "writes not stored" in caplog.text
    proxy.restore()

    second = ArchiveWriter(PostgresLongTermStore(pg_url, schema=migrated))
    await second.open()
    try:
        archived = await second.get_events(task.id, EventQuery())
        assert len(archived) == 11
        assert await second.reconcile(hot) == 16
        assert await second.flush(timeout=10)
        expected = await hot.get_events(task.id, EventQuery())
        archived = await second.get_events(task.id, EventQuery())
        assert [e.to_dict() for e in archived] == [e.to_dict() for e in expected]
        final = await second.get_task(task.id)
        assert final is not None and final.status == "completed"
        assert await second.reconcile(hot) == 0
    finally:
        await second.close()


async def test_writer_stops_promptly_wherever_the_stop_lands(
    pg_url: str, migrated: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stops giving up on the drain at once, landing 0, 1, 2... event-loop turns into a
    write: each returns, and what was cut short is written after the next start."""

    class Observed(PostgresLongTermStore):
        writing = asyncio.Event()

        async def save_task(self, task: Task) -> None:
            Observed.writing.set()
            await super().save_task(task)

    store = Observed(pg_url, schema=migrated)
    writer = ArchiveWriter(store, retry=RetryPolicy(initial=0.01, maximum=0.05))
    written: list[tuple[Task, list[TaskEvent]]] = []
    try:
        for turns in range(40):
            await writer.open()
            now = now_ms()
            task = Task(id=new_id(), status="running", created_at=now, updated_at=now)
            events = [
                EventDraft(id=new_id(), timestamp=now, type="n", level="info", data=i).at(
                    task.id, i
                )
                for i in range(3)
            ]
            written.append((task, events))
            Observed.writing.clear()
            writer.submit(task, events)
            await Observed.writing.wait()
            for _ in range(turns % 20):
                await asyncio.sleep(0)
            stopping = asyncio.ensure_future(writer.stop(timeout=0))
            done, _ = await asyncio.wait({stopping}, timeout=30)
            assert done, f"stop() did not return ({turns} turns in)"
            stopping.result()
        # Nothing is lost: every write cut short was back in the queue.
        await writer.open()
        assert await writer.flush(timeout=30)
        for task, events in written:
            assert await store.get_task(task.id) == task
            stored = await store.get_events(task.id, EventQuery())
            assert [e.to_dict() for e in stored] == [e.to_dict() for e in events]
    finally:
        await writer.close()
    assert "did not stop" not in caplog.text
