"""The file's schema and its forward migrations.

``MIGRATIONS[n]`` holds the statements that take a file from schema version ``n`` to
``n + 1``; the version lives in ``PRAGMA user_version`` (0 for a new or foreign file). A new
release appends a step and never edits a shipped one, so every older file can be brought
forward on open.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import Final

from taskcast.core import ConfigError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

logger = logging.getLogger(__name__)

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: the initial schema.
    (
        # Records are stored in their camelCase wire form (``data``); the other columns are
        # copies of the fields queries filter and order on. ``revision`` is the
        # compare-and-set token, ``next_index`` the per-task index counter.
        """
        CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            type TEXT,
            created_at INTEGER NOT NULL,
            revision INTEGER NOT NULL DEFAULT 0,
            next_index INTEGER NOT NULL DEFAULT 0,
            data TEXT NOT NULL
        )
        """,
        "CREATE INDEX tasks_by_creation ON tasks (created_at, id)",
        "CREATE INDEX tasks_by_status ON tasks (status, created_at, id)",
        # The retained event list. WITHOUT ROWID clusters a task's events by index, so a
        # replay is one sequential range scan.
        """
        CREATE TABLE events (
            task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            timestamp INTEGER NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (task_id, idx)
        ) WITHOUT ROWID
        """,
        # Every id ever allocated, including ``latest`` entries replaced since, so old
        # resume cursors stay resolvable.
        """
        CREATE TABLE event_ids (
            task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            event_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            PRIMARY KEY (task_id, event_id)
        ) WITHOUT ROWID
        """,
        # Idempotency key -> the event stored under it the first time (broadcast form).
        """
        CREATE TABLE idempotency_keys (
            task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            event TEXT NOT NULL,
            PRIMARY KEY (task_id, key)
        ) WITHOUT ROWID
        """,
        # Per-series state: the accumulated value or the latest entry.
        """
        CREATE TABLE series (
            task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            series_id TEXT NOT NULL,
            state TEXT NOT NULL,
            PRIMARY KEY (task_id, series_id)
        ) WITHOUT ROWID
        """,
    ),
    # 1 -> 2: the webhook outbox (deliveries waiting to be sent, and recent outcomes).
    (
        # ``data`` is the delivery's storage form (``WebhookDelivery.to_dict``); the other
        # columns copy what claims, listings and purges filter on. No foreign key to
        # ``tasks``: a delivery outlives its task's deletion until it is purged.
        """
        CREATE TABLE webhook_deliveries (
            id TEXT PRIMARY KEY,
            task_id TEXT NOT NULL,
            status TEXT NOT NULL,
            next_attempt_at INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            completed_at INTEGER,
            lease TEXT NOT NULL DEFAULT '',
            data TEXT NOT NULL
        )
        """,
        # Only pending rows are claimable; the partial index stays small.
        "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id) "
        "WHERE status = 'pending'",
        "CREATE INDEX webhook_deliveries_by_task ON webhook_deliveries (task_id, created_at, id)",
    ),
)

SCHEMA_VERSION: Final[int] = len(MIGRATIONS)
"""The schema version this release writes."""


def migrate(
    conn: sqlite3.Connection,
    path: str,
    migrations: Sequence[Sequence[str]] = MIGRATIONS,
) -> int:
    """Bring the file forward to ``len(migrations)``; return the version found.

    Runs in one write transaction, so two processes opening a new file at once cannot both
    create the schema, and a failed step leaves the file as it was. ``conn`` must be in
    autocommit mode (``isolation_level=None``).
    """
    target = len(migrations)
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if found > target:
            raise ConfigError(
                f"{path} has SQLite schema version {found}, newer than the {target} this "
                "taskcast-sqlite knows; upgrade taskcast-sqlite to open it"
            )
        for version in range(found, target):
            logger.info("migrating %s from schema version %d to %d", path, version, version + 1)
            for statement in migrations[version]:
                conn.execute(statement)
        if found != target:
            # PRAGMA takes no parameters; ``target`` is an int we computed.
            conn.execute(f"PRAGMA user_version = {target:d}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found
