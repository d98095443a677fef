import asyncio
import contextlib
import logging
from typing import Any

import pytest

from taskcast.core import (
    CleanupRule,
    EventInput,
    MemoryShortTermStore,
    SchedulerConfig,
    StreamOptions,
    Task,
    TaskcastHooks,
    TaskEngine,
    TaskInput,
    TaskPage,
    TaskQuery,
    TaskStream,
    UsageError,
    matches_cleanup_rule,
    new_id,
)
from taskcast.core.testing import collect, events

from ._stopping import ListingLosesCancellation, returns

pytestmark = pytest.mark.anyio


async def wait_for_status(engine: TaskEngine, task_id: str, status: str) -> None:
    for _ in range(300):
        task = await engine.get_task(task_id)
        if task is not None and task.status == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"task never became {status}")


async def test_ttl_times_out_with_live_subscriber() -> None:
    timeouts: list[str] = []
    hooks = TaskcastHooks(on_task_timeout=lambda t: timeouts.append(t.id))
    config = SchedulerConfig(interval_seconds=0.05)
    async with TaskEngine(
        short_term=MemoryShortTermStore(), scheduler=config, hooks=hooks
    ) as engine:
        task = await engine.create_task(TaskInput(ttl=1))
        assert task.deadline_at == task.created_at + 1000
        await engine.transition_task(task.id, "running")
        frames = await asyncio.wait_for(
            collect(TaskStream(engine, task.id, StreamOptions()).frames()), 3
        )
        assert [e["data"] for e in events(frames)][-1] == {"status": "timeout"}
        assert frames[-1].data == {"reason": "timeout"}
        assert timeouts == [task.id]
        final = await engine.require_task(task.id)
        assert final.deadline_at is None and final.completed_at is not None


async def test_pause_stops_the_clock_and_resume_restarts_it() -> None:
    async with TaskEngine(
        short_term=MemoryShortTermStore(), scheduler=SchedulerConfig(interval_seconds=0)
    ) as engine:
        task = await engine.create_task(TaskInput(ttl=10))
        running = await engine.transition_task(task.id, "running")
        assert running.deadline_at == task.deadline_at
        paused = await engine.transition_task(task.id, "paused")
        assert paused.deadline_at is None
        resumed = await engine.transition_task(task.id, "running")
        assert (
            resumed.deadline_at is not None and resumed.deadline_at >= resumed.updated_at + 10_000
        )
        extended = await engine.transition_task(task.id, "blocked", ttl=100)
        assert extended.deadline_at == extended.updated_at + 100_000 and extended.ttl == 100
        no_ttl = await engine.create_task()
        assert (await engine.transition_task(no_ttl.id, "running")).deadline_at is None


async def test_resume_at_wakes_blocked_task() -> None:
    async with TaskEngine(
        short_term=MemoryShortTermStore(), scheduler=SchedulerConfig(interval_seconds=0.02)
    ) as engine:
        task = await engine.create_task()
        await engine.transition_task(task.id, "running")
        await engine.transition_task(task.id, "blocked", resume_after_ms=50)
        await wait_for_status(engine, task.id, "running")


async def test_two_engines_on_one_store_time_out_once() -> None:
    store = MemoryShortTermStore()
    transitions: list[str] = []
    hooks = TaskcastHooks(on_task_transitioned=lambda t, a, b: transitions.append(b))
    config = SchedulerConfig(interval_seconds=0.01)
    async with (
        TaskEngine(short_term=store, scheduler=config, hooks=hooks) as one,
        TaskEngine(short_term=store, scheduler=config, hooks=hooks) as two,
    ):
        task = await one.create_task(TaskInput(ttl=1))
        await wait_for_status(two, task.id, "timeout")
        await asyncio.sleep(0.05)
    assert transitions.count("timeout") == 1


def test_cleanup_rule_matching() -> None:
    from taskcast.core import Task

    done = Task(
        id="t", status="completed", created_at=0, updated_at=0, completed_at=1000, type="llm.chat"
    )
    assert matches_cleanup_rule(done, CleanupRule(after_ms=500), 1500)
    assert not matches_cleanup_rule(done, CleanupRule(after_ms=501), 1500)
    assert not matches_cleanup_rule(done, CleanupRule(statuses=("failed",)), 2000)
    assert matches_cleanup_rule(done, CleanupRule(task_types=("llm.*",)), 2000)
    assert not matches_cleanup_rule(done, CleanupRule(task_types=("job",)), 2000)
    assert matches_cleanup_rule(done, CleanupRule(target="events"), 2000)
    assert not matches_cleanup_rule(done.copy(status="running"), CleanupRule(), 2000)
    rule = CleanupRule.from_dict(
        {
            "match": {"taskTypes": ["a"], "status": ["completed"]},
            "trigger": {"afterMs": 5},
            "target": "task",
        }
    )
    assert rule == CleanupRule(
        task_types=("a",), statuses=("completed",), after_ms=5, target="task"
    )


async def test_cleanup_deletes_exactly_the_matching_tasks() -> None:
    global_rule = CleanupRule(task_types=("tmp.*",), after_ms=0)
    config = SchedulerConfig(interval_seconds=0, cleanup_rules=[global_rule])
    async with TaskEngine(short_term=MemoryShortTermStore(), scheduler=config) as engine:
        per_task: dict[str, Any] = {
            "rules": [{"trigger": {"afterMs": 0}}, {"trigger": {"afterMs": "x"}}, "junk"]
        }
        a = await engine.create_task(TaskInput(type="tmp.x"))
        b = await engine.create_task(TaskInput(type="keep"))
        c = await engine.create_task(TaskInput(type="keep", cleanup=per_task))
        d = await engine.create_task(TaskInput(type="tmp.y"))  # not finished
        for t in (a, b, c):
            await engine.transition_task(t.id, "cancelled")
        await engine.publish_event(d.id, EventInput(type="x"))
        await engine.scheduler.cleanup()
        assert await engine.get_task(a.id) is None
        assert await engine.get_task(b.id) is not None
        assert await engine.get_task(c.id) is None
        assert await engine.get_task(d.id) is not None
        assert await engine.get_events(a.id) == []


async def test_scheduler_survives_store_errors() -> None:
    errors: list[str] = []

    class Flaky(MemoryShortTermStore):
        calls = 0

        async def list_tasks(self, query: Any) -> Any:
            Flaky.calls += 1
            if Flaky.calls <= 2:
                raise RuntimeError("store hiccup")
            return await super().list_tasks(query)

    hooks = TaskcastHooks(on_unhandled_error=lambda exc, ctx: errors.append(ctx["operation"]))
    async with TaskEngine(
        short_term=Flaky(), hooks=hooks, scheduler=SchedulerConfig(interval_seconds=0.01)
    ) as engine:
        task = await engine.create_task(TaskInput(ttl=1))
        await wait_for_status(engine, task.id, "timeout")
    assert errors[:1] == ["scheduler"]


async def test_cleanup_events_target_deletes_selected_events() -> None:
    rule = {
        "target": "events",
        "trigger": {"afterMs": 0},
        "eventFilter": {"types": ["llm.*"], "levels": ["debug"], "seriesMode": "accumulate"},
    }
    async with TaskEngine(
        short_term=MemoryShortTermStore(), scheduler=SchedulerConfig(interval_seconds=0)
    ) as engine:
        task = await engine.create_task(TaskInput(cleanup={"rules": [rule]}))
        await engine.transition_task(task.id, "running")
        await engine.publish_events(task.id, [
            EventInput(type="llm.delta", level="debug", data=1, series_id="s", series_mode="accumulate"),
            EventInput(type="llm.delta", level="debug", data=2),
            EventInput(type="llm.delta", level="info", data=3),
            EventInput(type="tool", level="debug", data=4),
            EventInput(type="llm.x", level="debug", data=5, series_id="p", series_mode="latest"),
        ])  # fmt: skip
        await engine.transition_task(task.id, "completed")
        await engine.scheduler.cleanup()
        left = [e.data for e in await engine.get_events(task.id) if e.type != "taskcast:status"]
        assert left == [3, 4, 5]
        assert await engine.get_task(task.id) is not None
        await engine.scheduler.cleanup()  # remembered: not re-read
        older = CleanupRule.from_dict({"target": "events", "eventFilter": {"olderThanMs": 10}})
        event = (await engine.get_events(task.id))[0]
        assert older.selects(event, event.timestamp + 11)
        assert not older.selects(event, event.timestamp + 10)
        assert older.selects(event, None)


async def test_stop_ends_the_loop_when_its_cancellation_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = ListingLosesCancellation()
    # Past its deadline: the first tick would time it out.
    due = Task(id=new_id(), status="running", created_at=1, updated_at=1, ttl=1, deadline_at=1)
    await store.create_task(due)
    engine = TaskEngine(short_term=store, scheduler=SchedulerConfig(interval_seconds=0.01))
    async with engine:
        await store.listing.wait()  # the first tick lists the active tasks on the slow store
        scheduler = engine.scheduler
        # Before the fix the loop went on after the lost cancellation (timing the task out
        # and listing again) and stop() never returned.
        stopped = await returns(scheduler.stop())
        store.gate.set()  # (so that a loop left running can end at teardown)
        assert stopped, "stop() did not return"
        assert store.lost == 1
        # Stopped during the listing, the tick did nothing more; the next one does it all.
        assert (await engine.require_task(due.id)).status == "running"
        store.slow = False
        await scheduler.tick()
        assert (await engine.require_task(due.id)).status == "timeout"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_stop_is_bounded_when_the_loop_never_ends(caplog: pytest.LogCaptureFixture) -> None:
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

    store = Stuck()
    engine = TaskEngine(
        short_term=store, scheduler=SchedulerConfig(interval_seconds=0.01), stop_timeout_seconds=0.2
    )
    await engine.start()
    await store.listing.wait()
    loop_task = engine.scheduler._task
    assert loop_task is not None
    await asyncio.wait_for(engine.stop(), 30)
    assert "scheduler did not stop within 0.2 s" in caplog.text
    assert "list_tasks" in caplog.text  # where it is stuck
    store.gate.set()  # the abandoned loop then sees its stop and ends
    await asyncio.wait({loop_task}, timeout=30)
    assert loop_task.done()


def test_stop_timeout_must_be_positive() -> None:
    with pytest.raises(UsageError, match="stop_timeout_seconds"):
        TaskEngine(short_term=MemoryShortTermStore(), stop_timeout_seconds=0)
