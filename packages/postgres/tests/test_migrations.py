"""The sqlx-compatible migration runner."""

from __future__ import annotations

import asyncio
import hashlib
from importlib import resources

import psycopg
import pytest

from taskcast.core import EventQuery, StorageUnavailableError
from taskcast.postgres import (
    ChecksumMismatchError,
    DirtyMigrationError,
    Migration,
    MigrationProgress,
    PostgresLongTermStore,
    UnknownMigrationError,
    _migrations,
    apply_migrations,
    load_migrations,
    migrate_command,
    pending_migrations,
)

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


def history(url: str, schema: str) -> list[tuple[int, str, bool, bytes, int]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f'SELECT version, description, success, checksum, execution_time FROM "{schema}"._sqlx_migrations ORDER BY version'
        ).fetchall()


def execute(url: str, schema: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(statement.encode())


def test_shipped_files() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == [1, 2, 101]
    assert [m.description for m in migrations] == ["initial", "workers", "python task fields"]
    folder = resources.files("taskcast.postgres").joinpath("migrations")
    for m in migrations:
        text = folder.joinpath(m.filename).read_text(encoding="utf-8")
        assert m.sql == text
        assert m.checksum == hashlib.sha384(text.encode()).digest()
        assert m.label == f"{m.version:03d} {m.description}"
        assert "sql=" not in repr(m)


async def test_fresh_apply_then_idempotent(pg_url: str, schema: str) -> None:
    assert [m.version for m in await pending_migrations(pg_url, schema)] == [1, 2, 101]
    applied = await apply_migrations(pg_url, schema)
    assert [m.version for m in applied] == [1, 2, 101]
    rows = history(pg_url, schema)
    assert [(v, d, ok) for v, d, ok, _, _ in rows] == [
        (1, "initial", True),
        (2, "workers", True),
        (101, "python task fields", True),
    ]
    assert [bytes(c) for _, _, _, c, _ in rows] == [m.checksum for m in applied]
    assert all(t > 0 for *_, t in rows)
    # The tables of the original's schema are there.
    with psycopg.connect(pg_url) as conn:
        cols = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'taskcast_events'",
                (schema,),
            )
        }
    assert {"id", "task_id", "idx", "timestamp", "type", "level", "data"} <= cols
    assert {"series_id", "series_mode", "series_acc_field", "idempotency_key"} <= cols
    assert await apply_migrations(pg_url, schema) == []
    assert await pending_migrations(pg_url, schema) == []
    assert len(history(pg_url, schema)) == 3


async def test_checksum_mismatch_refused(pg_url: str, migrated: str) -> None:
    execute(pg_url, migrated, "UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 101")
    with pytest.raises(ChecksumMismatchError) as caught:
        await pending_migrations(pg_url, migrated)
    assert caught.value.version == 101
    with pytest.raises(ChecksumMismatchError):
        await apply_migrations(pg_url, migrated)


async def test_mirrored_migration_with_other_checksum_needs_its_tables(
    pg_url: str, migrated: str
) -> None:
    # Another implementation's file for a version we mirror: accepted while its effect is there.
    execute(pg_url, migrated, "UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 2")
    assert await pending_migrations(pg_url, migrated) == []
    execute(pg_url, migrated, "ALTER TABLE taskcast_tasks DROP COLUMN cost")
    with pytest.raises(ChecksumMismatchError, match="2 was applied"):
        await apply_migrations(pg_url, migrated)


async def test_history_written_by_the_original_is_adopted(pg_url: str, schema: str) -> None:
    """A database the original Taskcast migrated (its 001-005): we add ours and work on it."""
    shipped = {m.version: m for m in load_migrations()}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(_migrations._CREATE_HISTORY.encode())
        for version in (1, 2):
            conn.execute(shipped[version].sql.encode())
        conn.execute("ALTER TABLE taskcast_events DROP COLUMN series_acc_field")
        conn.execute(
            "ALTER TABLE taskcast_tasks ADD COLUMN storage_state TEXT NOT NULL DEFAULT 'hot'"
        )
        for version, name in [
            (1, "initial"),
            (2, "workers"),
            (3, "storage lifecycle"),
            (4, "a"),
            (5, "b"),
        ]:
            conn.execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)"
                " VALUES (%s, %s, true, %s, 1)",
                (version, name, hashlib.sha384(name.encode()).digest()),
            )
        conn.execute(
            "INSERT INTO taskcast_tasks (id, status, created_at, updated_at) VALUES ('old', 'completed', 1, 2)"
        )
        conn.execute(
            "INSERT INTO taskcast_events (id, task_id, idx, timestamp, type, level, data)"
            " VALUES ('e0', 'old', 0, 1, 'log', 'info', '{\"a\": 1}')"
        )
    assert [m.version for m in await pending_migrations(pg_url, schema)] == [101]
    assert [m.version for m in await apply_migrations(pg_url, schema)] == [101]
    assert [r[0] for r in history(pg_url, schema)] == [1, 2, 3, 4, 5, 101]
    store = PostgresLongTermStore(pg_url, schema=schema)
    await store.open()
    try:
        task = await store.get_task("old")
        assert task is not None and task.status == "completed"
        (event,) = await store.get_events("old", EventQuery())
        assert event.data == {"a": 1} and event.series_acc_field is None
    finally:
        await store.close()


async def test_dirty_row_refused(pg_url: str, migrated: str) -> None:
    execute(pg_url, migrated, "UPDATE _sqlx_migrations SET success = false WHERE version = 101")
    with pytest.raises(DirtyMigrationError, match="101"):
        await apply_migrations(pg_url, migrated)
    with pytest.raises(DirtyMigrationError):
        await pending_migrations(pg_url, migrated)


async def test_unknown_applied_version_refused(pg_url: str, migrated: str) -> None:
    execute(
        pg_url,
        migrated,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)"
        " VALUES (999, 'future', true, '\\x00', 1)",
    )
    with pytest.raises(UnknownMigrationError, match="999"):
        await apply_migrations(pg_url, migrated)


async def test_concurrent_runners_are_serialised(pg_url: str, schema: str) -> None:
    results = await asyncio.gather(*(apply_migrations(pg_url, schema) for _ in range(4)))
    applied = sorted(m.version for r in results for m in r)
    assert applied == [1, 2, 101]
    assert [r[0] for r in history(pg_url, schema)] == [1, 2, 101]


async def test_progress_callback(pg_url: str, schema: str) -> None:
    seen: list[MigrationProgress] = []
    await apply_migrations(pg_url, schema, on_progress=seen.append)
    assert [(p.migration.version, p.position, p.total, p.done) for p in seen] == [
        (1, 1, 3, False),
        (1, 1, 3, True),
        (2, 2, 3, False),
        (2, 2, 3, True),
        (101, 3, 3, False),
        (101, 3, 3, True),
    ]
    assert all(p.elapsed_ms is not None and p.elapsed_ms > 0 for p in seen if p.done)
    assert all(p.elapsed_ms is None for p in seen if not p.done)


async def test_failing_migration_rolls_back(
    pg_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = load_migrations()
    broken = Migration(
        version=102,
        description="broken",
        filename="102_broken.sql",
        sql="CREATE TABLE half_done (x int);\nSELECT 1 / 0;\n",
    )
    monkeypatch.setattr(_migrations, "load_migrations", lambda: [*shipped, broken])
    with pytest.raises(psycopg.errors.DivisionByZero):
        await apply_migrations(pg_url, schema)
    assert [r[0] for r in history(pg_url, schema)] == [1, 2, 101]
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".half_done',)).fetchone()
    assert row == (None,)
    assert [m.version for m in await pending_migrations(pg_url, schema)] == [102]


async def test_unreachable_database(pg_url: str) -> None:
    url = psycopg.conninfo.make_conninfo(pg_url, host="127.0.0.1", port="1")
    with pytest.raises(StorageUnavailableError):
        await pending_migrations(url)


class Console:
    def __init__(self, answer: bool = True) -> None:
        self.lines: list[str] = []
        self.questions: list[str] = []
        self.answer = answer

    def echo(self, line: str) -> None:
        self.lines.append(line)

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


async def run(url: str, schema: str, console: Console, *, yes: bool, interactive: bool) -> int:
    return await migrate_command(
        url,
        yes=yes,
        interactive=interactive,
        echo=console.echo,
        confirm=console.confirm,
        schema=schema,
    )


async def test_command_refuses_without_confirmation(pg_url: str, schema: str) -> None:
    console = Console()
    assert await run(pg_url, schema, console, yes=False, interactive=False) == 1
    assert "001 initial" in console.text and "--yes" in console.text
    assert console.questions == []
    assert len(await pending_migrations(pg_url, schema)) == 3


async def test_command_declined(pg_url: str, schema: str) -> None:
    console = Console(answer=False)
    assert await run(pg_url, schema, console, yes=False, interactive=True) == 1
    assert console.questions == ["Apply 3 migration(s)?"]
    assert "nothing was applied" in console.text
    assert len(await pending_migrations(pg_url, schema)) == 3


async def test_command_confirmed_shows_progress(pg_url: str, schema: str) -> None:
    console = Console(answer=True)
    assert await run(pg_url, schema, console, yes=False, interactive=True) == 0
    assert "[1/3] 001 initial ..." in console.lines
    assert any(line.startswith("[3/3] 101 python task fields ... done") for line in console.lines)
    assert console.lines[-1] == "Applied 3 migration(s)."
    assert await pending_migrations(pg_url, schema) == []
    again = Console()
    assert await run(pg_url, schema, again, yes=False, interactive=False) == 0
    assert "up to date" in again.text


async def test_command_yes_skips_question(pg_url: str, schema: str) -> None:
    console = Console(answer=False)
    assert await run(pg_url, schema, console, yes=True, interactive=False) == 0
    assert console.questions == []
    assert await pending_migrations(pg_url, schema) == []


async def test_command_reports_failures(pg_url: str, migrated: str) -> None:
    execute(pg_url, migrated, "UPDATE _sqlx_migrations SET success = false WHERE version = 1")
    console = Console()
    assert await run(pg_url, migrated, console, yes=True, interactive=False) == 1
    assert "dirty" in console.text
    unreachable = psycopg.conninfo.make_conninfo(pg_url, host="127.0.0.1", port="1")
    console = Console()
    assert await run(unreachable, "x", console, yes=True, interactive=False) == 1
    assert "127.0.0.1:1" in console.text


async def test_command_reports_sql_errors(
    pg_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = Migration(version=1, description="bad", filename="001_bad.sql", sql="SELEC 1;")
    monkeypatch.setattr(_migrations, "load_migrations", lambda: [broken])
    console = Console()
    assert await run(pg_url, schema, console, yes=True, interactive=False) == 1
    from taskcast.postgres._conn import describe_url

    assert f"migration of {describe_url(pg_url)}, schema {schema} failed: " in console.text
    assert console.lines[-1].count("\n") == 0


def test_describe_url_hides_credentials() -> None:
    from taskcast.postgres._conn import describe_url

    assert describe_url("postgresql://u:secret@db.example:6543/app") == "app on db.example:6543"
    assert describe_url("dbname=x") == "x on localhost:5432"
    assert "unparsable" in describe_url("postgresql://[bad")
