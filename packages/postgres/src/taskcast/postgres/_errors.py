"""Errors of the PostgreSQL package, all under :class:`taskcast.core.TaskcastError`.

::

    TaskcastError
    └── MigrationError                      the migration history cannot be trusted or applied
        ├── DirtyMigrationError             a migration was recorded as failed (success = false)
        ├── ChecksumMismatchError           an applied file was changed afterwards
        └── UnknownMigrationError           the database has a version this package lacks
"""

from __future__ import annotations

from taskcast.core import TaskcastError

__all__ = [
    "ChecksumMismatchError",
    "DirtyMigrationError",
    "MigrationError",
    "UnknownMigrationError",
]


class MigrationError(TaskcastError):
    """Migrations cannot run; nothing further was applied."""


class DirtyMigrationError(MigrationError):
    """A row of ``_sqlx_migrations`` says a migration failed part-way."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"Migration {version} is recorded as failed (dirty); repair the database by hand, "
            "then delete its row from _sqlx_migrations"
        )
        self.version = version


class ChecksumMismatchError(MigrationError):
    """An applied migration's recorded checksum differs from the file shipped here."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"Migration {version} was applied with different content (checksum mismatch)"
        )
        self.version = version


class UnknownMigrationError(MigrationError):
    """The database records a migration this version of the package does not ship."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"Migration {version} was applied but is unknown to this version "
            "(was the database migrated by a newer Taskcast?)"
        )
        self.version = version
