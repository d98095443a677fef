from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskcast.core import now_ms
from taskcast.core.testing import WebhookOutboxContract
from taskcast.core.testing._webhook_contract import delivery
from taskcast.sqlite import MIGRATIONS, SQLiteStore, SQLiteWebhookOutbox
from taskcast.sqlite._migrations import migrate

from ._helpers import raw_connection

pytestmark = pytest.mark.anyio


class TestSQLiteWebhookOutbox(WebhookOutboxContract):
    @pytest.fixture
    async def outbox(self, tmp_path: Path) -> AsyncIterator[SQLiteWebhookOutbox]:
        store = SQLiteStore(tmp_path / "outbox.db")
        box = store.webhook_outbox()
        await box.open()
        yield box
        await box.close()
        await store.close()


async def test_deliveries_survive_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    base = now_ms()
    store = SQLiteStore(path)
    await store.open()
    item = delivery("t", base, secret="k")
    await store.webhook_outbox().enqueue([item])
    await store.close()
    again = SQLiteStore(path)
    await again.open()
    try:
        (claimed,) = await again.webhook_outbox().claim_due(base, 10, 1000)
        assert claimed.id == item.id and claimed.secret == "k"
    finally:
        await again.close()


async def test_a_version_1_file_gains_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with raw_connection(path) as conn:
        migrate(conn, str(path), MIGRATIONS[:1])
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.webhook_outbox().enqueue([delivery("t", 1)])
        assert len(await store.webhook_outbox().list_for_task("t", 5)) == 1
    finally:
        await store.close()
    with raw_connection(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 2
