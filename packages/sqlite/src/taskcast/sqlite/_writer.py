"""The writer thread: every write of the store, with group commit.

Callers on any event loop submit jobs; the thread takes all jobs waiting, runs them in one
``BEGIN IMMEDIATE ... COMMIT`` (one fsync-free WAL append for the whole group) with a
savepoint per job, so a job that raises rolls back only itself. Only after ``COMMIT``
returns are the callers' futures resolved, through ``call_soon_threadsafe`` and in commit
order: the engine broadcasts in the order its commits complete, so completion order must
be index order.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from taskcast.core import StorageUnavailableError, TaskcastError

from ._checkpoint import Checkpointer

__all__ = ["Job", "Writer", "WriterStats", "storage_error"]

logger = logging.getLogger(__name__)


def _is_full(exc: sqlite3.Error) -> bool:
    # SQLITE_FULL: the disk is full (SQLite maps ENOSPC to it) or max_page_count is reached.
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def storage_error(exc: sqlite3.Error, context: str) -> StorageUnavailableError:
    """The Taskcast error for a failed SQLite call (the cause stays chained)."""
    error = StorageUnavailableError("sqlite", f"{context}: {exc}")
    error.__cause__ = exc
    return error


@dataclass(slots=True, frozen=True, kw_only=True)
class WriterStats:
    """Counters of the writer thread since the store was opened."""

    transactions: int = 0
    """Committed write transactions (groups)."""
    jobs: int = 0
    """Write operations run (succeeded or raised)."""
    largest_group: int = 0
    """The most operations one transaction carried."""
    checkpoints: int = 0
    """WAL checkpoints run by the background checkpoint thread."""


@dataclass(slots=True, eq=False)
class Job:
    """One write: ``fn(conn)`` runs on the writer thread; its outcome settles ``future``."""

    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


_Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]

# A background checkpoint is asked for after this many transactions or changed rows,
# whichever comes first: about SQLite's own 1,000-page threshold for single-event commits.
_CHECKPOINT_TRANSACTIONS: Final = 250
_CHECKPOINT_CHANGES: Final = 3000


def _settle(outcomes: list[_Outcome]) -> None:
    """Resolve futures on their loop, in the given (commit) order."""
    for future, result, error in outcomes:
        if future.done():  # the caller was cancelled; the write happened anyway
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class Writer:
    """Owns the write connection and the thread that uses it."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, max_group: int) -> None:
        self._connect = connect
        self._max_group = max_group
        self._queue: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        # Jobs submitted during the current turn of each caller's loop, handed to the thread
        # together at the end of the turn.
        self._pending: dict[asyncio.AbstractEventLoop, list[Job]] = {}
        self._thread = threading.Thread(
            target=self._main, name="taskcast-sqlite-writer", daemon=True
        )
        self._stats = WriterStats()
        self._ready: Job | None = None
        self._closed: Job | None = None
        self.checkpointer: Checkpointer | None = None
        """Set by the store once the thread runs: WAL checkpoints then leave the writer (see
        _checkpoint)."""
        self._since_checkpoint = (0, 0)  # (transactions, total_changes) at the last request
        self.full: str | None = None
        """Why the last writes failed for lack of space (SQLITE_FULL), until a write
        commits again; the store's ping reports it."""

    @property
    def stats(self) -> WriterStats:
        checkpointer = self.checkpointer
        if checkpointer is None:
            return self._stats
        return replace(self._stats, checkpoints=checkpointer.checkpoints)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    async def start(self, setup: Callable[[sqlite3.Connection], Any]) -> None:
        """Start the thread; it connects and runs ``setup``; raise what they raised."""
        loop = asyncio.get_running_loop()
        self._ready = Job(setup, loop, loop.create_future())
        self._thread.start()
        await self._ready.future

    def submit(self, job: Job) -> None:
        """Queue ``job``; the jobs of one loop turn reach the thread as one hand-over.

        Waking the thread once per job cost a GIL hand-over per publish (~2 per request
        with the reply), which under load was more than the SQLite work itself.
        """
        pending = self._pending.get(job.loop)
        if pending is None:
            self._pending[job.loop] = [job]
            job.loop.call_soon(self._flush, job.loop)
        else:
            pending.append(job)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = self._pending.pop(loop, None)
        if jobs:
            self._queue.put(jobs)

    async def stop(self) -> None:
        """Finish the jobs already submitted, then close the connection and end the thread."""
        if not self._thread.is_alive():
            return
        loop = asyncio.get_running_loop()
        self._closed = Job(lambda conn: None, loop, loop.create_future())
        self._flush(loop)
        self._queue.put(None)
        await self._closed.future

    # -- thread ----------------------------------------------------------------------

    def _main(self) -> None:
        ready = self._ready
        assert ready is not None
        try:
            conn = self._connect()
        except BaseException as exc:
            self._call(ready.loop, [(ready.future, None, exc)])
            return
        try:
            result = ready.fn(conn)
        except BaseException as exc:
            conn.close()
            self._call(ready.loop, [(ready.future, None, exc)])
            return
        self._call(ready.loop, [(ready.future, result, None)])
        try:
            self._loop(conn)
        finally:
            conn.close()
            self._fail_leftovers()
            closed = self._closed
            if closed is not None:
                self._call(closed.loop, [(closed.future, None, None)])

    def _loop(self, conn: sqlite3.Connection) -> None:
        backlog: list[Job] = []
        stop = False
        while True:
            if not backlog:
                if stop:
                    return
                first = self._queue.get()
                if first is None:
                    return
                backlog = list(first)
            while len(backlog) < self._max_group and not stop:
                try:
                    jobs = self._queue.get_nowait()
                except queue.Empty:
                    break
                if jobs is None:
                    stop = True
                else:
                    backlog.extend(jobs)
            group, backlog = backlog[: self._max_group], backlog[self._max_group :]
            self._run_group(conn, group)

    def _run_group(self, conn: sqlite3.Connection, group: list[Job]) -> None:
        try:
            outcomes = self._transaction(conn, group)
        except sqlite3.Error as exc:
            # BEGIN or COMMIT failed (lock timeout, I/O error, full disk): nothing of the
            # group is committed, so every caller gets the error.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # pragma: no cover - the rollback itself failed
                    logger.exception("rollback failed")
            logger.warning("sqlite write transaction failed: %s", exc)
            if _is_full(exc):
                self.full = str(exc)
            outcomes = [(job.future, None, storage_error(exc, "write failed")) for job in group]
        else:
            self._note_space(outcomes)
            self._stats = WriterStats(
                transactions=self._stats.transactions + 1,
                jobs=self._stats.jobs + len(group),
                largest_group=max(self._stats.largest_group, len(group)),
            )
            self._maybe_checkpoint(conn)
        # One callback per loop keeps the resolution order of each loop's futures.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for job, outcome in zip(group, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append(outcome)
        for loop, items in by_loop.items():
            self._call(loop, items)

    def _note_space(self, outcomes: list[_Outcome]) -> None:
        """A write that committed clears the "full" mark; a job refused for space sets it."""
        if any(error is None for _, _, error in outcomes):
            self.full = None
        for _, _, error in outcomes:
            cause = None if error is None else error.__cause__
            if isinstance(cause, sqlite3.Error) and _is_full(cause):
                self.full = str(cause)

    def _maybe_checkpoint(self, conn: sqlite3.Connection) -> None:
        checkpointer = self.checkpointer
        if checkpointer is None:
            return
        transactions, changes = self._stats.transactions, conn.total_changes
        last_transactions, last_changes = self._since_checkpoint
        if (
            transactions - last_transactions >= _CHECKPOINT_TRANSACTIONS
            or changes - last_changes >= _CHECKPOINT_CHANGES
        ):
            self._since_checkpoint = (transactions, changes)
            checkpointer.request()

    def _transaction(self, conn: sqlite3.Connection, group: list[Job]) -> list[_Outcome]:
        # A group of one needs no savepoint: its transaction is its undo (two statements
        # fewer on the commit path of a lone publish).
        lone = len(group) == 1
        undo = ("ROLLBACK",) if lone else ("ROLLBACK TO job", "RELEASE job")
        conn.execute("BEGIN IMMEDIATE")
        outcomes: list[_Outcome] = []
        for job in group:
            if not lone:
                conn.execute("SAVEPOINT job")
            outcome = self._run_job(conn, job, undo)
            if outcome[2] is None and not lone:
                conn.execute("RELEASE job")
            outcomes.append(outcome)
        if conn.in_transaction:
            conn.execute("COMMIT")
        return outcomes

    @staticmethod
    def _run_job(conn: sqlite3.Connection, job: Job, undo: tuple[str, ...]) -> _Outcome:
        """Run one job; if it raises, undo what it wrote (``undo``) and return its error."""
        try:
            result = job.fn(conn)
        except TaskcastError as exc:
            error: BaseException = exc
        except sqlite3.Error as exc:
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (e.g. SQLITE_FULL): the jobs
                # before this one are lost too, so fail the group.
                raise
            error = storage_error(exc, "write failed")
        except Exception as exc:
            logger.exception("unexpected error in a sqlite write")
            error = exc
        else:
            return (job.future, result, None)
        for statement in undo:
            conn.execute(statement)
        return (job.future, None, error)

    def _fail_leftovers(self) -> None:
        # Jobs that raced with stop(): the connection is gone, answer them instead of
        # leaving their callers waiting forever.
        while True:
            try:
                jobs = self._queue.get_nowait()
            except queue.Empty:
                return
            for job in jobs or ():
                error = StorageUnavailableError("sqlite", "store is closed")
                self._call(job.loop, [(job.future, None, error)])

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, items: list[_Outcome]) -> None:
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:
            # The caller's loop is closed; nobody is waiting for these any more.
            logger.debug("dropping %d results for a closed event loop", len(items))
