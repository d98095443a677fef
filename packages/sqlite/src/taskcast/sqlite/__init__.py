"""Taskcast's embedded SQLite store: one file holds tasks, events and their history.

``SQLiteStore`` implements :class:`taskcast.core.ShortTermStore`; it is the CLI's default
storage::

    from taskcast.core import TaskEngine
    from taskcast.sqlite import SQLiteStore

    engine = TaskEngine(short_term=SQLiteStore("data/taskcast.db"))
"""

from ._migrations import MIGRATIONS, SCHEMA_VERSION
from ._outbox import SQLiteWebhookOutbox
from ._store import SQLiteStore
from ._writer import WriterStats

__version__ = "0.1.0"

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore", "SQLiteWebhookOutbox", "WriterStats"]
