"""Readiness tells the truth on SQLite: a full disk makes writes 503 and the instance unready.

The disk is filled with ``PRAGMA max_page_count`` on the store's write connection: SQLite
then refuses new pages with SQLITE_FULL ("database or disk is full"), the error a full disk
gives. Before, every write failed while ``/health/ready`` answered 200 (reads still work).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskcast.core import TaskEngine
from taskcast.server import ServerConfig, create_app
from taskcast.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "taskcast.db")


@pytest.fixture
async def http(store: SQLiteStore, serve_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    engine = TaskEngine(short_term=store)
    async with (
        serve_app(create_app(engine, config=ServerConfig()), engine) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield client


async def _set_max_pages(store: SQLiteStore, pages: int | None) -> None:
    """Cap the file at its current size (None: lift the cap); a per-connection setting,
    so it is set on the writer's own connection."""

    def cap(conn: sqlite3.Connection) -> None:
        size = conn.execute("PRAGMA page_count").fetchone()[0] if pages is None else pages
        conn.execute(f"PRAGMA max_page_count = {int(size)}")

    await store._write(cap)


async def test_a_full_disk_answers_503_on_writes_and_readiness(
    store: SQLiteStore, http: httpx.AsyncClient
) -> None:
    assert (await http.post("/tasks", json={"id": "t", "type": "x"})).status_code == 201
    assert (await http.patch("/tasks/t/status", json={"status": "running"})).status_code == 200
    assert (await http.get("/health/ready")).status_code == 200

    await _set_max_pages(store, None)
    big = {"text": "x" * 60_000}
    for _ in range(50):
        response = await http.post("/tasks/t/events", json={"type": "log", "data": big})
        if response.status_code != 201:
            break
    assert response.status_code == 503, response.text
    assert "database or disk is full" in response.json()["error"]
    for method, path, body in [
        ("POST", "/tasks", {"type": "x", "params": big}),
        ("POST", "/tasks/t/events", [{"type": "log", "data": big}] * 2),
    ]:
        response = await http.request(method, path, json=body)
        assert response.status_code == 503, (path, response.text)
        assert "database or disk is full" in response.json()["error"]

    # Reads still work; readiness says the instance cannot take writes.
    assert (await http.get("/tasks/t")).status_code == 200
    ready = await http.get("/health/ready")
    assert ready.status_code == 503, ready.text
    short_term = ready.json()["dependencies"]["shortTermStore"]
    assert short_term["state"] == "unhealthy"
    assert "database or disk is full" in short_term["errorKind"]
    # It stays so: readiness probes write (and remove) a row, which needs space too.
    assert (await http.get("/health/ready")).status_code == 503

    # Space comes back: the probe passes without waiting for a client's write.
    await _set_max_pages(store, 1_000_000)
    assert (await http.get("/health/ready")).status_code == 200
    response = await http.post("/tasks/t/events", json={"type": "log", "data": big})
    assert response.status_code == 201
    # The probe's row never shows.
    listed = (await http.get("/tasks")).json()["tasks"]
    assert [task["id"] for task in listed] == ["t"]
