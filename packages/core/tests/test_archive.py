"""ArchiveWriter semantics, against an in-memory store that can fail on demand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from taskcast.core import (
    ArchiveWriter,
    EventDraft,
    EventInput,
    EventQuery,
    InvalidInputError,
    LifecycleConfig,
    LongTermStore,
    MemoryLongTermStore,
    MemoryShortTermStore,
    RetryPolicy,
    SchedulerConfig,
    StorageUnavailableError,
    Task,
    TaskcastHooks,
    TaskEngine,
    TaskEvent,
    UsageError,
    new_id,
)

from ._stopping import returns

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial=0.001, maximum=0.005, max_attempts=3)


class FlakyStore(MemoryLongTermStore):
    """Memory archive that fails while ``down``, raises queued errors, rejects ``"poison"``."""

    name = "flaky"

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.writes_down = False
        self.errors: list[BaseException] = []
        self.batches: list[int] = []
        self.opened = False

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.opened = False

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailableError("flaky")
        if self.errors:
            raise self.errors.pop(0)

    async def ping(self) -> None:
        self._check()

    def _check_write(self) -> None:
        self._check()
        if self.writes_down:
            raise StorageUnavailableError("flaky", "read-only")

    async def save_task(self, task: Task) -> None:
        self._check_write()
        if task.metadata == {"poison": True}:
            raise InvalidInputError("bad task")
        await super().save_task(task)

    async def save_events(self, events: Sequence[TaskEvent]) -> None:
        self._check_write()
        if any(e.data == "poison" for e in events):
            raise InvalidInputError("bad data")
        self.batches.append(len(events))
        await super().save_events(events)

    async def get_task(self, task_id: str) -> Task | None:
        self._check()
        return await super().get_task(task_id)

    async def get_events(self, task_id: str, query: EventQuery) -> list[TaskEvent]:
        self._check()
        return await super().get_events(task_id, query)


def make_task(task_id: str | None = None, **fields: Any) -> Task:
    fields.setdefault("created_at", 1)
    fields.setdefault("updated_at", 1)
    return Task(id=task_id or new_id(), **fields)


def ev(task_id: str, index: int, data: Any = None, **fields: Any) -> TaskEvent:
    return EventDraft(
        id=new_id(), timestamp=1000 + index, type="t", level="info", data=data, **fields
    ).at(task_id, index)


@pytest.fixture
def flaky() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
async def writer(flaky: FlakyStore) -> AsyncIterator[ArchiveWriter]:
    w = ArchiveWriter(flaky, retry=FAST, max_batch=4)
    await w.open()
    yield w
    await w.close()


async def wait_for(predicate: Any) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met")


async def test_writes_in_batches(flaky: FlakyStore, writer: ArchiveWriter) -> None:
    assert isinstance(writer, LongTermStore)
    assert writer.name == "flaky" and flaky.opened
    task = make_task()
    events = [ev(task.id, i, i) for i in range(10)]
    writer.submit(task, events)
    assert writer.backlog == 11
    assert await writer.flush(timeout=5)
    assert writer.backlog == 0
    stored = await flaky.get_events(task.id, EventQuery())
    assert [e.index for e in stored] == list(range(10))
    assert max(flaky.batches) <= 4
    health = writer.health()
    assert health == {
        "provider": "flaky",
        "state": "healthy",
        "degraded": False,
        "backlog": 0,
        "consecutiveFailures": 0,
        "lastError": None,
        "written": 11,
        "dropped": 0,
        "failing": {"tasks": 0, "writes": 0, "oldestAgeSeconds": None, "lastError": None},
    }


async def test_a_trickle_of_writes_lingers_into_one_batch(flaky: FlakyStore) -> None:
    writer = ArchiveWriter(flaky, linger=0.2)
    await writer.open()
    try:
        task = make_task()
        for i in range(5):
            writer.submit(None, [ev(task.id, i, i)])
            await asyncio.sleep(0.01)
        assert flaky.batches == []  # still lingering
        await wait_for(lambda: writer.backlog == 0)
        assert flaky.batches == [5]
        # flush does not wait out the linger.
        writer.submit(None, [ev(task.id, 5, 5)])
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await writer.flush(timeout=5)
        assert loop.time() - started < 0.15
        assert flaky.batches == [5, 1]
        # Nor does stop: what is queued is written at once.
        writer.submit(None, [ev(task.id, 6, 6)])
        started = loop.time()
        await writer.stop()
        assert loop.time() - started < 0.15
        assert flaky.batches == [5, 1, 1]
    finally:
        await writer.close()


async def test_no_linger_writes_each_arrival(flaky: FlakyStore) -> None:
    writer = ArchiveWriter(flaky, linger=0)
    await writer.open()
    try:
        task = make_task()
        for i in range(3):
            writer.submit(None, [ev(task.id, i, i)])
            await wait_for(lambda: writer.backlog == 0)
        assert flaky.batches == [1, 1, 1]
    finally:
        await writer.close()


async def test_outage_keeps_everything(flaky: FlakyStore, writer: ArchiveWriter) -> None:
    flaky.down = True
    task = make_task()
    await writer.save_task(task)
    await writer.save_events([ev(task.id, 0), ev(task.id, 1)])
    await wait_for(lambda: writer.state == "retrying")
    assert writer.backlog == 3
    health = writer.health()
    assert health["degraded"] is True and health["consecutiveFailures"] >= 1
    assert "flaky unavailable" in health["lastError"]
    await writer.save_events([ev(task.id, 2)])  # more writes while down: still accepted
    assert not await writer.flush(timeout=0.05)
    flaky.down = False
    assert await writer.flush(timeout=5)
    assert writer.state == "healthy" and writer.backlog == 0
    assert [e.index for e in await flaky.get_events(task.id, EventQuery())] == [0, 1, 2]


async def test_task_snapshots_coalesce(flaky: FlakyStore) -> None:
    w = ArchiveWriter(flaky, retry=FAST)
    task = make_task(updated_at=5)
    w.submit(task.copy(status="running", updated_at=10))
    w.submit(task)  # older: ignored
    w.submit(task.copy(status="completed", updated_at=7))  # terminal wins
    w.submit(task.copy(status="running", updated_at=20))  # non-terminal after terminal: ignored
    assert w.backlog == 1
    got = await w.get_task(task.id)  # reads include queued writes
    assert got is not None and got.status == "completed"
    await w.open()
    assert await w.flush(timeout=5)
    stored = await flaky.get_task(task.id)
    assert stored is not None and stored.status == "completed"
    await w.close()


async def test_reads_merge_queued_events(flaky: FlakyStore, writer: ArchiveWriter) -> None:
    task = make_task()
    lat = {"series_id": "p", "series_mode": "latest"}
    writer.submit(task, [ev(task.id, 0, "a"), ev(task.id, 1, {"pct": 1}, **lat)])
    assert await writer.flush(timeout=5)
    flaky.writes_down = True
    writer.submit(None, [ev(task.id, 2, "b"), ev(task.id, 3, {"pct": 2}, **lat)])
    await wait_for(lambda: writer.state == "retrying")
    # The store answers reads but the queued events are not written yet.
    assert len(await flaky.get_events(task.id, EventQuery())) == 2
    merged = await writer.get_events(task.id, EventQuery())
    assert [(e.index, e.data) for e in merged] == [(0, "a"), (2, "b"), (3, {"pct": 2})]
    assert [
        e.index for e in await writer.get_events(task.id, EventQuery(after_index=0, limit=1))
    ] == [2]
    flaky.writes_down = False
    assert await writer.flush(timeout=5)
    assert [e.index for e in await writer.get_events(task.id, EventQuery())] == [0, 2, 3]
    assert (await writer.get_task(task.id)) == task
    assert await writer.get_task("missing") is None


async def test_delete_discards_queued_and_inflight(
    flaky: FlakyStore, writer: ArchiveWriter
) -> None:
    flaky.down = True
    doomed, kept = make_task(), make_task()
    writer.submit(doomed, [ev(doomed.id, 0)])
    await wait_for(lambda: writer.state == "retrying")  # doomed is now in flight
    writer.submit(doomed, [ev(doomed.id, 1)])  # and more of it is queued
    writer.submit(kept, [ev(kept.id, 0)])
    flaky.down = False
    await writer.delete_task(doomed.id)
    assert await writer.flush(timeout=5)
    assert await flaky.get_task(doomed.id) is None
    assert await flaky.get_events(doomed.id, EventQuery()) == []
    assert len(await flaky.get_events(kept.id, EventQuery())) == 1


async def test_bad_data_is_isolated_and_dropped(flaky: FlakyStore) -> None:
    dropped: list[tuple[list[str], str]] = []
    w = ArchiveWriter(
        flaky,
        retry=FAST,
        on_drop=lambda events, reason: dropped.append(([e.id for e in events], reason)),
    )
    await w.open()
    good, bad = make_task(), make_task(metadata={"poison": True})
    events = [ev(good.id, 0, "ok"), ev(good.id, 1, "poison"), ev(good.id, 2, "ok")]
    w.submit(good, events)
    bad_event = ev(bad.id, 0, "ok")
    w.submit(bad, [bad_event])
    assert await w.flush(timeout=5)
    assert [e.index for e in await flaky.get_events(good.id, EventQuery())] == [0, 2]
    assert await flaky.get_task(bad.id) is None
    # The event of the refused task is not written without it (PostgreSQL would skip it).
    assert sorted(dropped) == sorted([([events[1].id], "bad data"), ([bad_event.id], "bad task")])
    health = w.health()
    assert health["dropped"] == 3 and w.backlog == 0
    assert health["degraded"] is True
    assert health["failing"]["tasks"] == 2 and health["failing"]["writes"] == 3
    await w.close()


async def test_unexpected_errors_retried_then_dropped(
    flaky: FlakyStore, writer: ArchiveWriter
) -> None:
    task = make_task()
    flaky.errors.append(RuntimeError("blip"))
    writer.submit(task, [])
    # Retried on the task's own schedule, after the loop went on.
    await wait_for(lambda: writer.health()["written"] == 1)
    assert not writer.is_failing(task.id)
    assert await flaky.get_task(task.id) == task
    flaky.errors.extend(RuntimeError("stuck") for _ in range(FAST.max_attempts))
    other = make_task()
    writer.submit(other, [])
    await wait_for(lambda: writer.health()["dropped"] == 1)
    assert await flaky.get_task(other.id) is None
    assert "stuck" in writer.health()["lastError"]
    assert writer.failing()["tasks"] == 1


async def test_async_on_drop(flaky: FlakyStore) -> None:
    seen: list[str] = []

    async def record(events: Sequence[TaskEvent], reason: str) -> None:
        await asyncio.sleep(0)
        seen.extend(e.id for e in events)

    w = ArchiveWriter(flaky, retry=FAST, on_drop=record)
    await w.open()
    task = make_task()
    bad = ev(task.id, 0, "poison")
    w.submit(task, [bad])
    assert await w.flush(timeout=5)
    assert seen == [bad.id]
    await w.close()


async def test_on_drop_errors_are_contained(
    flaky: FlakyStore, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(events: Sequence[TaskEvent], reason: str) -> None:
        raise RuntimeError("handler bug")

    w = ArchiveWriter(flaky, retry=FAST, on_drop=explode)
    await w.open()
    task = make_task()
    with caplog.at_level(logging.ERROR):
        w.submit(task, [ev(task.id, 0, "poison")])
        assert await w.flush(timeout=5)
    assert "on_drop handler failed" in caplog.text
    await w.close()


async def test_stop_gives_up_after_timeout(
    flaky: FlakyStore, caplog: pytest.LogCaptureFixture
) -> None:
    w = ArchiveWriter(flaky, retry=FAST, drain_timeout=0.05)
    assert await w.flush() is True  # nothing accepted, not started
    await w.stop()  # not started: nothing to do
    w.submit(make_task())
    assert await w.flush() is False  # not started: cannot drain
    await w.open()
    await w.open()
    flaky.down = True
    with caplog.at_level(logging.ERROR):
        await w.close()
    assert "1 writes not stored" in caplog.text
    assert w.state == "stopped" and w.backlog == 1


async def test_ping_and_validation(flaky: FlakyStore, writer: ArchiveWriter) -> None:
    await writer.ping()
    flaky.down = True
    with pytest.raises(StorageUnavailableError):
        await writer.ping()
    with pytest.raises(UsageError):
        ArchiveWriter(flaky, max_batch=0)
    with pytest.raises(UsageError, match="linger"):
        ArchiveWriter(flaky, linger=-1)


async def test_backoff_is_capped() -> None:
    policy = RetryPolicy(initial=1, maximum=4, multiplier=2)
    for failures, cap in [(1, 1), (2, 2), (3, 4), (10, 4)]:
        delay = policy.delay(failures)
        assert cap / 2 <= delay <= cap


async def test_reconcile_restores_missing_writes(flaky: FlakyStore, writer: ArchiveWriter) -> None:
    short = MemoryShortTermStore()
    tasks = [make_task(), make_task(), make_task()]
    for task in tasks:
        await short.create_task(task)
        await short.commit_events(
            task.id,
            [
                EventDraft(id=new_id(), timestamp=1, type="t", level="info", data=i)
                for i in range(3)
            ],
        )
    # The archive got the first task completely and the second one partially.
    await flaky.save_task(tasks[0])
    await flaky.save_events(await short.get_events(tasks[0].id, EventQuery()))
    await flaky.save_task(tasks[1])
    await flaky.save_events((await short.get_events(tasks[1].id, EventQuery()))[:1])
    assert await writer.reconcile(short) == 5
    assert await writer.flush(timeout=5)
    for task in tasks:
        assert len(await flaky.get_events(task.id, EventQuery())) == 3
        assert await flaky.get_task(task.id) == task
    assert await writer.reconcile(short) == 0
    assert await writer.reconcile(short, task_ids=[tasks[0].id, "gone"]) == 0


async def test_reconcile_pages_through_tasks(flaky: FlakyStore, writer: ArchiveWriter) -> None:
    short = MemoryShortTermStore()
    tasks = [make_task(created_at=i) for i in range(5)]
    for task in tasks:
        await short.create_task(task)
    assert await writer.reconcile(short, page_size=2) == 0  # no events, but 5 snapshots
    assert writer.backlog == 5
    assert await writer.flush(timeout=5)
    for task in tasks:
        assert await flaky.get_task(task.id) == task


async def test_stop_keeps_interrupted_batch_and_reopen_resumes(flaky: FlakyStore) -> None:
    w = ArchiveWriter(flaky, retry=FAST, drain_timeout=0.05)
    await w.open()
    flaky.down = True
    task = make_task()
    w.submit(task, [ev(task.id, 0)])
    await wait_for(lambda: w.state == "retrying")  # this batch is in flight
    newer = task.copy(status="running", updated_at=2)
    w.submit(newer, [ev(task.id, 1)])  # queued behind it, same task
    await w.stop()
    assert w.backlog == 3  # the snapshots merged (newest kept) plus both events
    flaky.down = False
    await w.open()
    assert await w.flush(timeout=5)
    assert await flaky.get_task(task.id) == newer
    assert [e.index for e in await flaky.get_events(task.id, EventQuery())] == [0, 1]
    await w.close()


class _WriteLosesCancellation(FlakyStore):
    """An archive whose event write hangs (so a stop's drain times out), then absorbs the
    stop's cancellation, as a call wrapped in ``asyncio.wait_for`` can on Python 3.11
    (CPython gh-86296: it returns when the cancel lands just after the inner call finished),
    and fails like the outage it is part of."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = True
        self.writing = asyncio.Event()
        self.gate = asyncio.Event()
        self.lost = 0

    async def save_events(self, events: Sequence[TaskEvent]) -> None:
        if self.slow:
            self.writing.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.lost += 1
            raise StorageUnavailableError("flaky", "timeout")
        await super().save_events(events)


async def test_stop_ends_the_loop_when_its_cancellation_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _WriteLosesCancellation()
    w = ArchiveWriter(store, retry=FAST, drain_timeout=0.05)
    await w.open()
    task = make_task()
    w.submit(task, [ev(task.id, i) for i in range(3)])
    await store.writing.wait()
    # Before the fix the loop retried the write after the lost cancellation, for as long as
    # the outage lasted, and stop() never returned.
    stopped = await returns(w.stop())
    store.gate.set()  # (so that a loop left running can end at teardown)
    assert stopped, "stop() did not return"
    assert store.lost == 1
    # The interrupted batch is back in the queue (counted as not stored), as on a cancel.
    assert w.state == "stopped" and w.backlog == 4
    assert "4 writes not stored" in caplog.text
    assert "did not stop" not in caplog.text
    store.slow = False
    await w.open()
    assert await w.flush(timeout=5)
    assert await store.get_task(task.id) == task
    assert [e.index for e in await store.get_events(task.id, EventQuery())] == [0, 1, 2]
    await w.close()


async def test_stop_is_bounded_when_the_loop_never_ends(caplog: pytest.LogCaptureFixture) -> None:
    class Stuck(FlakyStore):
        def __init__(self) -> None:
            super().__init__()
            self.writing = asyncio.Event()
            self.gate = asyncio.Event()

        async def save_events(self, events: Sequence[TaskEvent]) -> None:
            self.writing.set()
            while not self.gate.is_set():  # deaf to cancellation: every one is absorbed
                with contextlib.suppress(asyncio.CancelledError):
                    await self.gate.wait()
            await super().save_events(events)

    store = Stuck()
    w = ArchiveWriter(store, retry=FAST, drain_timeout=0.05, cancel_timeout=0.2)
    await w.open()
    task = make_task()
    w.submit(task, [ev(task.id, 0)])
    await store.writing.wait()
    runner = w._runner
    assert runner is not None
    await asyncio.wait_for(w.close(), 30)
    assert "archive writer loop did not stop within 0.2 s" in caplog.text
    assert "save_events" in caplog.text  # where it is stuck
    assert w.state == "stopped"
    store.gate.set()  # the abandoned loop then finishes its write, sees its stop and ends
    await asyncio.wait({runner}, timeout=30)
    assert runner.done()


class _ReadLosesCancellation(MemoryShortTermStore):
    """A hot store whose task reads are slow and absorb a cancellation (see above)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = True
        self.deaf = False
        self.reading = asyncio.Event()
        self.gate = asyncio.Event()
        self.lost = 0

    async def get_task(self, task_id: str) -> Task | None:
        if self.slow:
            self.reading.set()
            while True:
                try:
                    await self.gate.wait()
                except asyncio.CancelledError:
                    self.lost += 1
                    if self.deaf:  # every cancellation is absorbed
                        continue
                break
        return await super().get_task(task_id)


async def _hot_store_with_tasks(hot: MemoryShortTermStore) -> list[Task]:
    tasks = [make_task(created_at=i) for i in range(3)]
    for task in tasks:
        await hot.create_task(task)
        await hot.commit_events(
            task.id,
            [
                EventDraft(id=new_id(), timestamp=1, type="t", level="info", data=i)
                for i in range(2)
            ],
        )
    return tasks


def _engine(hot: MemoryShortTermStore, archive: LongTermStore, **options: Any) -> TaskEngine:
    return TaskEngine(
        short_term=hot,
        long_term=archive,
        scheduler=SchedulerConfig(interval_seconds=0),
        lifecycle=LifecycleConfig(enabled=False),
        **options,
    )


async def test_engine_stop_ends_the_reconcile_when_its_cancellation_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hot = _ReadLosesCancellation()
    tasks = await _hot_store_with_tasks(hot)
    archive = MemoryLongTermStore()
    engine = _engine(hot, archive)
    await engine.start()  # the reconcile starts in the background and reads the first task
    await hot.reading.wait()
    # Before the fix the reconcile went on to the next task after the lost cancellation
    # and engine.stop() never returned.
    stopped = await returns(engine.stop())
    hot.gate.set()  # (so that a reconcile left running can end at teardown)
    assert stopped, "stop() did not return"
    assert hot.lost == 1
    # Stopped at its first read, it queued nothing; the next start's reconcile does it all.
    assert [await archive.get_task(t.id) for t in tasks] == [None, None, None]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    hot.slow = False
    async with _engine(hot, archive) as again:
        assert again.archive is not None and again._reconcile is not None
        await asyncio.wait({again._reconcile}, timeout=30)
        assert await again.archive.flush(timeout=30)
    for task in tasks:
        assert await archive.get_task(task.id) == task
        assert [e.data for e in await archive.get_events(task.id, EventQuery())] == [0, 1]


async def test_engine_stop_is_bounded_when_the_reconcile_never_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hot = _ReadLosesCancellation()
    hot.deaf = True
    await _hot_store_with_tasks(hot)
    engine = _engine(hot, MemoryLongTermStore(), stop_timeout_seconds=0.2)
    await engine.start()
    await hot.reading.wait()
    reconcile = engine._reconcile
    assert reconcile is not None
    await asyncio.wait_for(engine.stop(), 30)
    assert "archive reconcile did not stop within 0.2 s" in caplog.text
    assert "get_task" in caplog.text  # where it is stuck
    hot.gate.set()  # the abandoned reconcile then sees its stop and ends
    await asyncio.wait({reconcile}, timeout=30)
    assert reconcile.done()


class Refusing(MemoryLongTermStore):
    """Refuses events of type ``poison`` (not an outage, not a usage error) while ``refuse``."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse = True
        self.saved: set[str] = set()

    async def save_events(self, events: Sequence[TaskEvent]) -> None:
        if self.refuse and any(e.type == "poison" for e in events):
            # As PostgreSQL does, the second line quotes the refused row.
            raise RuntimeError("value refused by the store\nDETAIL:  Failing row contains (secret)")
        await super().save_events(events)
        self.saved.update(e.id for e in events)


async def test_a_poison_task_backs_off_alone_and_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskcast")
    failures: list[tuple[str, str, int]] = []
    hooks = TaskcastHooks(
        on_archive_failed=lambda task_id, error, attempts: failures.append(
            (task_id, str(error), attempts)
        )
    )
    archive = Refusing()
    retry = RetryPolicy(initial=0.05, maximum=0.05, failing_maximum=0.4, max_attempts=1000)
    writer = ArchiveWriter(archive, retry=retry, linger=0)
    async with TaskEngine(
        short_term=MemoryShortTermStore(), long_term=writer, hooks=hooks
    ) as engine:
        bad, good = await engine.create_task(), await engine.create_task()
        poison = await engine.publish_events(
            bad.id, [EventInput(type="ok"), EventInput(type="poison"), EventInput(type="ok")]
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Every other write keeps flowing while the poison one is retried on its own.
        for i in range(20):
            published = await engine.publish_event(good.id, EventInput(type="t", data=i))
            await wait_for(lambda event_id=published.id: event_id in archive.saved)
        elapsed = loop.time() - started
        stored = {e.id for e in await archive.get_events(bad.id, EventQuery())}
        assert stored == {poison[0].id, poison[2].id}
        failing = writer.failing()
        assert failing["tasks"] == 1 and failing["writes"] == 1
        assert failing["lastError"] == "RuntimeError: value refused by the store"
        assert writer.health()["degraded"] is True and writer.backlog == 0
        # Reported through the engine's hook, attempt by attempt, backing off: not spinning.
        assert failures and {f[0] for f in failures} == {bad.id}
        assert [f[2] for f in failures] == list(range(1, len(failures) + 1))
        assert len(failures) <= 4 + elapsed / 0.2
        # Once the store accepts it, the parked write is stored and the task recovers.
        archive.refuse = False
        await wait_for(lambda: not writer.is_failing(bad.id))
        stored = {e.id for e in await archive.get_events(bad.id, EventQuery())}
        assert poison[1].id in stored
        assert writer.failing()["tasks"] == 0 and writer.health()["degraded"] is False
    # Reported, and logged at ERROR once, without the refused row's content.
    assert "secret" not in caplog.text
    refusals = [r for r in caplog.records if "refuses writes of task" in r.getMessage()]
    assert [r.levelname for r in refusals][:1] == ["ERROR"]
    assert all(r.levelname == "DEBUG" for r in refusals[1:])
