"""SQL migrations shipped as files, applied by a runner compatible with sqlx.

The history lives in ``_sqlx_migrations`` exactly as sqlx (used by the original Taskcast's
Rust server, and mirrored by its TypeScript runner) keeps it: ``version`` from the file name
``NNN_description.sql``, the description with ``_`` read as a space, ``checksum`` the SHA-384 of
the file text, ``execution_time`` in nanoseconds. Runners are serialised with the same advisory
lock sqlx takes, each migration runs in its own transaction, and a failed (dirty) row or a
changed file stops everything.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

import psycopg

from taskcast.core import StorageUnavailableError, TaskcastError

from ._conn import describe_url, storage_errors, use_schema
from ._errors import ChecksumMismatchError, DirtyMigrationError, UnknownMigrationError

__all__ = [
    "Migration",
    "MigrationProgress",
    "apply_migrations",
    "load_migrations",
    "migrate_command",
    "pending_migrations",
    "run_migrate_command",
]

logger = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d+)_(\w+)\.sql$")

_CREATE_HISTORY = """
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)
"""


@dataclass(slots=True, frozen=True, kw_only=True)
class Migration:
    """One numbered SQL file."""

    version: int
    description: str
    filename: str
    sql: str = field(repr=False)

    @property
    def checksum(self) -> bytes:
        """SHA-384 of the file text, as sqlx records it."""
        return hashlib.sha384(self.sql.encode()).digest()

    @property
    def label(self) -> str:
        return f"{self.version:03d} {self.description}"


@dataclass(slots=True, frozen=True, kw_only=True)
class MigrationProgress:
    """Reported before (``done=False``) and after (``done=True``) each migration."""

    migration: Migration
    position: int
    """1-based position among the migrations being applied."""
    total: int
    done: bool
    elapsed_ms: float | None = None


ProgressCallback = Callable[[MigrationProgress], None]


def load_migrations() -> list[Migration]:
    """The migrations shipped in this package, in version order."""
    folder = resources.files(__package__).joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append(
            Migration(
                version=int(match.group(1)),
                description=match.group(2).replace("_", " "),
                filename=entry.name,
                sql=entry.read_text(encoding="utf-8"),
            )
        )
    found.sort(key=lambda m: m.version)
    return found


def _lock_key(database: str, schema: str | None) -> int:
    # sqlx's key: 0x3d32ad9e * crc32(database name). Keeping it means our runner and a Rust
    # server's runner wait for each other. A test schema gets its own key.
    name = database if schema is None else f"{database}.{schema}"
    return 0x3D32AD9E * zlib.crc32(name.encode())


async def _connect(url: str, schema: str | None) -> psycopg.AsyncConnection[tuple[object, ...]]:
    with storage_errors():
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        if schema is not None:
            try:
                await use_schema(conn, schema)
            except BaseException:
                await conn.close()
                raise
    return conn


# Versions below this number are the original Taskcast's (ours mirror its 001 and 002);
# from here on they are this implementation's own.
FIRST_OWN_VERSION = 100

# What the original's migrations we mirror must have left in place for this package to work
# on a database they migrated. (``series_acc_field`` is re-added by 101 if missing.)
_MIRRORED_EFFECTS: dict[int, dict[str, frozenset[str]]] = {
    1: {
        "taskcast_tasks": frozenset(
            [
                "id",
                "type",
                "status",
                "params",
                "result",
                "error",
                "metadata",
                "auth_config",
                "webhooks",
                "cleanup",
                "created_at",
                "updated_at",
                "completed_at",
                "ttl",
            ]
        ),
        "taskcast_events": frozenset(
            [
                "id",
                "task_id",
                "idx",
                "timestamp",
                "type",
                "level",
                "data",
                "series_id",
                "series_mode",
            ]
        ),
    },
    2: {
        "taskcast_tasks": frozenset(
            ["tags", "assign_mode", "cost", "assigned_worker", "disconnect_policy"]
        ),
        "taskcast_worker_events": frozenset(["id", "worker_id", "timestamp", "action", "data"]),
    },
}


async def _has_effects(conn: psycopg.AsyncConnection[tuple[object, ...]], version: int) -> bool:
    for table, columns in _MIRRORED_EFFECTS.get(version, {}).items():
        rows = await (
            await conn.execute(
                "SELECT attname FROM pg_attribute"
                " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (table,),
            )
        ).fetchall()
        if not columns <= {str(r[0]) for r in rows}:
            return False
    return version in _MIRRORED_EFFECTS


async def _applied(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> dict[int, bytes]:
    """Validate the recorded history against the shipped files; return version → checksum.

    A history written by the original Taskcast is accepted: its versions below
    :data:`FIRST_OWN_VERSION` that we do not ship (its storage-lifecycle migrations) are
    left alone, and the ones we mirror may carry its own checksum provided their tables
    and columns are in place. Our own versions must match exactly.
    """
    exists = await (
        await conn.execute("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
    ).fetchone()
    if exists is None or not exists[0]:
        return {}
    rows = await (
        await conn.execute(
            "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version"
        )
    ).fetchall()
    known = {m.version: m for m in load_migrations()}
    applied: dict[int, bytes] = {}
    for version, success, checksum in rows:
        assert isinstance(version, int) and isinstance(checksum, bytes)
        if not success:
            raise DirtyMigrationError(version)
        migration = known.get(version)
        if migration is None:
            if version >= FIRST_OWN_VERSION:
                raise UnknownMigrationError(version)
            logger.info("migration %d was applied by the original Taskcast; left alone", version)
        elif migration.checksum != checksum:
            if version >= FIRST_OWN_VERSION or not await _has_effects(conn, version):
                raise ChecksumMismatchError(version)
            logger.info(
                "migration %d was applied by another Taskcast implementation; its tables match",
                version,
            )
        applied[version] = checksum
    return applied


async def pending_migrations(url: str, schema: str | None = None) -> list[Migration]:
    """Shipped migrations the database has not applied yet.

    Raises :class:`~taskcast.postgres.MigrationError` if the recorded history is dirty,
    changed or newer, and :class:`~taskcast.core.StorageUnavailableError` if unreachable.
    """
    conn = await _connect(url, schema)
    async with conn:
        with storage_errors():
            applied = await _applied(conn)
    return [m for m in load_migrations() if m.version not in applied]


async def apply_migrations(
    url: str, schema: str | None = None, on_progress: ProgressCallback | None = None
) -> list[Migration]:
    """Apply every pending migration, in version order; return the ones applied here.

    Concurrent runners against one database wait for each other; the later ones find
    nothing left to do. A failing migration is rolled back and raised; the migrations
    before it stay applied.
    """
    conn = await _connect(url, schema)
    async with conn:
        with storage_errors():
            database = await (await conn.execute("SELECT current_database()")).fetchone()
            assert database is not None
            key = _lock_key(str(database[0]), schema)
            await conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                await conn.execute(_CREATE_HISTORY)
                applied = await _applied(conn)
                todo = [m for m in load_migrations() if m.version not in applied]
                for position, migration in enumerate(todo, start=1):
                    await _apply_one(conn, migration, position, len(todo), on_progress)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return todo


async def _apply_one(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    migration: Migration,
    position: int,
    total: int,
    on_progress: ProgressCallback | None,
) -> None:
    if on_progress is not None:
        on_progress(
            MigrationProgress(migration=migration, position=position, total=total, done=False)
        )
    logger.info("applying migration %s", migration.label)
    started = time.perf_counter_ns()
    async with conn.transaction():
        # No parameters: psycopg sends the file as one simple query, so it may hold many
        # statements.
        await conn.execute(migration.sql.encode())
        await conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)"
            " VALUES (%s, %s, TRUE, %s, -1)",
            (migration.version, migration.description, migration.checksum),
        )
    elapsed = time.perf_counter_ns() - started
    # sqlx records the time after the commit, in a second statement; so do we.
    await conn.execute(
        "UPDATE _sqlx_migrations SET execution_time = %s WHERE version = %s",
        (elapsed, migration.version),
    )
    if on_progress is not None:
        on_progress(
            MigrationProgress(
                migration=migration,
                position=position,
                total=total,
                done=True,
                elapsed_ms=elapsed / 1e6,
            )
        )


async def migrate_command(
    url: str,
    *,
    yes: bool,
    interactive: bool,
    echo: Callable[[str], None],
    confirm: Callable[[str], bool],
    schema: str | None = None,
    error: Callable[[str], None] | None = None,
) -> int:
    """What ``taskcast migrate`` does; returns the process exit code.

    Lists pending migrations, asks ``confirm`` unless ``yes`` (refusing when not
    ``interactive``), applies them with progress lines through ``echo``. A failure is one
    line through ``error`` (default: ``echo``), naming the database and the schema.
    """
    fail = error or echo
    where = describe_url(url)
    try:
        # Name the schema the tables go to: the given one, else the URL's search_path.
        where += f", schema {await _current_schema(url, schema)}"
        pending = await pending_migrations(url, schema)
        if not pending:
            echo(f"Database {where} is up to date.")
            return 0
        echo(f"Pending migrations for {where} ({len(pending)}):")
        for migration in pending:
            echo(f"  {migration.label}")
        if not yes:
            if not interactive:
                fail("not applying without confirmation: pass --yes to apply non-interactively")
                return 1
            if not confirm(f"Apply {len(pending)} migration(s)?"):
                echo("Cancelled; nothing was applied.")
                return 1

        def progress(step: MigrationProgress) -> None:
            head = f"[{step.position}/{step.total}] {step.migration.label}"
            if step.done:
                echo(f"{head} ... done ({step.elapsed_ms or 0:.0f} ms)")
            else:
                echo(f"{head} ...")

        applied = await apply_migrations(url, schema, on_progress=progress)
    except StorageUnavailableError as exc:
        fail(f"cannot reach PostgreSQL ({where}): {_one_line(exc.__cause__ or exc.message)}")
        return 1
    except TaskcastError as exc:
        fail(f"migration of {where} failed: {_one_line(exc.message)}")
        return 1
    except psycopg.Error as exc:
        fail(f"migration of {where} failed: {_one_line(exc)}")
        return 1
    echo(f"Applied {len(applied)} migration(s).")
    return 0


def _one_line(problem: object) -> str:
    # Driver messages span lines (a DETAIL, a hint); the command's error is one line.
    return " ".join(str(problem).split())


async def _current_schema(url: str, schema: str | None) -> str:
    conn = await _connect(url, schema)
    try:
        with storage_errors():
            row = await (await conn.execute("SELECT current_schema()")).fetchone()
    finally:
        await conn.close()
    return str(row[0]) if row and row[0] is not None else "(none: the search_path is empty)"


def run_migrate_command(
    url: str,
    *,
    yes: bool,
    interactive: bool,
    echo: Callable[[str], None],
    confirm: Callable[[str], bool],
    schema: str | None = None,
    error: Callable[[str], None] | None = None,
) -> int:
    """Synchronous :func:`migrate_command` for CLI commands (runs its own event loop)."""
    return asyncio.run(
        migrate_command(
            url,
            yes=yes,
            interactive=interactive,
            echo=echo,
            confirm=confirm,
            schema=schema,
            error=error,
        )
    )
