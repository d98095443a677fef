"""``SQLiteStore``: the embedded short-term store (and archive) on one SQLite file."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from taskcast.core import (
    DEFAULT_CACHE_BYTES,
    CommitResult,
    ConfigError,
    EventCache,
    EventDraft,
    EventQuery,
    StorageUnavailableError,
    Task,
    TaskEvent,
    TaskPage,
    TaskQuery,
)

from . import _ops
from ._checkpoint import FALLBACK_PAGES, Checkpointer
from ._migrations import migrate
from ._outbox import SQLiteWebhookOutbox
from ._writer import Job, Writer, WriterStats, storage_error

__all__ = ["SQLiteStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SYNCHRONOUS: Final = ("NORMAL", "FULL")
_MIN_SQLITE: Final = (3, 24, 0)  # UPSERT; row values (3.15) and JSON functions are older


class _Readers:
    """A small thread pool whose threads each own a read-only WAL connection."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], threads: int) -> None:
        self._connect = connect
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="taskcast-sqlite-read")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(self._conn(), *args)
        except sqlite3.Error as exc:
            raise storage_error(exc, "read failed") from exc

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn, args)

    async def run_plain(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a reader thread, without a connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        """Wait for running reads, then close every connection (called off the loop)."""
        self._pool.shutdown(wait=True)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


def _probe(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT count(*) FROM tasks WHERE 0").fetchone()


# No task can have this id (ids with NUL are refused), and the row never outlives the
# transaction that writes it.
_WRITE_PROBE_ID: Final = "\x00taskcast-write-probe"


def _write_probe(conn: sqlite3.Connection) -> None:
    """Write (and remove) a row of two pages, committed: it needs new pages and a WAL
    append, as a publish does, so it fails while the file or the disk is full."""
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.execute(
        "INSERT INTO tasks (id, status, created_at, data) VALUES (?, 'probe', 0, zeroblob(?))",
        (_WRITE_PROBE_ID, 2 * page_size),
    )
    conn.execute("DELETE FROM tasks WHERE id = ?", (_WRITE_PROBE_ID,))


class SQLiteStore:
    """Tasks and their event streams in one SQLite file.

    Implements :class:`taskcast.core.ShortTermStore`. Writes go through one writer thread
    that commits whatever is queued as a group; reads run on a small pool of reader
    threads. Nothing touches the file on the event loop.

    Args:
        path: The database file; parent directories are created on :meth:`open`.
        synchronous: ``"NORMAL"`` (default) makes an acknowledged commit survive a crash
            of the process; ``"FULL"`` also survives power loss, at an fsync per group.
        busy_timeout: Seconds a write waits for another process holding the file's write
            lock before failing with :class:`~taskcast.core.StorageUnavailableError`.
        read_threads: Reader threads (each with its own connection).
        max_group: Most write operations committed in one transaction.
        cache_bytes: Memory (estimated) for events already decoded, by their stored JSON,
            so a history replayed again is not parsed again; 0 turns the cache off.
    """

    name = "sqlite"
    publishes_on_commit = False
    shared_across_processes = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
        read_threads: int = 4,
        max_group: int = 1000,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        raw = os.fspath(path)
        if not raw or raw == ":memory:" or raw.startswith("file:"):
            raise ConfigError(f"SQLiteStore needs a file path, got {raw!r}")
        if synchronous not in _SYNCHRONOUS:
            raise ConfigError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        if busy_timeout < 0:
            raise ConfigError(f"busy_timeout must be >= 0, got {busy_timeout!r}")
        if read_threads < 1:
            raise ConfigError(f"read_threads must be >= 1, got {read_threads!r}")
        if max_group < 1:
            raise ConfigError(f"max_group must be >= 1, got {max_group!r}")
        self.path = Path(raw)
        # Fixed now, so every connection opens the same file whatever the cwd is later.
        self._file = self.path.absolute()
        self._uri = self._file.as_uri()
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.read_threads = read_threads
        self.max_group = max_group
        self._writer: Writer | None = None
        self._readers: _Readers | None = None
        self._lifecycle = asyncio.Lock()
        self._cache: EventCache[str] = EventCache(cache_bytes)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def webhook_outbox(self) -> SQLiteWebhookOutbox:
        """The webhook outbox kept in this store's file (shares its writer thread)."""
        return SQLiteWebhookOutbox(self)

    @property
    def event_cache(self) -> EventCache[str]:
        """Decoded events by their stored JSON (see ``cache_bytes``)."""
        return self._cache

    @property
    def stats(self) -> WriterStats:
        """Group-commit counters of the current writer (zeros when closed)."""
        return WriterStats() if self._writer is None else self._writer.stats

    # -- connections -----------------------------------------------------------------

    def _connect(self, *, create: bool) -> sqlite3.Connection:
        # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE).
        # check_same_thread=False only so close() may run on another thread; each
        # connection is used by one thread at a time. ``timeout`` is SQLite's busy timeout:
        # how long BEGIN IMMEDIATE waits for a writer in another process.
        # Only the writer may create the file: a reader opening after the file was removed
        # must fail, not quietly start an empty database.
        conn = sqlite3.connect(
            self._uri + ("?mode=rwc" if create else "?mode=rw"),
            uri=True,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=128,
        )
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        self._file.parent.mkdir(parents=True, exist_ok=True)
        return self._connect(create=True)

    def _connect_reader(self) -> sqlite3.Connection:
        return self._connect(create=False)

    def _setup(self, conn: sqlite3.Connection) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise ConfigError(
                f"taskcast-sqlite needs SQLite >= {'.'.join(map(str, _MIN_SQLITE))}, "
                f"this Python links {sqlite3.sqlite_version}"
            )
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # pragma: no cover - only on exotic filesystems
                raise StorageUnavailableError("sqlite", f"{self.path}: WAL mode refused ({mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            # Checkpoints run on their own thread (see _checkpoint); this is the fallback.
            conn.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_PAGES:d}")
            migrate(conn, str(self.path))
        except sqlite3.Error as exc:
            raise storage_error(exc, f"cannot use {self.path}") from exc

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Create the file (and its folders) if needed, migrate it, start the threads."""
        async with self._lifecycle:
            if self._writer is not None:
                return
            writer = Writer(self._connect_writer, max_group=self.max_group)
            try:
                await writer.start(self._setup)
            except OSError as exc:
                raise StorageUnavailableError("sqlite", f"cannot use {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise storage_error(exc, f"cannot use {self.path}") from exc
            checkpointer = Checkpointer(self._connect_reader)
            checkpointer.start()
            writer.checkpointer = checkpointer
            self._readers = _Readers(self._connect_reader, self.read_threads)
            self._writer = writer
            logger.debug("opened %s", self.path)

    async def close(self) -> None:
        """Let queued writes commit, then stop the writer thread and close every connection."""
        async with self._lifecycle:
            writer, readers = self._writer, self._readers
            self._writer = self._readers = None
            if writer is not None:
                await writer.stop()
                if writer.checkpointer is not None:
                    await asyncio.to_thread(writer.checkpointer.stop)
            if readers is not None:
                await asyncio.to_thread(readers.shutdown)

    async def ping(self) -> None:
        writer, readers = self._writer, self._readers
        if writer is None or readers is None or not writer.alive:
            raise StorageUnavailableError("sqlite", "store is closed")
        # Open connections keep working on a removed file, so ask the filesystem.
        if not await readers.run_plain(self._file.exists):
            raise StorageUnavailableError("sqlite", f"{self.path} was removed")
        await readers.run(_probe)
        # Reads work on a full disk. While the last writes failed for lack of space, only
        # a write tells whether writes work again (a successful one also clears the mark).
        if writer.full is not None:
            await self._write(_write_probe)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        writer = self._writer
        if writer is None:
            raise StorageUnavailableError("sqlite", "store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        writer.submit(Job(fn, loop, future))
        return await future

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        readers = self._readers
        if readers is None:
            raise StorageUnavailableError("sqlite", "store is closed")
        return await readers.run(fn, *args)

    # -- ShortTermStore --------------------------------------------------------------

    async def create_task(self, task: Task) -> None:
        task = task.copy()
        await self._write(lambda conn: _ops.create_task(conn, task))

    async def get_task(self, task_id: str) -> Task | None:
        return await self._read(_ops.get_task, task_id)

    async def get_task_revision(self, task_id: str) -> tuple[Task, int] | None:
        return await self._read(_ops.get_task_revision, task_id)

    async def commit_transition(
        self, task: Task, expected_revision: int, drafts: Sequence[EventDraft]
    ) -> CommitResult:
        task, drafts = task.copy(), list(drafts)
        return await self._write(
            lambda conn: _ops.commit_transition(conn, task, expected_revision, drafts)
        )

    async def commit_events(self, task_id: str, drafts: Sequence[EventDraft]) -> CommitResult:
        drafts = list(drafts)
        return await self._write(lambda conn: _ops.commit_events(conn, task_id, drafts))

    async def get_events(self, task_id: str, query: EventQuery) -> list[TaskEvent]:
        return await self._read(_ops.get_events, task_id, query, self._cache)

    async def resolve_cursor(self, task_id: str, event_id: str) -> int | None:
        return await self._read(_ops.resolve_cursor, task_id, event_id)

    async def last_index(self, task_id: str) -> int:
        return await self._read(_ops.last_index, task_id)

    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        return await self._read(_ops.list_tasks, query)

    async def delete_task(self, task_id: str) -> bool:
        return await self._write(lambda conn: _ops.delete_task(conn, task_id))

    async def import_task(
        self, task: Task, events: Sequence[TaskEvent], *, replace: bool = False
    ) -> bool:
        task, stored = task.copy(), list(events)
        return await self._write(lambda conn: _ops.import_task(conn, task, stored, replace))

    async def delete_events(self, task_id: str, indexes: Sequence[int]) -> int:
        wanted = list(indexes)
        return await self._write(lambda conn: _ops.delete_events(conn, task_id, wanted))
