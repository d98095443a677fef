import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskcast.core import (
    EngineLimits,
    EventInput,
    EventQuery,
    InvalidInputError,
    InvalidTransitionError,
    MemoryLongTermStore,
    MemoryShortTermStore,
    SchedulerConfig,
    TaskcastHooks,
    TaskConflictError,
    TaskEngine,
    TaskInput,
    TaskNotFoundError,
    TaskQuery,
    TaskTerminalError,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine() -> AsyncIterator[TaskEngine]:
    async with TaskEngine(short_term=MemoryShortTermStore()) as e:
        yield e


async def test_create_and_get(engine: TaskEngine) -> None:
    task = await engine.create_task(TaskInput(type="llm", params={"a": 1}, ttl=5))
    assert task.status == "pending" and len(task.id) == 26
    assert (await engine.require_task(task.id)).to_dict() == task.to_dict()
    explicit = await engine.create_task(TaskInput(id="my-id"))
    assert explicit.id == "my-id"
    with pytest.raises(TaskConflictError, match="Task already exists: my-id"):
        await engine.create_task(TaskInput(id="my-id"))
    with pytest.raises(TaskNotFoundError, match="Task not found: nope"):
        await engine.require_task("nope")


@pytest.mark.parametrize("ttl", [0, -1, True, 1.5])
async def test_bad_ttl(engine: TaskEngine, ttl: Any) -> None:
    with pytest.raises(InvalidInputError, match="Invalid TTL"):
        await engine.create_task(TaskInput(ttl=ttl))


async def test_bad_inputs(engine: TaskEngine) -> None:
    with pytest.raises(InvalidInputError):
        await engine.create_task(TaskInput(cost=-1))
    with pytest.raises(InvalidInputError):
        await engine.create_task(TaskInput(id=""))
    task = await engine.create_task()
    with pytest.raises(InvalidInputError):
        await engine.transition_task(task.id, "nonsense")
    with pytest.raises(InvalidInputError):
        await engine.transition_task(task.id, "running", ttl=0)
    for bad in [EventInput(type=""), EventInput(type="taskcast:status"),
                EventInput(type="x", level="loud"),  # type: ignore[arg-type]
                EventInput(type="x", series_mode="weird")]:  # type: ignore[arg-type]  # fmt: skip
        with pytest.raises(InvalidInputError):
            await engine.publish_event(task.id, bad)
    with pytest.raises(InvalidInputError):
        await engine.publish_events(task.id, [])
    assert await engine.get_events(task.id) == []


async def test_batch_limit() -> None:
    async with TaskEngine(short_term=MemoryShortTermStore(), limits=EngineLimits(max_batch=2)) as e:
        task = await e.create_task()
        with pytest.raises(InvalidInputError, match="Too many"):
            await e.publish_events(task.id, [EventInput(type="x")] * 3)


async def test_lifecycle_and_status_events(engine: TaskEngine) -> None:
    task = await engine.create_task()
    await engine.publish_event(task.id, EventInput(type="log", data="while pending"))
    running = await engine.transition_task(task.id, "running")
    assert running.status == "running" and running.completed_at is None
    await engine.transition_task(task.id, "paused", reason="wait")
    assert (await engine.require_task(task.id)).reason == "wait"
    await engine.transition_task(task.id, "blocked", blocked_request={"type": "approve", "data": 1},
                                 resume_after_ms=1000)  # fmt: skip
    blocked = await engine.require_task(task.id)
    assert blocked.blocked_request == {"type": "approve", "data": 1} and blocked.resume_at
    resumed = await engine.transition_task(task.id, "running", result={"ok": True})
    assert resumed.reason is None and resumed.blocked_request is None and resumed.resume_at is None
    done = await engine.transition_task(task.id, "completed", result={"answer": 42})
    assert done.completed_at is not None and done.result == {"answer": 42}
    with pytest.raises(
        InvalidTransitionError, match="Invalid transition: completed \u2192 running"
    ):
        await engine.transition_task(task.id, "running")
    with pytest.raises(TaskTerminalError):
        await engine.publish_event(task.id, EventInput(type="late"))
    types = [(e.type, e.data) for e in await engine.get_events(task.id)]
    assert types == [
        ("log", "while pending"),
        ("taskcast:status", {"status": "running"}),
        ("taskcast:status", {"status": "paused"}),
        ("taskcast:status", {"status": "blocked"}),
        ("taskcast:blocked", {"reason": "wait", "request": {"type": "approve", "data": 1}}),
        ("taskcast:status", {"status": "running", "result": {"ok": True}}),
        ("taskcast:resolved", {"resolution": {"ok": True}}),
        ("taskcast:status", {"status": "completed", "result": {"answer": 42}}),
    ]
    with pytest.raises(TaskNotFoundError):
        await engine.transition_task("missing", "running")


async def test_concurrent_terminal_transitions_one_winner(engine: TaskEngine) -> None:
    task = await engine.create_task()
    await engine.transition_task(task.id, "running")

    async def attempt(status: str) -> str:
        try:
            await engine.transition_task(task.id, status)
        except InvalidTransitionError:
            return "conflict"
        return "ok"

    results = await asyncio.gather(*(attempt(s) for s in ["completed", "failed", "cancelled"] * 10))
    assert results.count("ok") == 1


async def test_idempotent_publish(engine: TaskEngine) -> None:
    task = await engine.create_task()
    first = await engine.publish_event(task.id, EventInput(type="x", data=1, idempotency_key="k"))
    again = await engine.publish_event(task.id, EventInput(type="x", data=2, idempotency_key="k"))
    assert again.id == first.id and again.data == 1
    assert len(await engine.get_events(task.id)) == 1


async def test_hooks_fire_and_failures_are_contained() -> None:
    seen: list[str] = []

    async def created(task: Any) -> None:
        seen.append("created")

    def failed(task: Any, error: Any) -> None:
        seen.append(f"failed:{error['message']}")
        raise RuntimeError("hook bug")

    hooks = TaskcastHooks(
        on_task_created=created,
        on_task_failed=failed,
        on_task_timeout=lambda t: seen.append("timeout"),
        on_task_transitioned=lambda t, a, b: seen.append(f"{a}->{b}"),
        on_events_published=lambda tid, evs: seen.append(f"published:{len(evs)}"),
    )
    async with TaskEngine(short_term=MemoryShortTermStore(), hooks=hooks) as engine:
        t1 = await engine.create_task()
        await engine.transition_task(t1.id, "running")
        await engine.publish_events(t1.id, [EventInput(type="a"), EventInput(type="b")])
        await engine.transition_task(t1.id, "failed", error={"message": "boom"})
        t2 = await engine.create_task()
        await engine.transition_task(t2.id, "timeout")
    assert seen == [
        "created", "published:1", "pending->running", "published:2", "published:1",
        "failed:boom", "running->failed", "created", "published:1", "timeout", "pending->timeout",
    ]  # fmt: skip


async def test_list_and_delete(engine: TaskEngine) -> None:
    a = await engine.create_task(TaskInput(type="llm.chat"))
    b = await engine.create_task(TaskInput(type="job"))
    page = await engine.list_tasks(TaskQuery(types=("llm.*",)))
    assert [t.id for t in page.tasks] == [a.id]
    assert len((await engine.list_tasks()).tasks) == 2
    assert await engine.delete_task(b.id) is True
    assert await engine.delete_task(b.id) is False
    assert await engine.get_task(b.id) is None


async def test_long_term_archive_and_fallback() -> None:
    short, long = MemoryShortTermStore(), MemoryLongTermStore()
    async with TaskEngine(short_term=short, long_term=long) as engine:
        task = await engine.create_task(TaskInput(id="arch"))
        await engine.transition_task(task.id, "running")
        await engine.publish_events(task.id, [EventInput(type="x", data=i) for i in range(3)])
        await engine.transition_task(task.id, "completed")
    # stop() flushed the archive writes; the hot store forgets the task.
    assert await short.delete_task("arch")
    async with TaskEngine(short_term=short, long_term=long) as engine:
        got = await engine.require_task("arch")
        assert got.status == "completed"
        events = await engine.get_events("arch", EventQuery(after_index=0))
        assert [e.index for e in events] == [1, 2, 3, 4]
        with pytest.raises(TaskConflictError):
            await engine.create_task(TaskInput(id="arch"))
        assert await engine.delete_task("arch") is True
        assert await engine.get_task("arch") is None


async def test_archive_failure_reports_dropped_events() -> None:
    dropped: list[str] = []

    class Broken(MemoryLongTermStore):
        async def save_events(self, events: Any) -> None:
            raise InvalidInputError("rejected by the archive")

    hooks = TaskcastHooks(on_event_dropped=lambda e, reason: dropped.append(reason))
    async with TaskEngine(
        short_term=MemoryShortTermStore(), long_term=Broken(), hooks=hooks
    ) as engine:
        task = await engine.create_task()
        await engine.publish_event(task.id, EventInput(type="x"))
    assert dropped and all("rejected by the archive" in r for r in dropped)


async def test_archive_is_reconciled_from_the_hot_store_on_start() -> None:
    short, long = MemoryShortTermStore(), MemoryLongTermStore()
    # A process that died before its archive writes landed: only the hot store has the data.
    async with TaskEngine(short_term=short) as first:
        task = await first.create_task(TaskInput(id="lost"))
        await first.transition_task(task.id, "running")
        await first.publish_events(task.id, [EventInput(type="x", data=i) for i in range(3)])
    async with TaskEngine(short_term=short, long_term=long) as second:
        for _ in range(200):
            if len(await long.get_events("lost", EventQuery())) == 4:
                break
            await asyncio.sleep(0.01)
        assert [e.index for e in await long.get_events("lost", EventQuery())] == [0, 1, 2, 3]
        assert (await long.get_task("lost")) is not None
        assert second.reconcile_archive_on_start


async def test_failed_reconcile_is_reported_not_raised() -> None:
    errors: list[str] = []

    class Broken(MemoryShortTermStore):
        async def list_tasks(self, query: Any) -> Any:
            raise RuntimeError("hot store hiccup")

    hooks = TaskcastHooks(on_unhandled_error=lambda exc, ctx: errors.append(ctx["operation"]))
    engine = TaskEngine(short_term=Broken(), long_term=MemoryLongTermStore(), hooks=hooks,
                        scheduler=SchedulerConfig(interval_seconds=0))  # fmt: skip
    async with engine:
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.01)
    assert errors == ["archive-reconcile"]
