"""PostgreSQL long-term store for Taskcast, with SQL migrations and a background archive writer.

* :class:`PostgresLongTermStore` implements :class:`taskcast.core.LongTermStore`.
* :class:`CircuitBreaker` (``PostgresLongTermStore.breaker``) fails operations at once while
  PostgreSQL is unreachable and lets one probe through every ``retry_seconds``.
* :class:`ArchiveWriter` wraps any long-term store so archive writes never block or fail the
  publisher: they queue in memory, are batched, and are retried while the database is down.
* :func:`pending_migrations`, :func:`apply_migrations` and :func:`run_migrate_command` manage
  the schema (sqlx-compatible ``_sqlx_migrations`` history).
* :func:`describe_url`: ``dbname on host:port``, a URL without its credentials, for messages.
"""

from importlib.metadata import version as _dist_version

from taskcast.core import ArchiveWriter, RetryPolicy

from ._breaker import CircuitBreaker
from ._conn import describe_url
from ._errors import (
    ChecksumMismatchError,
    DirtyMigrationError,
    MigrationError,
    UnknownMigrationError,
)
from ._migrations import (
    Migration,
    MigrationProgress,
    apply_migrations,
    load_migrations,
    migrate_command,
    pending_migrations,
    run_migrate_command,
)
from ._store import PostgresLongTermStore

__all__ = [
    "ArchiveWriter",
    "ChecksumMismatchError",
    "CircuitBreaker",
    "DirtyMigrationError",
    "Migration",
    "MigrationError",
    "MigrationProgress",
    "PostgresLongTermStore",
    "RetryPolicy",
    "UnknownMigrationError",
    "__version__",
    "apply_migrations",
    "describe_url",
    "load_migrations",
    "migrate_command",
    "pending_migrations",
    "run_migrate_command",
]

__version__: str = _dist_version("taskcast-postgres")
"""The installed version (every taskcast package of a release has the same one)."""
