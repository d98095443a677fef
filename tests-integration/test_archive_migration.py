"""Task archives across real `taskcast start` processes on every backend.

Round trip per backend (export → delete → import → SSE replay, history and a second export
equal the originals), a task released to PostgreSQL exported from there, and a migration of
many tasks from a SQLite server to a Redis + PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from itsupport import Server

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("TASKCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "TASKCAST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MIGRATED_TASKS = int(os.environ.get("TASKCAST_TEST_MIGRATION_TASKS", "40"))
EVENTS_PER_TASK = 20


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        _unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    prefix = "tcarch-" + uuid.uuid4().hex
    yield {"TASKCAST_REDIS_URL": REDIS_URL, "TASKCAST_REDIS_PREFIX": prefix}
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def postgres_env() -> Iterator[dict[str, str]]:
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    schema = "tcarch_" + uuid.uuid4().hex
    yield {
        "TASKCAST_POSTGRES_URL": POSTGRES_URL,
        "TASKCAST_POSTGRES_SCHEMA": schema,
        "TASKCAST_AUTO_MIGRATE": "true",
    }
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _fill(client: httpx.AsyncClient, task_id: str, *, series: bool = True) -> None:
    r = await client.post("/tasks", json={"id": task_id, "type": "demo", "params": {"i": 1}})
    assert r.status_code == 201, r.text
    assert (await client.patch(f"/tasks/{task_id}/status", json={"status": "running"})).is_success
    batch: list[dict[str, Any]] = []
    for i in range(EVENTS_PER_TASK):
        event: dict[str, Any] = {"type": "log", "level": "info", "data": {"i": i}}
        if series and i % 4 == 1:
            event = {"type": "llm", "level": "info", "data": {"delta": f"w{i} "},
                     "seriesId": "text", "seriesMode": "accumulate"}  # fmt: skip
        elif series and i % 4 == 2:
            event = {"type": "pct", "level": "info", "data": {"pct": i},
                     "seriesId": "progress", "seriesMode": "latest"}  # fmt: skip
        batch.append(event)
    r = await client.post(f"/tasks/{task_id}/events", json=batch)
    assert r.status_code == 201, r.text
    r = await client.patch(
        f"/tasks/{task_id}/status", json={"status": "completed", "result": {"done": True}}
    )
    assert r.status_code == 200, r.text


async def _replay(client: httpx.AsyncClient, task_id: str, **params: str) -> list[Any]:
    """Every SSE message of a finished task's stream (event name, data, id)."""
    frames: list[Any] = []
    async with client.stream("GET", f"/tasks/{task_id}/events", params=params) as response:
        assert response.status_code == 200
        buffer = ""
        async for chunk in response.aiter_text():
            buffer += chunk
            while "\n\n" in buffer:
                raw, buffer = buffer.split("\n\n", 1)
                fields = dict(
                    line.split(": ", 1) for line in raw.split("\n") if not line.startswith(":")
                )
                if "event" in fields:
                    frames.append(
                        (fields["event"], json.loads(fields.get("data", "null")), fields.get("id"))
                    )
    return frames


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {**a, "exportedAt": 0} == {**b, "exportedAt": 0}


def _start(servers: list[Server], backend: str, env: dict[str, str], tmp: Path) -> Server:
    args = {
        "memory": ["--storage", "memory"],
        "sqlite": ["--storage", "sqlite", "--db-path", str(tmp / f"{uuid.uuid4().hex}.db")],
        "redis": ["--storage", "redis"],
        "redis+postgres": ["--storage", "redis"],
    }[backend]
    server = Server(args, env=env)
    servers.append(server)
    return server.start()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis", "redis+postgres"])
async def test_round_trip_on_every_backend(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, servers: list[Server]
) -> None:
    env: dict[str, str] = {}
    if "redis" in backend:
        env |= request.getfixturevalue("redis_env")
    if "postgres" in backend:
        env |= request.getfixturevalue("postgres_env")
    server = _start(servers, backend, env, tmp_path)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        # Without latest/accumulate series an archive is the history itself: the replay
        # after the round trip is identical, event ids (resume cursors) included.
        await _fill(client, "plain", series=False)
        plain = (await client.get("/tasks/plain/archive")).json()
        replay = await _replay(client, "plain")
        history = (await client.get("/tasks/plain/events/history")).json()
        assert (await client.delete("/tasks/plain")).status_code == 204
        r = await client.post("/tasks/import", json={"archive": plain})
        assert r.status_code == 200, r.text
        assert await _replay(client, "plain") == replay
        assert (await client.get("/tasks/plain/events/history")).json() == history
        assert _same((await client.get("/tasks/plain/archive")).json(), plain)
        # With series the archive is compacted: the imported task replays the compacted
        # history, and exports the same archive again.
        await _fill(client, "series")
        archive = (await client.get("/tasks/series/archive")).json()
        text = "".join(f"w{i} " for i in range(1, EVENTS_PER_TASK, 4))
        assert {"delta": text} in [e["data"] for e in archive["events"]]
        assert (await client.delete("/tasks/series")).status_code == 204
        r = await client.post("/tasks/import", json={"archive": archive})
        assert r.status_code == 200, r.text
        assert (await client.get("/tasks/series/events/history")).json() == archive["events"]
        assert _same((await client.get("/tasks/series/archive")).json(), archive)
        frames = await _replay(client, "series", wrap="false", seriesFormat="accumulated")
        replayed = [data for name, data, _ in frames if name == "taskcast.event"]
        assert [e["id"] for e in replayed] == [e["id"] for e in archive["events"]]
        assert frames[-1][0] == "taskcast.done"


async def test_a_task_released_to_postgres_exports_and_imports(
    tmp_path: Path,
    redis_env: dict[str, str],
    postgres_env: dict[str, str],
    servers: list[Server],
) -> None:
    server = _start(servers, "redis+postgres", redis_env | postgres_env, tmp_path)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        await _fill(client, "cold")
        hot = (await client.get("/tasks/cold/archive")).json()
        r = await client.post("/tasks/cold/storage/release", json={})
        assert r.status_code == 200, r.text
        assert r.json()["released"] is True
        # The hot store no longer holds it: the export reads PostgreSQL.
        client_redis = redis.Redis.from_url(redis_env["TASKCAST_REDIS_URL"])
        try:
            prefix = redis_env["TASKCAST_REDIS_PREFIX"]
            assert client_redis.exists(f"{prefix}:task:cold") == 0
        finally:
            client_redis.close()
        cold = (await client.get("/tasks/cold/archive")).json()
        assert _same(cold, hot)
        r = await client.post("/tasks/import", json={"archive": cold, "overwrite": True})
        assert r.status_code == 200, r.text
        assert r.json()["overwritten"] is True
        assert (await client.get("/tasks/cold/events/history")).json() == cold["events"]


async def test_migrate_many_tasks_from_sqlite_to_redis_and_postgres(
    tmp_path: Path,
    redis_env: dict[str, str],
    postgres_env: dict[str, str],
    servers: list[Server],
) -> None:
    source = _start(servers, "sqlite", {}, tmp_path)
    target = _start(servers, "redis+postgres", redis_env | postgres_env, tmp_path)
    ids = [f"m{i:05d}" for i in range(MIGRATED_TASKS)]
    async with (
        httpx.AsyncClient(base_url=source.url, timeout=60) as src,
        httpx.AsyncClient(base_url=target.url, timeout=60) as dst,
    ):
        for task_id in ids:
            await _fill(src, task_id)
        for task_id in ids:
            archive = (await src.get(f"/tasks/{task_id}/archive")).json()
            r = await dst.post("/tasks/import", json={"archive": archive})
            assert r.status_code == 200, r.text
        for task_id in ids[:: max(1, len(ids) // 10)]:
            before = (await src.get(f"/tasks/{task_id}/archive")).json()
            assert _same((await dst.get(f"/tasks/{task_id}/archive")).json(), before)
            assert (await dst.get(f"/tasks/{task_id}/events/history")).json() == before["events"]


async def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `taskcast ARGS` to its end without blocking the event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "taskcast.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_cli_export_and_import_move_a_deployment(
    tmp_path: Path,
    redis_env: dict[str, str],
    postgres_env: dict[str, str],
    servers: list[Server],
) -> None:
    """`taskcast export --all` from a SQLite server, `taskcast import` into Redis + PostgreSQL
    (real processes; the benchmark runs the same with 10,000 tasks of 100 events)."""
    source = _start(servers, "sqlite", {}, tmp_path)
    target = _start(servers, "redis+postgres", redis_env | postgres_env, tmp_path)
    ids = [f"cli{i:05d}" for i in range(MIGRATED_TASKS)]
    async with httpx.AsyncClient(base_url=source.url, timeout=60) as src:
        for task_id in ids:
            await _fill(src, task_id)
    dump = tmp_path / "all.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCAST_")}
    exported = await _cli(env, "export", "--all", "-o", str(dump), "--url", source.url)
    assert exported.returncode == 0, exported.stderr
    assert f"exported {len(ids)} task(s)" in exported.stderr
    assert len(dump.read_text().splitlines()) == len(ids)
    imported = await _cli(env, "import", str(dump), "--url", target.url)
    assert imported.returncode == 0, imported.stderr
    assert f"imported {len(ids)}, skipped 0, failed 0" in imported.stderr
    async with (
        httpx.AsyncClient(base_url=source.url, timeout=60) as src,
        httpx.AsyncClient(base_url=target.url, timeout=60) as dst,
    ):
        for task_id in ids[:: max(1, len(ids) // 10)]:
            before = (await src.get(f"/tasks/{task_id}/archive")).json()
            assert _same((await dst.get(f"/tasks/{task_id}/archive")).json(), before)
