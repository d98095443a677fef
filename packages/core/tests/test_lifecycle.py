import asyncio
import contextlib
import logging
from typing import Any

import pytest

from taskcast.core import (
    ArchiveWriter,
    EventInput,
    EventQuery,
    InvalidTransitionError,
    LifecycleConfig,
    MemoryLongTermStore,
    MemoryShortTermStore,
    SchedulerConfig,
    StreamOptions,
    TaskEngine,
    TaskInput,
    TaskPage,
    TaskQuery,
    TaskStream,
    TaskTerminalError,
    UsageError,
    collapse,
    rehydrate,
    series_states,
    supports_release,
)
from taskcast.core.testing import collect

from ._stopping import ListingLosesCancellation, returns

pytestmark = pytest.mark.anyio

FAST = LifecycleConfig(
    enabled=False, terminal_release_after_seconds=0.001, idle_release_after_seconds=0.001
)


def engine_with(config: LifecycleConfig = FAST) -> tuple[TaskEngine, MemoryShortTermStore]:
    hot = MemoryShortTermStore()
    engine = TaskEngine(
        short_term=hot,
        long_term=MemoryLongTermStore(),
        lifecycle=config,
        scheduler=SchedulerConfig(interval_seconds=0),
    )
    return engine, hot


async def frames_of(engine: TaskEngine, task_id: str, **options: Any) -> list[Any]:
    stream = TaskStream(engine, task_id, StreamOptions(**options))
    return await asyncio.wait_for(collect(stream.frames()), 5)


async def released(engine: TaskEngine, task_id: str) -> None:
    assert engine.archive is not None
    assert await engine.archive.flush(5)
    await asyncio.sleep(0.01)
    assert await engine.lifecycle.sweep() == 1
    assert await engine.short_term.get_task(task_id) is None


async def test_finished_task_replays_identically_after_release() -> None:
    engine, _ = engine_with()
    async with engine:
        task = await engine.create_task(TaskInput(type="job"))
        await engine.transition_task(task.id, "running")
        published = await engine.publish_events(
            task.id,
            [
                EventInput(type="log", data=1),
                EventInput(type="t", data={"delta": "a"}, series_id="s", series_mode="accumulate"),
                EventInput(type="t", data={"delta": "b"}, series_id="s", series_mode="accumulate"),
                EventInput(type="p", data=1, series_id="p", series_mode="latest"),
                EventInput(type="p", data=2, series_id="p", series_mode="latest"),
            ],
        )
        await engine.transition_task(task.id, "completed", result={"ok": True})
        before_full = await frames_of(engine, task.id)
        before_resume = await frames_of(engine, task.id, since_id=published[1].id)
        before_task = await engine.get_task(task.id)
        last = await engine.last_index(task.id)
        await released(engine, task.id)
        assert await engine.get_task(task.id) == before_task
        assert await engine.last_index(task.id) == last
        assert await frames_of(engine, task.id) == before_full
        assert await frames_of(engine, task.id, since_id=published[1].id) == before_resume
        assert await engine.resolve_cursor(task.id, published[4].id) == published[4].index
        # A replaced ``latest`` id is not archived: the stream resyncs instead of guessing.
        assert await engine.resolve_cursor(task.id, published[3].id) is None
        resync = await frames_of(engine, task.id, since_id=published[3].id)
        assert resync[1].event == "taskcast.resync"
        with pytest.raises(TaskTerminalError):
            await engine.publish_event(task.id, EventInput(type="late"))
        with pytest.raises(InvalidTransitionError):
            await engine.transition_task(task.id, "running")
        assert await engine.short_term.get_task(task.id) is None
        assert engine.lifecycle.health()["released"] == 1


async def test_idle_task_comes_back_on_publish_with_state() -> None:
    engine, hot = engine_with()
    async with engine:
        task = await engine.create_task(TaskInput())
        await engine.transition_task(task.id, "running")
        first = await engine.publish_events(
            task.id,
            [
                EventInput(type="log", data=0, idempotency_key="k"),
                EventInput(type="t", data={"delta": "ab"}, series_id="s", series_mode="accumulate"),
            ],
        )
        await released(engine, task.id)
        # The first write brings the task back, indexes continue, series and keys survive.
        again = await engine.publish_events(
            task.id,
            [
                EventInput(type="log", data=9, idempotency_key="k"),
                EventInput(type="t", data={"delta": "cd"}, series_id="s", series_mode="accumulate"),
            ],
        )
        assert again[0].id == first[0].id
        assert again[1].index == first[1].index + 1
        assert again[1].data == {"delta": "cd"}
        merged = collapse(await engine.get_events(task.id))
        assert merged[-1].data == {"delta": "abcd"} and merged[-1].series_snapshot
        stored = await hot.get_events(task.id, EventQuery())
        assert [e.index for e in stored] == [0, 1, 2, 3]
        # A transition brings a released task back too.
        assert engine.archive is not None
        await released(engine, task.id)
        updated = await engine.transition_task(task.id, "completed")
        assert updated.status == "completed"
        assert await engine.last_index(task.id) == 4


async def test_release_waits_for_the_archive() -> None:
    engine, _ = engine_with()
    async with engine:
        task = await engine.create_task(TaskInput())
        await engine.publish_event(task.id, EventInput(type="x"))
        assert engine.archive is not None
        await engine.archive.flush(5)
        # Lose the archived event: the sweep queues it again instead of releasing.
        durable = engine.archive.long_term
        assert isinstance(durable, MemoryLongTermStore)
        await durable.delete_task(task.id)
        await asyncio.sleep(0.01)
        assert await engine.lifecycle.sweep() == 0
        assert await engine.short_term.get_task(task.id) is not None
        await released(engine, task.id)
        assert [e.type for e in await engine.get_events(task.id)] == ["x"]


async def test_what_is_never_released() -> None:
    never = LifecycleConfig(
        enabled=False, terminal_release_after_seconds=0, idle_release_after_seconds=0
    )
    engine, _ = engine_with(never)
    async with engine:
        idle = await engine.create_task(TaskInput())
        done = await engine.create_task(TaskInput())
        await engine.transition_task(done.id, "running")
        await engine.transition_task(done.id, "cancelled")
        assert engine.archive is not None
        await engine.archive.flush(5)
        assert await engine.lifecycle.sweep() == 0
    engine, _ = engine_with()
    async with engine:
        timed = await engine.create_task(TaskInput(ttl=3600))
        blocked = await engine.create_task(TaskInput())
        await engine.transition_task(blocked.id, "running")
        await engine.transition_task(blocked.id, "blocked", resume_after_ms=3_600_000)
        assert engine.archive is not None
        await engine.archive.flush(5)
        await asyncio.sleep(0.01)
        assert await engine.lifecycle.sweep() == 0
        assert await engine.get_task(timed.id) is not None
    slow = LifecycleConfig(enabled=False, idle_release_after_seconds=3600)
    engine, _ = engine_with(slow)
    async with engine:
        fresh = await engine.create_task(TaskInput())
        old = await engine.create_task(TaskInput())
        assert supports_release(engine.short_term)
        # Created long ago, but an event arrived just now: still active.
        hot = engine.short_term
        assert isinstance(hot, MemoryShortTermStore)
        hot._slots[old.id].task = hot._slots[old.id].task.copy(updated_at=1)
        await engine.publish_event(old.id, EventInput(type="x"))
        assert await engine.lifecycle.sweep() == 0
        assert await engine.short_term.get_task(fresh.id) is not None
        assert await engine.short_term.get_task(idle.id) is None  # the first engine's


async def test_sweep_batch_and_races() -> None:
    config = LifecycleConfig(
        enabled=False,
        terminal_release_after_seconds=0.001,
        idle_release_after_seconds=0.001,
        batch_size=2,
    )
    engine, hot = engine_with(config)
    async with engine:
        ids = [(await engine.create_task(TaskInput())).id for _ in range(3)]
        assert engine.archive is not None
        await engine.archive.flush(5)
        await asyncio.sleep(0.01)
        assert await engine.lifecycle.sweep() == 2
        assert await engine.lifecycle.sweep() == 1
        assert [await hot.get_task(i) for i in ids] == [None, None, None]
        assert await engine.lifecycle.release(ids[0]) is False  # already gone
        # A write between the archive check and the release makes the release a no-op.
        task = await engine.create_task(TaskInput())
        await engine.archive.flush(5)
        current = await hot.get_task_revision(task.id)
        assert current is not None
        await engine.publish_event(task.id, EventInput(type="x"))
        assert await hot.release_task(task.id, current[1], -1) is False


async def test_worker_runs_in_the_background() -> None:
    config = LifecycleConfig(
        terminal_release_after_seconds=0.001,
        idle_release_after_seconds=0.001,
        sweep_interval_seconds=0.02,
    )
    hot = MemoryShortTermStore()
    archive = ArchiveWriter(MemoryLongTermStore())
    async with TaskEngine(
        short_term=hot,
        long_term=archive,
        lifecycle=config,
        scheduler=SchedulerConfig(interval_seconds=0),
    ) as engine:
        task = await engine.create_task(TaskInput())
        await engine.publish_event(task.id, EventInput(type="x"))
        for _ in range(500):
            if await hot.get_task(task.id) is None:
                break
            await asyncio.sleep(0.01)
        assert await hot.get_task(task.id) is None
        assert engine.lifecycle.health()["running"] is True
        assert [e.type for e in await engine.get_events(task.id)] == ["x"]
    assert engine.lifecycle.health()["running"] is False


async def test_worker_survives_errors(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(MemoryShortTermStore):
        async def list_tasks(self, query: Any) -> Any:
            raise RuntimeError("boom")

    config = LifecycleConfig(sweep_interval_seconds=0.01)
    engine = TaskEngine(
        short_term=Broken(),
        long_term=MemoryLongTermStore(),
        lifecycle=config,
        scheduler=SchedulerConfig(interval_seconds=0),
    )
    async with engine:
        for _ in range(300):
            if "lifecycle sweep failed" in caplog.text:
                break
            await asyncio.sleep(0.01)
    assert "lifecycle sweep failed" in caplog.text


async def test_no_worker_without_archive_or_release() -> None:
    async with TaskEngine(short_term=MemoryShortTermStore()) as engine:
        assert engine.lifecycle.health()["running"] is False
        assert await engine.lifecycle.release("x") is False
    assert await rehydrate(MemoryShortTermStore(), None, "x") is None
    missing = await rehydrate(MemoryShortTermStore(), MemoryLongTermStore(), "x")
    assert missing is None

    class Plain(MemoryShortTermStore):
        supports_release = False

    long_term = MemoryLongTermStore()
    engine = TaskEngine(short_term=Plain(), long_term=long_term)
    async with engine:
        task = await engine.create_task(TaskInput())
        assert engine.archive is not None
        await engine.archive.flush(5)
        await engine.short_term.delete_task(task.id)
        assert await rehydrate(engine.short_term, long_term, task.id) is None


def test_config_validation() -> None:
    with pytest.raises(UsageError):
        LifecycleConfig(terminal_release_after_seconds=-1)
    with pytest.raises(UsageError):
        LifecycleConfig(sweep_interval_seconds=0)
    with pytest.raises(UsageError):
        LifecycleConfig(batch_size=0)


def test_series_states_mirror_commits() -> None:
    from taskcast.core import EventDraft

    def ev(i: int, data: Any, sid: str | None = None, mode: Any = None) -> Any:
        draft = EventDraft(
            id=f"e{i}", timestamp=i, type="t", level="info", data=data, series_id=sid,
            series_mode=mode,
        )  # fmt: skip
        return draft.at("t1", i)

    history = [
        ev(0, {"delta": "a"}, "s", "accumulate"),
        ev(1, {"delta": "b"}, "s", "accumulate"),
        ev(2, 5, "p", "latest"),
        ev(3, {"delta": "x"}, "p", "accumulate"),
        ev(4, 1, "k", "keep-all"),
        ev(5, 2),
    ]
    states = series_states(history)
    # The newest event of each series, as plan_commit leaves it.
    assert states["s"] is history[1] and states["p"] is history[3]
    assert set(states) == {"s", "p"}


async def test_archive_writer_reads_include_queued_writes() -> None:
    archive = ArchiveWriter(MemoryLongTermStore())
    from taskcast.core import EventDraft, Task

    task = Task(id="t", status="running", created_at=1, updated_at=1)
    event = EventDraft(id="e", timestamp=1, type="x", level="info").at("t", 7)
    archive.submit(task, [event])  # not opened: stays queued
    assert await archive.resolve_cursor("t", "e") == 7
    assert await archive.resolve_cursor("t", "f") is None
    assert await archive.last_index("t") == 7
    assert await archive.last_index("u") == -1


async def test_engine_wires_a_reconnecting_broadcast_to_the_hub() -> None:
    from taskcast.core import MemoryBroadcast

    class Reconnecting(MemoryBroadcast):
        on_reconnect: Any = None

    broadcast = Reconnecting()
    async with TaskEngine(short_term=MemoryShortTermStore(), broadcast=broadcast) as engine:
        assert broadcast.on_reconnect == engine.hub.notify_gap
    mine = Reconnecting()
    mine.on_reconnect = print
    async with TaskEngine(short_term=MemoryShortTermStore(), broadcast=mine):
        assert mine.on_reconnect is print


async def test_transition_racing_a_release_still_lands() -> None:
    class Racy(MemoryShortTermStore):
        """Another process releases the task right after this one read it."""

        race = True

        async def get_task_revision(self, task_id: str) -> Any:
            current = await super().get_task_revision(task_id)
            if current is not None and self.race:
                self.race = False
                assert await self.release_task(task_id, current[1], await self.last_index(task_id))
            return current

    hot = Racy()
    hot.race = False
    engine = TaskEngine(
        short_term=hot,
        long_term=MemoryLongTermStore(),
        lifecycle=FAST,
        scheduler=SchedulerConfig(interval_seconds=0),
    )
    async with engine:
        task = await engine.create_task(TaskInput())
        await engine.publish_event(task.id, EventInput(type="x"))
        assert engine.archive is not None
        await engine.archive.flush(5)
        hot.race = True
        updated = await engine.transition_task(task.id, "running")
        assert updated.status == "running"
        assert [e.index for e in await hot.get_events(task.id, EventQuery())] == [0, 1]
        # Gone everywhere: still a 404.
        await engine.delete_task(task.id)
        hot.race = False
        from taskcast.core import TaskNotFoundError

        with pytest.raises(TaskNotFoundError):
            await engine.transition_task(task.id, "paused")


async def test_stop_ends_the_worker_when_its_cancellation_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hot = ListingLosesCancellation()
    config = LifecycleConfig(
        terminal_release_after_seconds=0.001,
        idle_release_after_seconds=0,
        sweep_interval_seconds=0.01,
    )
    engine = TaskEngine(
        short_term=hot,
        long_term=MemoryLongTermStore(),
        lifecycle=config,
        scheduler=SchedulerConfig(interval_seconds=0),
        reconcile_archive_on_start=False,
    )
    async with engine:
        task = await engine.create_task(TaskInput())
        await engine.publish_event(task.id, EventInput(type="x"))
        await engine.transition_task(task.id, "running")
        await engine.transition_task(task.id, "completed")
        assert engine.archive is not None
        assert await engine.archive.flush(5)
        await hot.listing.wait()  # a sweep lists the tasks on the slow store
        worker = engine.lifecycle
        # Before the fix the worker went on after the lost cancellation (releasing the task
        # and sweeping again) and stop() never returned.
        stopped = await returns(worker.stop())
        hot.gate.set()  # (so that a loop left running can end at teardown)
        assert stopped, "stop() did not return"
        assert hot.lost == 1
        # Stopped during the listing, the sweep released nothing; a later one does.
        assert worker.released == 0
        assert await hot.get_task(task.id) is not None
        hot.slow = False
        assert await worker.sweep() == 1
        assert await hot.get_task(task.id) is None
        assert (await engine.require_task(task.id)).status == "completed"
        assert [e.type for e in await engine.get_events(task.id)][:1] == ["x"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_stop_is_bounded_when_the_worker_never_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Stuck(MemoryShortTermStore):
        def __init__(self) -> None:
            super().__init__()
            self.listing = asyncio.Event()
            self.gate = asyncio.Event()

        async def list_tasks(self, query: TaskQuery) -> TaskPage:
            self.listing.set()
            while not self.gate.is_set():  # deaf to cancellation: every one is absorbed
                with contextlib.suppress(asyncio.CancelledError):
                    await self.gate.wait()
            return await super().list_tasks(query)

    hot = Stuck()
    engine = TaskEngine(
        short_term=hot,
        long_term=MemoryLongTermStore(),
        lifecycle=LifecycleConfig(sweep_interval_seconds=0.01),
        scheduler=SchedulerConfig(interval_seconds=0),
        reconcile_archive_on_start=False,
        stop_timeout_seconds=0.2,
    )
    await engine.start()
    await hot.listing.wait()
    loop_task = engine.lifecycle._task
    assert loop_task is not None
    await asyncio.wait_for(engine.stop(), 30)
    assert "lifecycle worker did not stop within 0.2 s" in caplog.text
    assert "list_tasks" in caplog.text  # where it is stuck
    assert engine.lifecycle.health()["running"] is False
    hot.gate.set()  # the abandoned loop then sees its stop and ends
    await asyncio.wait({loop_task}, timeout=30)
    assert loop_task.done()
