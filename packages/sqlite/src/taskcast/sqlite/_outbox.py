"""``SQLiteWebhookOutbox``: webhook deliveries queued in the store's own file.

Writes go through the store's writer thread (so an enqueue is committed, and survives a
crash, before it returns); reads use its reader threads. A claim is one write job — a
``SELECT`` of due rows and their ``UPDATE`` inside ``BEGIN IMMEDIATE`` — so two processes
sharing the file never claim the same delivery under live leases.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json

from taskcast.core import LeaseSettlingOutbox, WebhookDelivery

if TYPE_CHECKING:
    from ._store import SQLiteStore

__all__ = ["SQLiteWebhookOutbox"]


def _save(conn: sqlite3.Connection, item: WebhookDelivery) -> None:
    conn.execute(
        "UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, completed_at = ?, "
        "lease = ?, data = ? WHERE id = ?",
        (
            item.status,
            item.next_attempt_at,
            item.completed_at,
            item.lease,
            to_json(item.to_dict()).decode(),
            item.id,
        ),
    )


def _enqueue(conn: sqlite3.Connection, items: list[WebhookDelivery]) -> None:
    conn.executemany(
        "INSERT INTO webhook_deliveries "
        "(id, task_id, status, next_attempt_at, created_at, completed_at, lease, data) "
        "VALUES (?, ?, ?, ?, ?, ?, '', ?) ON CONFLICT (id) DO NOTHING",
        [
            (
                d.id,
                d.task_id,
                d.status,
                d.next_attempt_at,
                d.created_at,
                d.completed_at,
                to_json(replace(d, lease="").to_dict()).decode(),
            )
            for d in items
        ],
    )


def _claim(conn: sqlite3.Connection, now: int, limit: int, lease_ms: int) -> list[WebhookDelivery]:
    rows = conn.execute(
        "SELECT data FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ? "
        "ORDER BY next_attempt_at, id LIMIT ?",
        (now, limit),
    ).fetchall()
    claimed = []
    for (text,) in rows:
        item = replace(
            WebhookDelivery.from_dict(json.loads(text)),
            lease=secrets.token_hex(12),
            next_attempt_at=now + lease_ms,
        )
        _save(conn, item)
        claimed.append(item)
    return claimed


def _settle(
    conn: sqlite3.Connection, delivery_id: str, lease: str, changes: dict[str, Any]
) -> bool:
    row = conn.execute(
        "SELECT data FROM webhook_deliveries WHERE id = ? AND lease = ? AND lease != ''",
        (delivery_id, lease),
    ).fetchone()
    if row is None:
        return False
    _save(conn, replace(WebhookDelivery.from_dict(json.loads(row[0])), lease="", **changes))
    return True


def _list(conn: sqlite3.Connection, task_id: str, limit: int) -> list[WebhookDelivery]:
    rows = conn.execute(
        "SELECT data FROM webhook_deliveries WHERE task_id = ? "
        "ORDER BY created_at DESC, id DESC LIMIT ?",
        (task_id, limit),
    ).fetchall()
    return [WebhookDelivery.from_dict(json.loads(text)) for (text,) in rows]


def _purge(conn: sqlite3.Connection, before: int) -> int:
    cursor = conn.execute(
        "DELETE FROM webhook_deliveries WHERE status != 'pending' AND completed_at < ?",
        (before,),
    )
    return cursor.rowcount


class SQLiteWebhookOutbox(LeaseSettlingOutbox):
    """:class:`taskcast.core.WebhookOutbox` in a :class:`SQLiteStore`'s file.

    Get one with ``store.webhook_outbox()``. The store's lifecycle is the engine's: this
    object's :meth:`open` opens the store if needed and :meth:`close` leaves it open.
    """

    name = "sqlite"

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        return None

    async def enqueue(self, deliveries: Sequence[WebhookDelivery]) -> None:
        items = list(deliveries)
        if items:
            await self.store._write(lambda conn: _enqueue(conn, items))

    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[WebhookDelivery]:
        return await self.store._write(lambda conn: _claim(conn, now, limit, lease_ms))

    async def _settle(self, delivery_id: str, lease: str, now: int, **changes: Any) -> bool:
        if not lease:
            return False
        return await self.store._write(lambda conn: _settle(conn, delivery_id, lease, changes))

    async def list_for_task(self, task_id: str, limit: int) -> list[WebhookDelivery]:
        return await self.store._read(_list, task_id, limit)

    async def purge(self, finished_before: int) -> int:
        return await self.store._write(lambda conn: _purge(conn, finished_before))
