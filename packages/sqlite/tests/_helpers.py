"""Shared test helpers."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from taskcast.core import EventDraft, Task, new_id, now_ms
from taskcast.sqlite import SQLiteStore


def make_task(task_id: str | None = None, **fields: Any) -> Task:
    now = now_ms()
    fields.setdefault("created_at", now)
    fields.setdefault("updated_at", now)
    return Task(id=task_id or new_id(), **fields)


def draft(data: Any = None, type_: str = "log", **fields: Any) -> EventDraft:
    return EventDraft(
        id=new_id(), timestamp=now_ms(), type=type_, level="info", data=data, **fields
    )


@asynccontextmanager
async def writer_held(store: SQLiteStore) -> AsyncIterator[asyncio.Future[Any]]:
    """Keep the writer thread busy until the block exits, so later writes queue up.

    Yields the blocking job's future (it resolves once released).
    """
    started = threading.Event()
    release = threading.Event()

    def hold(conn: object) -> None:
        started.set()
        release.wait(10)

    job = asyncio.ensure_future(store._write(hold))
    await asyncio.to_thread(started.wait, 10)
    try:
        yield job
    finally:
        release.set()
        await job


@contextmanager
def raw_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain autocommit connection to the file, closed afterwards."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()
