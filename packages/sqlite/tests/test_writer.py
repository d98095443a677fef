"""Group commit, commit-order resolution, per-job isolation and the event loop."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from taskcast.core import (
    CommitResult,
    EventQuery,
    StorageUnavailableError,
    TaskNotFoundError,
    TaskTerminalError,
)
from taskcast.sqlite import SQLiteStore, WriterStats
from taskcast.sqlite._checkpoint import FALLBACK_PAGES, Checkpointer
from taskcast.sqlite._writer import Job, Writer

from ._helpers import draft, make_task, raw_connection, writer_held

pytestmark = pytest.mark.anyio


async def test_group_commit_under_200_concurrent_publishers(sqlite_store: SQLiteStore) -> None:
    task = make_task()
    await sqlite_store.create_task(task)
    before = sqlite_store.stats
    async with writer_held(sqlite_store):
        publishers = [
            asyncio.ensure_future(sqlite_store.commit_events(task.id, [draft(i)]))
            for i in range(200)
        ]
        await asyncio.sleep(0.01)
        assert not any(p.done() for p in publishers)
    results = await asyncio.gather(*publishers)
    assert sorted(r.events[0].index for r in results) == list(range(200))
    stats = sqlite_store.stats
    # The held job, then every queued publisher in a single transaction.
    assert stats.jobs - before.jobs == 201
    assert stats.transactions - before.transactions == 2
    assert stats.largest_group == 200
    stored = await sqlite_store.get_events(task.id, EventQuery())
    assert [e.index for e in stored] == list(range(200))


async def test_jobs_of_one_loop_turn_reach_the_thread_together(
    sqlite_store: SQLiteStore,
) -> None:
    # The jobs submitted during one turn of the loop are handed to the thread at the end of
    # the turn, as one batch: one wake-up (and GIL hand-over) instead of one per job, and
    # one transaction.
    writer = sqlite_store._writer
    assert writer is not None
    loop = asyncio.get_running_loop()
    before = sqlite_store.stats
    futures = [loop.create_future() for _ in range(3)]
    for future in futures:
        writer.submit(Job(lambda conn: conn.execute("SELECT 1").fetchone(), loop, future))
    # Block the loop on purpose: the thread would have run the jobs by now, had it been woken.
    time.sleep(0.05)  # noqa: ASYNC251
    assert sqlite_store.stats == before
    assert await asyncio.gather(*futures) == [(1,)] * 3
    stats = sqlite_store.stats
    assert stats.jobs - before.jobs == 3
    assert stats.transactions - before.transactions == 1


async def test_futures_resolve_in_commit_order(sqlite_store: SQLiteStore) -> None:
    task = make_task()
    await sqlite_store.create_task(task)
    completed: list[int] = []

    async def publish(i: int) -> None:
        result = await sqlite_store.commit_events(task.id, [draft(i)])
        completed.append(result.events[0].index)

    async with writer_held(sqlite_store):
        jobs = [asyncio.ensure_future(publish(i)) for i in range(100)]
        await asyncio.sleep(0.01)
    await asyncio.gather(*jobs)
    assert completed == list(range(100))


async def test_max_group_splits_transactions(db_path: Path) -> None:
    store = SQLiteStore(db_path, max_group=10)
    await store.open()
    try:
        task = make_task()
        await store.create_task(task)
        async with writer_held(store):
            pending = [store.commit_events(task.id, [draft(i)]) for i in range(35)]
            futures = [asyncio.ensure_future(p) for p in pending]
            await asyncio.sleep(0.01)
        await asyncio.gather(*futures)
        assert store.stats.largest_group == 10
        assert await store.last_index(task.id) == 34
    finally:
        await store.close()


async def test_a_failing_job_does_not_undo_its_group(
    sqlite_store: SQLiteStore, db_path: Path
) -> None:
    task = make_task()
    done = make_task()
    for t in (task, done):
        await sqlite_store.create_task(t)
    rev = await sqlite_store.get_task_revision(done.id)
    assert rev is not None
    await sqlite_store.commit_transition(rev[0].copy(status="completed"), rev[1], [])
    lat = {"series_id": "p", "series_mode": "latest"}
    await sqlite_store.commit_events(task.id, [draft({"pct": 1}, **lat)])
    # A trigger that fails one insert half-way through its job: the latest entry it
    # replaced (already deleted in that job) must come back with the savepoint rollback.
    with raw_connection(db_path) as conn:
        conn.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.data LIKE '%boom%' "
            "BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
        )

    async with writer_held(sqlite_store):
        calls = [
            sqlite_store.commit_events(task.id, [draft("a")]),
            sqlite_store.commit_events("missing", [draft()]),
            sqlite_store.commit_events(done.id, [draft()]),
            sqlite_store.commit_events(task.id, [draft({"pct": "boom"}, **lat)]),
            sqlite_store.commit_events(task.id, [draft("b")]),
        ]
        futures = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0.01)
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(outcomes[0], CommitResult) and outcomes[0].events[0].index == 1
    assert isinstance(outcomes[1], TaskNotFoundError)
    assert isinstance(outcomes[2], TaskTerminalError)
    assert isinstance(outcomes[3], StorageUnavailableError)
    assert "boom refused" in str(outcomes[3])
    assert isinstance(outcomes[4], CommitResult) and outcomes[4].events[0].index == 2
    stored = await sqlite_store.get_events(task.id, EventQuery())
    assert [(e.index, e.data) for e in stored] == [(0, {"pct": 1}), (1, "a"), (2, "b")]
    assert await sqlite_store.last_index(task.id) == 2


async def test_unexpected_error_in_a_job_reaches_only_its_caller(
    sqlite_store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    task = make_task()
    await sqlite_store.create_task(task)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE tasks SET next_index = 99")
        raise ValueError("bug")

    async with writer_held(sqlite_store):
        bad = asyncio.ensure_future(sqlite_store._write(broken))
        good = asyncio.ensure_future(sqlite_store.commit_events(task.id, [draft()]))
        await asyncio.sleep(0.01)
    with caplog.at_level(logging.ERROR), pytest.raises(ValueError, match="bug"):
        await bad
    assert (await good).events[0].index == 0


async def test_a_lost_transaction_fails_the_whole_group(sqlite_store: SQLiteStore) -> None:
    task = make_task()
    await sqlite_store.create_task(task)

    def lose_everything(conn: sqlite3.Connection) -> None:
        # What SQLite does on e.g. SQLITE_FULL: the whole transaction is rolled back.
        conn.execute("ROLLBACK")
        raise sqlite3.OperationalError("database or disk is full")

    async with writer_held(sqlite_store):
        first = asyncio.ensure_future(sqlite_store.commit_events(task.id, [draft()]))
        bad = asyncio.ensure_future(sqlite_store._write(lose_everything))
        await asyncio.sleep(0.01)
    for future in (first, bad):
        with pytest.raises(StorageUnavailableError, match="disk is full"):
            await future
    assert await sqlite_store.last_index(task.id) == -1
    # The writer carries on.
    assert (await sqlite_store.commit_events(task.id, [draft()])).events[0].index == 0


async def test_a_failed_commit_fails_the_group_and_rolls_back(sqlite_store: SQLiteStore) -> None:
    task = make_task()
    await sqlite_store.create_task(task)

    def dangling(conn: sqlite3.Connection) -> None:
        # A deferred foreign-key violation only surfaces at COMMIT.
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute("INSERT INTO event_ids VALUES ('no-such-task', 'e', 0)")

    async with writer_held(sqlite_store):
        good = asyncio.ensure_future(sqlite_store.commit_events(task.id, [draft()]))
        bad = asyncio.ensure_future(sqlite_store._write(dangling))
        await asyncio.sleep(0.01)
    for future in (good, bad):
        with pytest.raises(StorageUnavailableError, match="FOREIGN KEY"):
            await future
    assert await sqlite_store.last_index(task.id) == -1
    assert (await sqlite_store.commit_events(task.id, [draft()])).events[0].index == 0


async def test_write_lock_timeout_is_a_storage_error(db_path: Path) -> None:
    store = SQLiteStore(db_path, busy_timeout=0.05)
    await store.open()
    try:
        task = make_task()
        await store.create_task(task)
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageUnavailableError, match="locked"):
                await store.commit_events(task.id, [draft()])
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert (await store.commit_events(task.id, [draft()])).events[0].index == 0
    finally:
        await store.close()


async def test_event_loop_runs_while_another_process_holds_the_write_lock(
    sqlite_store: SQLiteStore, db_path: Path
) -> None:
    task = make_task()
    await sqlite_store.create_task(task)
    await sqlite_store.commit_events(task.id, [draft(0)])
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        commit = asyncio.ensure_future(sqlite_store.commit_events(task.id, [draft(1)]))
        ticks = 0
        for _ in range(20):  # the loop keeps running other coroutines...
            await asyncio.sleep(0.001)
            ticks += 1
        # ...and reads are served (WAL readers do not wait for the writer).
        assert [e.data for e in await sqlite_store.get_events(task.id, EventQuery())] == [0]
        assert ticks == 20 and not commit.done()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert (await commit).events[0].index == 1


async def test_no_sqlite_call_runs_on_the_event_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[int] = set()

    class Recording(sqlite3.Connection):
        def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
            threads.add(threading.get_ident())
            return super().execute(*args, **kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
            threads.add(threading.get_ident())
            return super().executemany(*args, **kwargs)

    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        threads.add(threading.get_ident())
        return real_connect(*args, factory=Recording, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    store = SQLiteStore(tmp_path / "threads.db")
    await store.open()
    try:
        task = make_task()
        await store.create_task(task)
        await asyncio.gather(
            *(store.commit_events(task.id, [draft(i) for i in range(50)]) for _ in range(10))
        )
        await store.get_events(task.id, EventQuery())
        await store.ping()
        await store.delete_task(task.id)
    finally:
        await store.close()
    assert threads  # the probe saw the calls
    assert threading.get_ident() not in threads


async def test_cancelled_caller_does_not_break_the_writer(sqlite_store: SQLiteStore) -> None:
    task = make_task()
    await sqlite_store.create_task(task)
    async with writer_held(sqlite_store):
        doomed = asyncio.ensure_future(sqlite_store.commit_events(task.id, [draft("x")]))
        await asyncio.sleep(0.01)
        doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    # The write was already queued, so it still happened; nothing blew up.
    result = await sqlite_store.commit_events(task.id, [draft("y")])
    assert result.events[0].index == 1


async def test_store_usable_from_another_event_loop(sqlite_store: SQLiteStore) -> None:
    task = make_task()
    await sqlite_store.create_task(task)

    def other_thread() -> list[int]:
        async def work() -> list[int]:
            results = await asyncio.gather(
                *(sqlite_store.commit_events(task.id, [draft(i)]) for i in range(20))
            )
            return [r.events[0].index for r in results]

        return asyncio.run(work())

    mine = asyncio.gather(*(sqlite_store.commit_events(task.id, [draft()]) for _ in range(20)))
    theirs = await asyncio.to_thread(other_thread)
    indexes = [r.events[0].index for r in await mine] + theirs
    assert sorted(indexes) == list(range(40))


async def test_jobs_racing_with_close_are_answered(sqlite_store: SQLiteStore) -> None:
    writer = sqlite_store._writer
    assert writer is not None
    async with writer_held(sqlite_store):
        closing = asyncio.ensure_future(sqlite_store.close())
        await asyncio.sleep(0.01)  # close() has queued the stop marker
        late = asyncio.get_running_loop().create_future()
        writer.submit(Job(lambda conn: None, asyncio.get_running_loop(), late))
    await closing
    with pytest.raises(StorageUnavailableError, match="closed"):
        await late


def test_results_for_a_closed_loop_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    future: asyncio.Future[Any] = loop.create_future()
    loop.close()
    with caplog.at_level(logging.DEBUG, logger="taskcast.sqlite._writer"):
        Writer._call(loop, [(future, None, None)])  # must not raise on the writer thread
    assert "closed event loop" in caplog.text
    assert not future.done()


def test_stats_default() -> None:
    assert WriterStats() == WriterStats(transactions=0, jobs=0, largest_group=0, checkpoints=0)


async def test_a_lone_failing_job_rolls_back_only_itself(sqlite_store: SQLiteStore) -> None:
    # A group of one runs without a savepoint: its own transaction is rolled back instead.
    task = make_task()
    await sqlite_store.create_task(task)

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE tasks SET next_index = 99 WHERE id = ?", (task.id,))
        raise sqlite3.IntegrityError("constraint refused")

    with pytest.raises(StorageUnavailableError, match="constraint refused"):
        await sqlite_store._write(half_done)
    with pytest.raises(TaskNotFoundError):
        await sqlite_store.commit_events("no-such-task", [draft()])
    assert await sqlite_store.last_index(task.id) == -1
    assert (await sqlite_store.commit_events(task.id, [draft()])).events[0].index == 0


async def test_a_lone_lost_transaction_is_a_storage_error(sqlite_store: SQLiteStore) -> None:
    task = make_task()
    await sqlite_store.create_task(task)

    def lose_everything(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")
        raise sqlite3.OperationalError("database or disk is full")

    with pytest.raises(StorageUnavailableError, match="disk is full"):
        await sqlite_store._write(lose_everything)
    assert (await sqlite_store.commit_events(task.id, [draft()])).events[0].index == 0


async def test_checkpoints_run_on_their_own_thread(sqlite_store: SQLiteStore) -> None:
    # The writer only asks; a checkpoint inside a COMMIT would make one publisher wait
    # milliseconds. The writer connection keeps a large automatic checkpoint as fallback.
    writer = sqlite_store._writer
    assert writer is not None and writer.checkpointer is not None
    checkpointed_on: list[str] = []
    thread_of_writer: list[str] = []
    original = writer.checkpointer._run

    def spy(conn: sqlite3.Connection) -> None:
        checkpointed_on.append(threading.current_thread().name)
        original(conn)

    writer.checkpointer._run = spy  # type: ignore[method-assign]
    task = make_task()
    await sqlite_store.create_task(task)
    autocheckpoint = await sqlite_store._write(
        lambda conn: (
            thread_of_writer.append(threading.current_thread().name),
            conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
        )[1]
    )
    assert autocheckpoint == FALLBACK_PAGES
    for i in range(260):  # one transaction each: past the request threshold
        await sqlite_store.commit_events(task.id, [draft(i)])
    for _ in range(200):
        if sqlite_store.stats.checkpoints:
            break
        await asyncio.sleep(0.01)
    assert sqlite_store.stats.checkpoints >= 1
    assert checkpointed_on and checkpointed_on[0] == "taskcast-sqlite-checkpoint"
    assert thread_of_writer == ["taskcast-sqlite-writer"]
    # Everything committed is still there, and the WAL was copied into the file.
    assert await sqlite_store.last_index(task.id) == 259
    with raw_connection(sqlite_store.path) as conn:
        assert (
            conn.execute("SELECT count(*) FROM events WHERE task_id = ?", (task.id,)).fetchone()[0]
            == 260
        )


async def test_a_failing_checkpoint_is_logged_and_the_store_goes_on(
    sqlite_store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    writer = sqlite_store._writer
    assert writer is not None and writer.checkpointer is not None

    def refuse(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    writer.checkpointer._run = refuse  # type: ignore[method-assign]
    task = make_task()
    await sqlite_store.create_task(task)
    with caplog.at_level(logging.WARNING, logger="taskcast.sqlite._checkpoint"):
        for i in range(260):
            await sqlite_store.commit_events(task.id, [draft(i)])
        for _ in range(200):
            if "background checkpoint failed" in caplog.text:
                break
            await asyncio.sleep(0.01)
    assert "background checkpoint failed: disk I/O error" in caplog.text
    assert await sqlite_store.last_index(task.id) == 259


def test_checkpointer_without_a_connection_leaves_checkpoints_to_the_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse() -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    checkpointer = Checkpointer(refuse)
    with caplog.at_level(logging.WARNING, logger="taskcast.sqlite._checkpoint"):
        checkpointer.start()
        checkpointer.request()
        checkpointer.stop()
    assert "no checkpoint connection" in caplog.text
    assert checkpointer.checkpoints == 0
