"""Taskcast's embedded SQLite store: one file holds tasks, events and their history.

``SQLiteStore`` implements :class:`taskcast.core.ShortTermStore`; it is the CLI's default
storage::

    from taskcast.core import TaskEngine
    from taskcast.sqlite import SQLiteStore

    engine = TaskEngine(short_term=SQLiteStore("data/taskcast.db"))
"""

from importlib.metadata import version as _dist_version

from ._migrations import MIGRATIONS, SCHEMA_VERSION
from ._outbox import SQLiteWebhookOutbox
from ._store import SQLiteStore
from ._writer import WriterStats

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SQLiteStore",
    "SQLiteWebhookOutbox",
    "WriterStats",
    "__version__",
]

__version__: str = _dist_version("taskcast-sqlite")
"""The installed version (every taskcast package of a release has the same one)."""
