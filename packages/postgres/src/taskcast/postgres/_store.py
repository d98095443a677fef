"""The PostgreSQL long-term store (the permanent archive of tasks and events)."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Json, Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic_core import to_json

from taskcast.core import (
    TERMINAL_STATUSES,
    EventQuery,
    InvalidInputError,
    StorageUnavailableError,
    Task,
    TaskEvent,
    UsageError,
)

from ._breaker import CircuitBreaker
from ._conn import DEPENDENCY, describe_url, storage_errors, use_schema

__all__ = ["PostgresLongTermStore"]

logger = logging.getLogger(__name__)

# Task attribute → column, in insert order. JSON-valued attributes are wrapped in Jsonb.
_TASK_COLUMNS: tuple[tuple[str, bool], ...] = (
    ("id", False),
    ("type", False),
    ("status", False),
    ("params", True),
    ("result", True),
    ("error", True),
    ("metadata", True),
    ("auth_config", True),
    ("webhooks", True),
    ("cleanup", True),
    ("created_at", False),
    ("updated_at", False),
    ("completed_at", False),
    ("ttl", False),
    ("tags", True),
    ("assign_mode", False),
    ("cost", False),
    ("assigned_worker", False),
    ("disconnect_policy", False),
    ("reason", False),
    ("resume_at", False),
    ("blocked_request", True),
)
_TASK_NAMES = ", ".join(name for name, _ in _TASK_COLUMNS)
_TERMINAL = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES)) + ")"

# Archive writes can arrive out of order (retries, concurrent writers). A terminal snapshot
# beats a non-terminal one; otherwise the newest ``updated_at`` wins. A terminal task never
# goes back to a non-terminal status (only delete + recreate does that).
_SAVE_TASK = f"""
INSERT INTO taskcast_tasks ({_TASK_NAMES})
VALUES ({", ".join("%s" for _ in _TASK_COLUMNS)})
ON CONFLICT (id) DO UPDATE SET
  {", ".join(f"{name} = EXCLUDED.{name}" for name, _ in _TASK_COLUMNS[1:])}
WHERE NOT (taskcast_tasks.status IN {_TERMINAL} AND EXCLUDED.status NOT IN {_TERMINAL})
  AND (EXCLUDED.updated_at >= taskcast_tasks.updated_at
       OR (EXCLUDED.status IN {_TERMINAL} AND taskcast_tasks.status NOT IN {_TERMINAL}))
""".encode()

_EVENT_NAMES = (
    "id, task_id, idx, timestamp, type, level, data, series_id, series_mode, "
    "series_acc_field, idempotency_key"
)
_EVENT_VALUES = (
    "%(id)s::text, %(task_id)s::text, %(idx)s::integer, %(timestamp)s::bigint, %(type)s::text, "
    "%(level)s::text, %(data)s::jsonb, %(series_id)s::text, %(series_mode)s::text, "
    "%(series_acc_field)s::text, %(idempotency_key)s::text"
)
# Events of a task the archive does not hold are skipped: the task was deleted meanwhile
# (its events went with it), and the foreign key would otherwise reject the whole batch.
# The batch travels as one JSON array of the events' wire form (``TaskEvent.to_dict``),
# taken apart by PostgreSQL: psycopg's array dumpers are Python code per element, and a
# batch of 2,000 events held the event loop (and every live stream) for 55-70 ms.
_INSERT_EVENTS = f"""
INSERT INTO taskcast_events ({_EVENT_NAMES})
SELECT u.id, u."taskId", u."index", u."timestamp", u.type, u.level,
       COALESCE(u.data, 'null'::jsonb), u."seriesId", u."seriesMode", u."seriesAccField",
       u."idempotencyKey"
FROM json_to_recordset(%s::json) AS u(
  id text, "taskId" text, "index" integer, "timestamp" bigint, type text, level text,
  data jsonb, "seriesId" text, "seriesMode" text, "seriesAccField" text,
  "idempotencyKey" text
)
WHERE EXISTS (SELECT 1 FROM taskcast_tasks t WHERE t.id = u."taskId")
ORDER BY u."taskId", u."index"
ON CONFLICT DO NOTHING
""".encode()
# A ``latest`` series keeps one row: the newest. An older event arriving late is not stored.
_INSERT_LATEST = f"""
INSERT INTO taskcast_events ({_EVENT_NAMES})
SELECT {_EVENT_VALUES}
WHERE EXISTS (SELECT 1 FROM taskcast_tasks WHERE id = %(task_id)s)
  AND NOT EXISTS (
    SELECT 1 FROM taskcast_events
    WHERE task_id = %(task_id)s AND series_id = %(series_id)s AND idx > %(idx)s
  )
ON CONFLICT DO NOTHING
""".encode()
_DELETE_OLDER_LATEST = b"""
DELETE FROM taskcast_events
WHERE task_id = %(task_id)s AND series_id = %(series_id)s AND idx < %(idx)s
"""
_SELECT_EVENTS = f"SELECT {_EVENT_NAMES} FROM taskcast_events WHERE task_id = %s"


def _task_row(task: Task) -> tuple[Any, ...]:
    row = []
    for name, is_json in _TASK_COLUMNS:
        value = getattr(task, name)
        row.append(Jsonb(value) if is_json and value is not None else value)
    return tuple(row)


def _json(value: Any) -> bytes:
    # pydantic-core's encoder, ~5x json.dumps (psycopg's default) on event data; NaN and
    # infinities are written as the constants json.dumps writes, which PostgreSQL refuses
    # (an InvalidInputError, as before) rather than stored as null.
    return to_json(value, inf_nan_mode="constants")


def _event_row(event: TaskEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "task_id": event.task_id,
        "idx": event.index,
        "timestamp": event.timestamp,
        "type": event.type,
        "level": event.level,
        "data": Jsonb(event.data, dumps=_json),
        "series_id": event.series_id,
        "series_mode": event.series_mode,
        "series_acc_field": event.series_acc_field,
        "idempotency_key": event.idempotency_key,
    }


def _task_from_row(row: Mapping[str, Any]) -> Task:
    values = {name: row[name] for name, _ in _TASK_COLUMNS if row.get(name) is not None}
    return Task(**values)


def _event_from_row(row: Mapping[str, Any]) -> TaskEvent:
    return TaskEvent(
        id=row["id"],
        task_id=row["task_id"],
        index=row["idx"],
        timestamp=row["timestamp"],
        type=row["type"],
        level=row["level"],
        data=row["data"],
        series_id=row["series_id"],
        series_mode=row["series_mode"],
        series_acc_field=row["series_acc_field"],
        idempotency_key=row["idempotency_key"],
    )


class PostgresLongTermStore:
    """Archive of tasks and events in PostgreSQL (tables of the ``taskcast_`` migrations).

    Args:
        url: A libpq connection string or ``postgresql://`` URL.
        schema: Work inside this schema (created if absent) instead of the default search
            path; the migrations must have been applied to the same schema.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
        timeout: Seconds an operation waits for a connection before failing with
            :class:`~taskcast.core.StorageUnavailableError` while PostgreSQL is reachable
            (the pool is busy); when a connection attempt fails, waiting operations fail
            at once instead.
        connect_timeout: Seconds one connection attempt may take (libpq's minimum is 2).
        retry_seconds: After a failure to reach PostgreSQL, operations fail at once with
            :class:`~taskcast.core.StorageUnavailableError` (the circuit breaker is open)
            for this long; then the next operation is let through as a probe, and its
            success lets every operation through again.
        check_connections: Check a connection as it leaves the pool if it sat there for
            more than ``check_idle_seconds``, so connections that died during an outage
            are replaced instead of failing the next operation.
        check_idle_seconds: How long a connection may sit in the pool and still be used
            unchecked. A check is a round trip: done on every use, it doubled the cost of
            an archive write at a steady trickle of events. A connection that dies within
            this window fails one operation (the archive writer retries it).
        connect_kwargs: Extra keyword arguments for :func:`psycopg.AsyncConnection.connect`.

    The pool is created closed; :meth:`open` (called by the engine from the app lifespan)
    opens it without waiting for PostgreSQL, so a server can start while the database is
    down and the archive catches up later (see :class:`~taskcast.postgres.ArchiveWriter`).
    """

    name = "postgres"

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 10.0,
        connect_timeout: int = 2,
        retry_seconds: float = 0.5,
        check_connections: bool = True,
        check_idle_seconds: float = 1.0,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if min_size < 0 or max_size < 1 or min_size > max_size:
            raise UsageError(f"Invalid pool size: min_size={min_size}, max_size={max_size}")
        if retry_seconds < 0:
            raise UsageError(f"retry_seconds must be >= 0, not {retry_seconds}")
        self.url = url
        self.schema = schema
        kwargs: dict[str, Any] = {"connect_timeout": connect_timeout, **(connect_kwargs or {})}
        # Statements run on their own; multi-statement writes open explicit transactions.
        kwargs["autocommit"] = True
        self._pool_args: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "timeout": timeout,
            "kwargs": kwargs,
            "configure": self._configure if schema is not None else None,
            "reset": self._returned if check_connections else None,
            # The breaker decides when to try PostgreSQL again, not the pool: a failed
            # connection attempt is retried once at once, then given up (the pool shrinks)
            # and reported to the breaker. The pool's own backoff grew without bound
            # (1, 2, 4 ... s) and kept a request waiting after PostgreSQL was back.
            "reconnect_timeout": 0.0,
            "reconnect_failed": self._connect_failed,
        }
        self.check_connections = check_connections
        self.check_idle_seconds = check_idle_seconds
        self.breaker = CircuitBreaker(retry_seconds)
        # When each pooled connection was last given back (see _check).
        self._returned_at: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._pool = self._new_pool()
        self._pool_used = False
        self._opened = False

    def _new_pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        return AsyncConnectionPool(
            self.url, open=False, name="taskcast-postgres", **self._pool_args
        )

    async def _usable(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        # Checked here rather than by the pool's ``check`` callback: after a failed check
        # the pool sleeps a growing backoff (1 s, 2 s ...) before handing out the next
        # connection, and after a restart every idle connection fails its check.
        if not self.check_connections:
            return True
        returned = self._returned_at.get(conn)
        if returned is not None and time.monotonic() - returned <= self.check_idle_seconds:
            return True
        try:
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            return False
        return True

    def _connect_failed(self, pool: AsyncConnectionPool[Any]) -> None:
        if self.breaker.state == "closed":
            logger.warning(
                "PostgreSQL (%s) unreachable: failing fast, probing at most every %s s",
                describe_url(self.url),
                self.breaker.retry_seconds,
            )
        self.breaker.failed("cannot connect")

    async def _getconn(self) -> psycopg.AsyncConnection[Any]:
        """A connection from the pool, or StorageUnavailableError as soon as PostgreSQL
        is found unreachable (rather than at the pool's timeout)."""
        getter = asyncio.ensure_future(self._pool.getconn())
        tripped = asyncio.ensure_future(self.breaker.wait_tripped())
        try:
            await asyncio.wait((getter, tripped), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            tripped.cancel()
            await self._abandon(getter)
            raise
        tripped.cancel()
        if getter.done():
            return getter.result()
        await self._abandon(getter)
        raise StorageUnavailableError(DEPENDENCY, "connection")

    async def _abandon(self, getter: asyncio.Future[psycopg.AsyncConnection[Any]]) -> None:
        # A cancelled getconn gives back a connection it was handed meanwhile; one that
        # completed before the cancellation took effect is given back here.
        getter.cancel()
        await asyncio.wait((getter,))
        if not getter.cancelled() and getter.exception() is None:
            await self._pool.putconn(getter.result())

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection behind the circuit breaker.

        Fails at once while the breaker is open. A failed connection attempt opens it (and
        fails the operations waiting for a connection), as does a failed probe; any answer
        from PostgreSQL (even an error about the data) closes it.
        """
        self._require_open()
        if not self.breaker.allow():
            raise StorageUnavailableError(DEPENDENCY, "connection")
        answered = False
        try:
            for _ in range(self._pool.max_size + 1):
                conn = await self._getconn()
                if await self._usable(conn):
                    break
                # A connection that died idle (PostgreSQL restarted): the pool replaces it.
                await self._pool.putconn(conn)
            else:
                raise psycopg.OperationalError("no working connection in the pool")
            try:
                yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except Exception:
                answered = True
                raise
            finally:
                await self._pool.putconn(conn)
            answered = True
        except (psycopg.OperationalError, psycopg.InterfaceError, StorageUnavailableError) as exc:
            # While closed, one lost connection is no outage: the pool replaces it, and if
            # PostgreSQL is unreachable that connection attempt fails and opens the
            # breaker. A failed probe opens it again.
            if self.breaker.state == "half-open":
                self.breaker.failed(str(exc) or type(exc).__name__)
            raise
        finally:
            if answered:
                if self.breaker.state != "closed":
                    logger.warning("PostgreSQL (%s) reachable again", describe_url(self.url))
                self.breaker.succeeded()
            else:
                self.breaker.abandoned()

    async def _returned(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._returned_at[conn] = time.monotonic()

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        assert self.schema is not None
        await use_schema(conn, self.schema)

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Open the pool; connections are made in the background (PostgreSQL may be down)."""
        if self._opened:
            return
        if self._pool_used:
            # A closed psycopg pool cannot be reopened: an engine restarted after stop()
            # gets a fresh one.
            self._pool = self._new_pool()
        self._pool_used = True
        self.breaker.reset()
        await self._pool.open(wait=False)
        self._opened = True

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        await self._pool.close()

    async def ping(self) -> None:
        """Raise :class:`~taskcast.core.StorageUnavailableError` unless a query succeeds."""
        self._require_open()
        with storage_errors():
            async with self._connection() as conn:
                await conn.execute("SELECT 1")

    def pool_stats(self) -> dict[str, int]:
        """The pool's counters (``pool_size``, ``pool_available``, ``requests_waiting``, …)."""
        return self._pool.get_stats()

    def _require_open(self) -> None:
        if not self._opened:
            raise UsageError("PostgresLongTermStore is not open; call open() first")

    # -- tasks -----------------------------------------------------------------------

    async def save_task(self, task: Task) -> None:
        """Insert or update; a terminal snapshot beats a non-terminal one, else newest wins."""
        self._require_open()
        with storage_errors(), _data_errors():
            async with self._connection() as conn:
                await conn.execute(_SAVE_TASK, _task_row(task))

    async def get_task(self, task_id: str) -> Task | None:
        self._require_open()
        with storage_errors():
            async with self._connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    f"SELECT {_TASK_NAMES} FROM taskcast_tasks WHERE id = %s".encode(),
                    (task_id,),
                )
                row = await cur.fetchone()
        return None if row is None else _task_from_row(row)

    async def delete_task(self, task_id: str) -> None:
        """Remove the task; its events go with it (``ON DELETE CASCADE``)."""
        self._require_open()
        with storage_errors():
            async with self._connection() as conn:
                await conn.execute("DELETE FROM taskcast_tasks WHERE id = %s", (task_id,))

    # -- events ----------------------------------------------------------------------

    async def save_events(self, events: Sequence[TaskEvent]) -> None:
        """Store events idempotently by id, in one transaction.

        A ``latest`` series keeps only its newest row; events of tasks the archive does not
        hold are skipped.
        """
        self._require_open()
        if not events:
            return
        plain: list[dict[str, Any]] = []
        newest: dict[tuple[str, str], TaskEvent] = {}
        for event in events:
            if event.series_mode == "latest" and event.series_id is not None:
                key = (event.task_id, event.series_id)
                seen = newest.get(key)
                # Within a batch only the newest of a series can survive, so only it is sent.
                if seen is None or event.index > seen.index:
                    newest[key] = event
            else:
                plain.append(event.to_dict())
        latest = [_event_row(e) for e in newest.values()]
        batch = Json(plain, dumps=_json) if plain else None
        with storage_errors(), _data_errors():
            async with self._connection() as conn:
                if not latest:
                    # One statement is atomic by itself (autocommit): no BEGIN and COMMIT
                    # round trips, which were two thirds of an archive write's.
                    await conn.execute(_INSERT_EVENTS, (batch,))
                    return
                async with conn.transaction():
                    cur = conn.cursor()
                    if batch is not None:
                        await cur.execute(_INSERT_EVENTS, (batch,))
                    await cur.executemany(_DELETE_OLDER_LATEST, latest)
                    await cur.executemany(_INSERT_LATEST, latest)

    async def get_events(self, task_id: str, query: EventQuery) -> list[TaskEvent]:
        """Events in index order; ``after_index``/``after_timestamp`` exclusive, ``limit`` first N.

        As in the original, a ``limit`` of 0 means no limit.
        """
        self._require_open()
        text = _SELECT_EVENTS
        params: list[Any] = [task_id]
        if query.after_index is not None:
            text += " AND idx > %s"
            params.append(query.after_index)
        if query.after_timestamp is not None:
            text += " AND timestamp > %s"
            params.append(query.after_timestamp)
        text += " ORDER BY idx"
        if query.limit:
            text += " LIMIT %s"
            params.append(query.limit)
        with storage_errors():
            async with self._connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(text.encode(), params)
                rows = await cur.fetchall()
        return [_event_from_row(row) for row in rows]

    async def resolve_cursor(self, task_id: str, event_id: str) -> int | None:
        """The index of an archived event id (replaced ``latest`` rows are gone: None)."""
        self._require_open()
        with storage_errors():
            async with self._connection() as conn:
                cur = await conn.execute(
                    b"SELECT idx FROM taskcast_events WHERE task_id = %s AND id = %s",
                    (task_id, event_id),
                )
                row = await cur.fetchone()
        return None if row is None else int(row[0])

    async def last_index(self, task_id: str) -> int:
        """The highest archived index of the task, -1 if none."""
        self._require_open()
        with storage_errors():
            async with self._connection() as conn:
                cur = await conn.execute(
                    b"SELECT COALESCE(MAX(idx), -1) FROM taskcast_events WHERE task_id = %s",
                    (task_id,),
                )
                row = await cur.fetchone()
        return -1 if row is None else int(row[0])


@contextmanager
def _data_errors() -> Iterator[None]:
    """Turn "this data cannot be stored" errors into :class:`InvalidInputError`.

    The archive writer drops such writes (after isolating them) instead of retrying forever.
    """
    try:
        yield
    except (psycopg.DataError, psycopg.IntegrityError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"PostgreSQL cannot store this data: {exc}") from exc
