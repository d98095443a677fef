from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from taskcast.core import ConfigError, EventQuery, Task
from taskcast.sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteStore
from taskcast.sqlite._migrations import migrate

from ._helpers import draft, raw_connection

pytestmark = pytest.mark.anyio


def _version(path: Path) -> int:
    with raw_connection(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


async def test_new_and_empty_files_get_the_current_schema(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    for path in (tmp_path / "new.db", empty):
        store = SQLiteStore(path)
        await store.open()
        await store.close()
        assert _version(path) == SCHEMA_VERSION == len(MIGRATIONS)


async def test_version_zero_file_with_other_tables_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v0.db"
    with raw_connection(path) as conn:
        conn.execute("CREATE TABLE unrelated (x INTEGER)")
        conn.execute("INSERT INTO unrelated VALUES (7)")
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    assert _version(path) == SCHEMA_VERSION
    with raw_connection(path) as conn:
        assert conn.execute("SELECT x FROM unrelated").fetchall() == [(7,)]


async def test_file_written_by_schema_version_1_opens(tmp_path: Path) -> None:
    """A file laid out by hand with the version-1 statements, as a v1 release left it."""
    path = tmp_path / "v1.db"
    with raw_connection(path) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO tasks (id, status, type, created_at, revision, next_index, data) "
            "VALUES ('t1', 'running', 'job', 5, 3, 1, "
            '\'{"id":"t1","status":"running","createdAt":5,"updatedAt":6,"type":"job"}\')'
        )
        conn.execute(
            "INSERT INTO events VALUES ('t1', 0, 9, "
            '\'{"id":"e0","taskId":"t1","index":0,"timestamp":9,"type":"log","level":"info",'
            '"data":{"a":1}}\')'
        )
        conn.execute("INSERT INTO event_ids VALUES ('t1', 'e0', 0)")
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.get_task_revision("t1") == (
            Task(id="t1", status="running", created_at=5, updated_at=6, type="job"),
            3,
        )
        (event,) = await store.get_events("t1", EventQuery())
        assert (event.id, event.data) == ("e0", {"a": 1})
        assert await store.resolve_cursor("t1", "e0") == 0
        result = await store.commit_events("t1", [draft()])
        assert result.events[0].index == 1
    finally:
        await store.close()


async def test_newer_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with raw_connection(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SQLiteStore(path)
    with pytest.raises(ConfigError, match="newer") as info:
        await store.open()
    assert str(path) in str(info.value)
    assert _version(path) == SCHEMA_VERSION + 1


def test_forward_migration_steps_apply_in_order(tmp_path: Path) -> None:
    path = tmp_path / "steps.db"
    steps = (
        *MIGRATIONS,
        ("ALTER TABLE tasks ADD COLUMN extra TEXT", "CREATE INDEX tasks_extra ON tasks (extra)"),
        ("UPDATE tasks SET extra = 'filled'",),
    )
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(conn, str(path), MIGRATIONS) == 0
        conn.execute(
            "INSERT INTO tasks (id, status, created_at, data) VALUES ('t', 'pending', 1, '{}')"
        )
        assert migrate(conn, str(path), steps) == len(MIGRATIONS)
        assert conn.execute("SELECT extra FROM tasks").fetchall() == [("filled",)]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(steps)
        assert migrate(conn, str(path), steps) == len(steps)  # already current: no-op
    finally:
        conn.close()


def test_a_failing_step_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "fail.db"
    steps = (*MIGRATIONS, ("CREATE TABLE fine (x)", "THIS IS NOT SQL"))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, str(path), MIGRATIONS)
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn, str(path), steps)
        assert not conn.in_transaction
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "fine" not in tables
    finally:
        conn.close()
