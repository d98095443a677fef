"""The archive gap check on Redis: a surviving engine archives what another one had queued.

Two engines share one Redis prefix and one archive, like two server processes. The victim's
archive writer never writes (it lingers for an hour), as if the process had died with its
queue; the survivor's check must find the writes and archive them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from taskcast.core import (
    ArchiveCheckConfig,
    ArchiveWriter,
    ConfigError,
    EventInput,
    EventQuery,
    MemoryLongTermStore,
    MemoryShortTermStore,
    TaskEngine,
    TaskInput,
    tracks_archive,
)
from taskcast.redis import RedisShortTermStore

pytestmark = pytest.mark.anyio

FAST = ArchiveCheckConfig(interval_seconds=0.1, grace_seconds=0.5)


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def engine(url: str, prefix: str, archive: Any, check: ArchiveCheckConfig = FAST) -> TaskEngine:
    return TaskEngine(
        short_term=RedisShortTermStore(url, prefix=prefix),
        long_term=archive,
        archive_check=check,
        reconcile_archive_on_start=False,
    )


async def test_survivor_archives_what_a_dead_writer_had_queued(redis_url: str, prefix: str) -> None:
    archive = MemoryLongTermStore()
    # The victim's writer holds every write for an hour: a process killed with its queue.
    stuck = ArchiveWriter(archive, linger=3600)
    victim = engine(redis_url, prefix, stuck, ArchiveCheckConfig(interval_seconds=0))
    survivor = engine(redis_url, prefix, archive)
    assert tracks_archive(survivor.short_term)
    async with victim, survivor:
        task = await victim.create_task()
        await victim.transition_task(task.id, "running")
        published = await victim.publish_events(
            task.id, [EventInput(type="t", data=i) for i in range(7)]
        )
        assert stuck.backlog > 0
        assert await archive.get_task(task.id) is None
        checker = survivor.archive_checker
        assert checker is not None

        async def archived() -> bool:
            stored = {e.id for e in await archive.get_events(task.id, EventQuery())}
            return {e.id for e in published} <= stored

        # The gap is reported while it exists (once writes are older than the grace)...
        async def reported() -> bool:
            return checker.health()["tasks"] == 1 or await archived()

        await eventually(reported)
        started = time.monotonic()
        await eventually(archived)
        assert time.monotonic() - started < FAST.grace_seconds + 5
        stored_task = await archive.get_task(task.id)
        assert stored_task is not None and stored_task.status == "running"
        assert checker.requeued >= 8

        # ... and no longer once the archive holds everything: the record is cleared.
        async def cleared() -> bool:
            return checker.health()["tasks"] == 0 and not await pending(survivor)

        await eventually(cleared)


async def pending(engine: TaskEngine) -> list[Any]:
    store = engine.short_term
    assert isinstance(store, RedisShortTermStore)
    return list(await store.client.zrange(store.keys.archive_pending, 0, -1))


async def test_healthy_writers_leave_no_gap_and_no_record(redis_url: str, prefix: str) -> None:
    archive = MemoryLongTermStore()
    a = engine(redis_url, prefix, archive)
    b = engine(redis_url, prefix, archive)
    async with a, b:
        task = await a.create_task()
        await a.transition_task(task.id, "running")
        # Writes keep arriving across several checks: recent writes are not a gap.
        deadline = time.monotonic() + 1.5
        i = 0
        while time.monotonic() < deadline:
            await (a if i % 2 else b).publish_events(task.id, [EventInput(type="t", data=i)])
            i += 1
            await asyncio.sleep(0.02)
        await a.transition_task(task.id, "completed")

        async def settled() -> bool:
            return not await pending(a)

        await eventually(settled)
        for e in (a, b):
            checker = e.archive_checker
            assert checker is not None
            assert checker.requeued == 0
            await checker.refresh()
            assert checker.health()["tasks"] == 0
        assert len(await archive.get_events(task.id, EventQuery())) == i + 2


async def test_a_commit_racing_the_check_keeps_the_record(
    store: RedisShortTermStore, other_store: RedisShortTermStore
) -> None:
    engine_ = TaskEngine(short_term=store, reconcile_archive_on_start=False)
    async with engine_:
        task = await engine_.create_task()
        current = await store.get_task_revision(task.id)
        assert current is not None
        claimed = await store.claim_unarchived(2**62, 10, 60_000)
        assert [tid for tid, _ in claimed] == [task.id]
        # Leased: another process claims nothing.
        assert await other_store.claim_unarchived(2**62, 10, 60_000) == []
        last = await store.last_index(task.id)
        await engine_.publish_events(task.id, [EventInput(type="t")])
        await store.settle_unarchived(
            task.id,
            since=None,
            checked_at=12345,
            expected_revision=current[1],
            expected_last_index=last,
        )
        # The commit after the check keeps the record, dated at the check.
        assert await store.claim_unarchived(2**62, 10, 60_000) == [(task.id, 12345)]
        assert await store.unarchived_overdue(2**62) == (1, 12345)
        await store.settle_unarchived(
            task.id,
            since=None,
            checked_at=99999,
            expected_revision=current[1],
            expected_last_index=last + 1,
        )
        assert await store.unarchived_overdue(2**62) == (0, None)


async def test_release_and_delete_clear_the_record(store: RedisShortTermStore) -> None:
    engine_ = TaskEngine(short_term=store, reconcile_archive_on_start=False)
    async with engine_:
        kept, doomed = await engine_.create_task(), await engine_.create_task()
        await engine_.publish_events(kept.id, [EventInput(type="t")])
        assert sorted(await pending(engine_)) == sorted([kept.id.encode(), doomed.id.encode()])
        current = await store.get_task_revision(kept.id)
        assert current is not None
        # Released only once archived: the archive holds it, so no record is left behind.
        assert await store.release_task(kept.id, current[1], await store.last_index(kept.id))
        assert await engine_.delete_task(doomed.id)
        assert await pending(engine_) == []


class CountingArchive(MemoryLongTermStore):
    def __init__(self) -> None:
        super().__init__()
        self.event_reads: list[int | None] = []

    async def get_events(self, task_id: str, query: EventQuery) -> list[Any]:
        self.event_reads.append(query.after_index)
        return await super().get_events(task_id, query)


async def test_a_busy_task_is_compared_from_where_the_last_check_left_off(
    redis_url: str, prefix: str
) -> None:
    archive = CountingArchive()
    writer = ArchiveWriter(archive, linger=0)
    # Checks run by hand here (the loop's first one is an hour away).
    check = ArchiveCheckConfig(interval_seconds=3600, grace_seconds=0.05)
    async with engine(redis_url, prefix, writer, check) as e:
        checker = e.archive_checker
        assert checker is not None
        task = await e.create_task()
        await e.publish_events(task.id, [EventInput(type="t", data=i) for i in range(5)])
        assert await writer.flush(timeout=5)
        await asyncio.sleep(0.1)
        assert await checker.check() == 0
        assert archive.event_reads == [None] and await pending(e) == []
        await e.publish_events(task.id, [EventInput(type="t", data=i) for i in range(3)])
        assert await writer.flush(timeout=5)
        await asyncio.sleep(0.1)
        assert await checker.check() == 0
        assert archive.event_reads == [None, 4] and await pending(e) == []


class UnmigratedArchive(MemoryLongTermStore):
    async def get_task(self, task_id: str) -> Any:
        raise ConfigError("The PostgreSQL schema is missing; run `taskcast migrate`")


async def test_a_check_failing_the_same_way_warns_once(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskcast.core.archive_check")
    # The writer lingers: nothing is written, so the check always finds the task due.
    writer = ArchiveWriter(UnmigratedArchive(), linger=3600)
    async with engine(redis_url, prefix, writer) as e:
        await e.create_task()
        # Past the grace period, then past the lease the failed check left on the task.
        await asyncio.sleep(FAST.grace_seconds + FAST.lease_ms / 1000 + 1)
    failed = [r for r in caplog.records if r.getMessage().startswith("archive check failed")]
    assert len(failed) >= 2
    assert [r.levelname for r in failed].count("WARNING") == 1


async def test_an_import_is_recorded_so_a_dead_writer_loses_nothing(
    redis_url: str, prefix: str
) -> None:
    """An import is acknowledged once Redis holds it; the archive gets it behind, like a
    publish. It was not recorded for the check, so a process dying with the import still
    queued left the archive without it until an instance next started."""
    archive = MemoryLongTermStore()
    source = TaskEngine(short_term=MemoryShortTermStore())
    async with source:
        task = await source.create_task(TaskInput(id="imported", type="t"))
        await source.transition_task(task.id, "running")
        await source.publish_events(task.id, [EventInput(type="t", data=i) for i in range(5)])
        await source.transition_task(task.id, "completed")
        exported = await source.export_task_archive(task.id)
    stuck = ArchiveWriter(archive, linger=3600)
    victim = engine(redis_url, prefix, stuck, ArchiveCheckConfig(interval_seconds=0))
    survivor = engine(redis_url, prefix, archive)
    async with victim, survivor:
        await victim.import_task_archive(exported)
        assert stuck.backlog > 0 and await archive.get_task("imported") is None
        assert await pending(victim) == [b"imported"]

        async def archived() -> bool:
            events = await archive.get_events("imported", EventQuery())
            return len(events) == len(exported.events)

        await eventually(archived)
        stored = await archive.get_task("imported")
        assert stored is not None and stored.status == "completed"


async def test_a_restore_from_the_archive_is_not_recorded(redis_url: str, prefix: str) -> None:
    """A released task brought back is in the archive already: nothing to check."""
    archive = MemoryLongTermStore()
    store = RedisShortTermStore(redis_url, prefix=prefix)
    a = TaskEngine(short_term=store, long_term=archive, reconcile_archive_on_start=False)
    async with a:
        task = await a.create_task(TaskInput(type="t"))
        await a.transition_task(task.id, "running")
        events = await a.publish_events(task.id, [EventInput(type="t", data=i) for i in range(3)])
        snapshot = await a.get_task(task.id)
        assert snapshot is not None
        await store.client.delete(store.keys.archive_pending)
        await store.delete_task(task.id)
        assert await store.restore_task(snapshot, events, next_index=3, series={}, revision=77)
        assert await pending(a) == []
