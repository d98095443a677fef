"""The store's operations as plain synchronous functions of a connection.

Write operations run on the writer thread inside the group's transaction (each in its own
savepoint); read operations run on a reader thread. Checks come before any write, so an
operation that raises has written nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from pydantic_core import from_json, to_json

from taskcast.core import (
    TERMINAL_STATUSES,
    CommitResult,
    EventCache,
    EventDraft,
    EventQuery,
    StaleRevisionError,
    Task,
    TaskConflictError,
    TaskEvent,
    TaskNotFoundError,
    TaskPage,
    TaskQuery,
    TaskTerminalError,
    now_ms,
    plan_commit,
    series_states,
)

__all__ = [
    "commit_events",
    "commit_transition",
    "create_task",
    "delete_task",
    "get_events",
    "get_task",
    "get_task_revision",
    "import_task",
    "last_index",
    "list_tasks",
    "resolve_cursor",
]


def _dumps(value: Any) -> str:
    return to_json(value).decode()


def _load_event(text: str) -> TaskEvent:
    return TaskEvent.from_dict(from_json(text))


def _load_many(texts: list[str]) -> list[Any]:
    # One parse over the joined rows instead of one call per row: replay reads thousands
    # of small documents and the per-call overhead dominates. pydantic-core's parser is
    # ~1.6x faster than json.loads here.
    if not texts:
        return []
    decoded: list[Any] = from_json("[" + ",".join(texts) + "]")
    return decoded


def _load_events(texts: list[str]) -> list[TaskEvent]:
    return [TaskEvent.from_dict(d) for d in _load_many(texts)]


# -- writes (writer thread) -------------------------------------------------------------


def create_task(conn: sqlite3.Connection, task: Task) -> None:
    cur = conn.execute(
        "INSERT INTO tasks (id, status, type, created_at, data) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO NOTHING",
        (task.id, task.status, task.type, task.created_at, _dumps(task.to_dict())),
    )
    if cur.rowcount == 0:
        raise TaskConflictError(task.id)


def commit_events(
    conn: sqlite3.Connection, task_id: str, drafts: Sequence[EventDraft]
) -> CommitResult:
    row = conn.execute("SELECT status, next_index FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise TaskNotFoundError(task_id)
    status, next_index = row
    if status in TERMINAL_STATUSES:
        raise TaskTerminalError(status)
    result, new_next = _apply(conn, task_id, next_index, drafts)
    if new_next != next_index:
        conn.execute("UPDATE tasks SET next_index = ? WHERE id = ?", (new_next, task_id))
    return result


def commit_transition(
    conn: sqlite3.Connection, task: Task, expected_revision: int, drafts: Sequence[EventDraft]
) -> CommitResult:
    row = conn.execute("SELECT revision, next_index FROM tasks WHERE id = ?", (task.id,)).fetchone()
    if row is None:
        raise TaskNotFoundError(task.id)
    revision, next_index = row
    if revision != expected_revision:
        raise StaleRevisionError(task.id)
    result, new_next = _apply(conn, task.id, next_index, drafts)
    cur = conn.execute(
        "UPDATE tasks SET status = ?, type = ?, created_at = ?, data = ?, "
        "revision = revision + 1, next_index = ? WHERE id = ? AND revision = ?",
        (
            task.status,
            task.type,
            task.created_at,
            _dumps(task.to_dict()),
            new_next,
            task.id,
            expected_revision,
        ),
    )
    # Unreachable while we hold the write lock since the SELECT; kept as the CAS itself.
    if cur.rowcount != 1:  # pragma: no cover
        raise StaleRevisionError(task.id)
    return result


def _apply(
    conn: sqlite3.Connection, task_id: str, next_index: int, drafts: Sequence[EventDraft]
) -> tuple[CommitResult, int]:
    """Plan with :func:`taskcast.core.plan_commit` and write the plan; no counter update."""
    if not drafts:
        return CommitResult(events=[], fresh=[]), next_index
    keys = {d.idempotency_key for d in drafts if d.idempotency_key is not None}
    # plan_commit reads the state of `latest` series only (an accumulate delta is appended
    # as it is): an accumulate publish reads no state row.
    series = {d.series_id for d in drafts if d.series_id is not None and d.series_mode == "latest"}
    # Prefetch what plan_commit may ask for: one query each instead of one per draft.
    known: dict[str, TaskEvent] = {}
    if keys:
        known = {
            key: _load_event(text)
            for key, text in conn.execute(
                "SELECT key, event FROM idempotency_keys "
                "WHERE task_id = ? AND key IN (SELECT value FROM json_each(?))",
                (task_id, _dumps(sorted(keys))),
            )
        }
    states: dict[str, TaskEvent] = {}
    if series:
        states = {
            sid: _load_event(text)
            for sid, text in conn.execute(
                "SELECT series_id, state FROM series "
                "WHERE task_id = ? AND series_id IN (SELECT value FROM json_each(?))",
                (task_id, _dumps(sorted(series))),
            )
        }
    plan = plan_commit(
        task_id, drafts, next_index=next_index, series_state=states.get, known_key=known.get
    )
    if plan.replaced:
        conn.executemany(
            "DELETE FROM events WHERE task_id = ? AND idx = ?",
            [(task_id, index) for index in plan.replaced.values()],
        )
    if plan.appends:
        conn.executemany(
            "INSERT INTO events (task_id, idx, timestamp, data) VALUES (?, ?, ?, ?)",
            [(task_id, e.index, e.timestamp, _dumps(e.to_dict())) for e in plan.appends],
        )
    if plan.fresh:
        conn.executemany(
            "INSERT INTO event_ids (task_id, event_id, idx) VALUES (?, ?, ?)",
            [(task_id, e.id, e.index) for e in plan.fresh],
        )
        keyed = [e for e in plan.fresh if e.idempotency_key is not None]
        if keyed:
            conn.executemany(
                "INSERT INTO idempotency_keys (task_id, key, event) VALUES (?, ?, ?)",
                [(task_id, e.idempotency_key, _dumps(e.to_dict())) for e in keyed],
            )
    if plan.states:
        conn.executemany(
            "INSERT INTO series (task_id, series_id, state) VALUES (?, ?, ?) "
            "ON CONFLICT (task_id, series_id) DO UPDATE SET state = excluded.state",
            [(task_id, sid, _dumps(state.to_dict())) for sid, state in plan.states.items()],
        )
    return CommitResult(events=plan.result_events, fresh=plan.fresh), plan.next_index


def import_task(
    conn: sqlite3.Connection, task: Task, events: Sequence[TaskEvent], replace: bool
) -> bool:
    """Store a task with exactly ``events`` (a validated archive); one job, so atomic."""
    exists = conn.execute("SELECT 1 FROM tasks WHERE id = ?", (task.id,)).fetchone()
    if exists is not None:
        if not replace:
            return False
        # Events, ids, keys and series states go with it (ON DELETE CASCADE).
        conn.execute("DELETE FROM tasks WHERE id = ?", (task.id,))
    conn.execute(
        "INSERT INTO tasks (id, status, type, created_at, revision, next_index, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            task.id,
            task.status,
            task.type,
            task.created_at,
            # A revision no counter of a replaced task reaches (see taskcast.core.rehydrate).
            now_ms(),
            len(events),
            _dumps(task.to_dict()),
        ),
    )
    if events:
        conn.executemany(
            "INSERT INTO events (task_id, idx, timestamp, data) VALUES (?, ?, ?, ?)",
            [(task.id, e.index, e.timestamp, _dumps(e.to_dict())) for e in events],
        )
        conn.executemany(
            "INSERT INTO event_ids (task_id, event_id, idx) VALUES (?, ?, ?)",
            [(task.id, e.id, e.index) for e in events],
        )
        conn.executemany(
            "INSERT INTO idempotency_keys (task_id, key, event) VALUES (?, ?, ?)",
            [
                (task.id, e.idempotency_key, _dumps(e.to_dict()))
                for e in events
                if e.idempotency_key is not None
            ],
        )
    states = series_states(events)
    if states:
        conn.executemany(
            "INSERT INTO series (task_id, series_id, state) VALUES (?, ?, ?)",
            [(task.id, sid, _dumps(state.to_dict())) for sid, state in states.items()],
        )
    return True


def delete_task(conn: sqlite3.Connection, task_id: str) -> bool:
    # Events, ids, keys and series states go with it (ON DELETE CASCADE).
    return conn.execute("DELETE FROM tasks WHERE id = ?", (task_id,)).rowcount > 0


def delete_events(conn: sqlite3.Connection, task_id: str, indexes: Sequence[int]) -> int:
    # event_ids keeps the ids, so a client holding one as a cursor still resumes after it.
    return conn.executemany(
        "DELETE FROM events WHERE task_id = ? AND idx = ?", [(task_id, i) for i in indexes]
    ).rowcount


# -- reads (reader threads) -------------------------------------------------------------


def get_task(conn: sqlite3.Connection, task_id: str) -> Task | None:
    row = conn.execute("SELECT data FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else Task.from_dict(json.loads(row[0]))


def get_task_revision(conn: sqlite3.Connection, task_id: str) -> tuple[Task, int] | None:
    row = conn.execute("SELECT data, revision FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else (Task.from_dict(json.loads(row[0])), int(row[1]))


def get_events(
    conn: sqlite3.Connection, task_id: str, query: EventQuery, cache: EventCache[str]
) -> list[TaskEvent]:
    sql = "SELECT data FROM events WHERE task_id = ?"
    params: list[Any] = [task_id]
    if query.after_index is not None:
        sql += " AND idx > ?"
        params.append(query.after_index)
    if query.after_timestamp is not None:
        sql += " AND timestamp > ?"
        params.append(query.after_timestamp)
    sql += " ORDER BY idx"
    if query.limit is not None:
        sql += " LIMIT ?"
        params.append(max(query.limit, 0))
    rows = conn.execute(sql, params).fetchall()
    return cache.decode([row[0] for row in rows], _load_events)


def resolve_cursor(conn: sqlite3.Connection, task_id: str, event_id: str) -> int | None:
    row = conn.execute(
        "SELECT idx FROM event_ids WHERE task_id = ? AND event_id = ?", (task_id, event_id)
    ).fetchone()
    return None if row is None else int(row[0])


def last_index(conn: sqlite3.Connection, task_id: str) -> int:
    row = conn.execute("SELECT next_index FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return -1 if row is None else int(row[0]) - 1


def _glob_escape(text: str) -> str:
    # In GLOB a metacharacter is literal inside brackets: ``[*]``, ``[?]``, ``[[]``.
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _type_clause(patterns: Sequence[str], params: list[Any]) -> str:
    """SQL for :func:`taskcast.core.matches_type` over the ``type`` column.

    GLOB rather than LIKE: LIKE is case-insensitive for ASCII, ``matches_type`` is not.
    Pattern text is escaped and bound as a parameter, never spliced into the SQL.
    """
    if not patterns:
        return "0"
    if "*" in patterns:
        return "type IS NOT NULL"
    clauses: list[str] = []
    exact = [p for p in patterns if not p.endswith(".*")]
    if exact:
        clauses.append(f"type IN ({', '.join('?' * len(exact))})")
        params.extend(exact)
    for pattern in patterns:
        if pattern.endswith(".*"):
            clauses.append("type GLOB ?")
            params.append(_glob_escape(pattern[:-1]) + "*")
    return "(" + " OR ".join(clauses) + ")"


def list_tasks(conn: sqlite3.Connection, query: TaskQuery) -> TaskPage:
    if query.limit is not None and query.limit <= 0:
        return TaskPage(tasks=[])
    where: list[str] = []
    params: list[Any] = []
    if query.statuses is not None:
        if query.statuses:
            where.append(f"status IN ({', '.join('?' * len(query.statuses))})")
            params.extend(query.statuses)
        else:
            where.append("0")
    if query.types is not None:
        where.append(_type_clause(query.types, params))
    if query.task_ids is not None:
        where.append("id IN (SELECT value FROM json_each(?))")
        params.append(_dumps(sorted(query.task_ids)))
    if query.after is not None:
        where.append("(created_at, id) > (?, ?)")
        params.extend(query.after)
    sql = "SELECT data FROM tasks"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at, id"
    if query.limit is not None:
        # One more than asked tells whether another page exists.
        sql += " LIMIT ?"
        params.append(query.limit + 1)
    rows = conn.execute(sql, params).fetchall()
    tasks = [Task.from_dict(d) for d in _load_many([row[0] for row in rows])]
    if query.limit is not None and len(tasks) > query.limit:
        page = tasks[: query.limit]
        return TaskPage(tasks=page, next_after=(page[-1].created_at, page[-1].id))
    return TaskPage(tasks=tasks)
