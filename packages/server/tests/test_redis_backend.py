"""Two server instances sharing one Redis (unique key prefix), over real HTTP.

Needs Redis at TASKCAST_TEST_REDIS_URL (default redis://127.0.0.1:6379/0); skipped with the
reason when unreachable, failed when CI=true.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from taskcast.core import TaskEngine
from taskcast.server import ServerConfig, create_app

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

REDIS_URL = os.environ.get("TASKCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis not reachable at {REDIS_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Any:
    import redis

    value = "tcserver-" + uuid.uuid4().hex
    yield value
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{value}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def make_engine(url: str, prefix: str) -> TaskEngine:
    from taskcast.redis import ReconnectBackoff, RedisBroadcast, RedisShortTermStore

    broadcast = RedisBroadcast(url, prefix=prefix, backoff=ReconnectBackoff(base=0.05, cap=0.4))
    engine = TaskEngine(short_term=RedisShortTermStore(url, prefix=prefix), broadcast=broadcast)
    broadcast.on_reconnect = engine.hub.notify_gap
    return engine


@pytest.fixture
async def instances(
    redis_url: str, prefix: str, serve_app: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    config = ServerConfig(heartbeat_seconds=0.5)
    a, b = make_engine(redis_url, prefix), make_engine(redis_url, prefix)
    limits = httpx.Limits(max_connections=200)
    async with (
        serve_app(create_app(a, config=config), a) as url_a,
        serve_app(create_app(b, config=config), b) as url_b,
        httpx.AsyncClient(base_url=url_a, timeout=30, limits=limits) as ca,
        httpx.AsyncClient(base_url=url_b, timeout=30, limits=limits) as cb,
    ):
        yield ca, cb


async def test_subscriber_on_b_follows_publisher_on_a(
    instances: tuple[httpx.AsyncClient, httpx.AsyncClient], open_sse: Any
) -> None:
    a, b = instances
    tid = (await a.post("/tasks", json={"type": "job"})).json()["id"]
    assert (await b.get(f"/tasks/{tid}")).json()["status"] == "pending"
    await a.patch(f"/tasks/{tid}/status", json={"status": "running"})
    await a.post(f"/tasks/{tid}/events", json=[{"type": "old", "data": i} for i in range(50)])
    async with open_sse(b, f"/tasks/{tid}/events") as s:
        first = await s.events_until(lambda f: f.data["rawIndex"] == 50)

        async def publish() -> None:
            for i in range(20):
                r = await a.post(f"/tasks/{tid}/events", json={"type": "new", "data": i})
                assert r.status_code == 201

        await asyncio.gather(publish(), publish())
        assert (
            await a.patch(f"/tasks/{tid}/status", json={"status": "completed"})
        ).status_code == 200
        rest = await s.events_until(lambda f: f.event == "taskcast.done")
    indexes = [f.data["rawIndex"] for f in first + rest if f.event == "taskcast.event"]
    assert indexes == list(range(92))
    assert rest[-1].data == {"reason": "completed"}
    # Resume on the other instance with Last-Event-ID: only what came after.
    async with open_sse(a, f"/tasks/{tid}/events", headers={"Last-Event-ID": first[-1].id}) as s:
        again = await s.rest()
    assert [f.data["rawIndex"] for f in again if f.event == "taskcast.event"] == list(range(51, 92))


async def test_terminal_race_across_instances(
    instances: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    a, b = instances
    tid = (await a.post("/tasks", json={})).json()["id"]
    await b.patch(f"/tasks/{tid}/status", json={"status": "running"})
    responses = await asyncio.gather(
        *(
            (a if i % 2 else b).patch(f"/tasks/{tid}/status", json={"status": "completed"})
            for i in range(40)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 39


async def test_publishers_on_both_instances_get_unique_indexes(
    instances: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    a, b = instances
    tid = (await a.post("/tasks", json={})).json()["id"]
    await a.patch(f"/tasks/{tid}/status", json={"status": "running"})

    async def publisher(client: httpx.AsyncClient) -> list[int]:
        out = []
        for _ in range(25):
            r = await client.post(f"/tasks/{tid}/events", json={"type": "x"})
            out.append(r.json()["index"])
        return out

    chunks = await asyncio.gather(*(publisher(a if i % 2 else b) for i in range(8)))
    assert sorted(i for c in chunks for i in c) == list(range(1, 201))
    history = (await b.get(f"/tasks/{tid}/events/history")).json()
    assert [e["index"] for e in history] == list(range(201))


async def test_delete_on_a_ends_stream_on_b(
    instances: tuple[httpx.AsyncClient, httpx.AsyncClient], open_sse: Any
) -> None:
    a, b = instances
    tid = (await a.post("/tasks", json={})).json()["id"]
    await a.patch(f"/tasks/{tid}/status", json={"status": "running"})
    async with open_sse(b, f"/tasks/{tid}/events") as s:
        await s.events_until(lambda f: True)
        assert (await a.delete(f"/tasks/{tid}")).status_code == 204
        frames = await s.events_until(lambda f: f.event == "taskcast.done")
    assert frames[-1].data == {"reason": "deleted"}
    assert (await b.get(f"/tasks/{tid}")).status_code == 404


async def test_readiness_reports_redis(
    instances: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    a, _ = instances
    r = await a.get("/health/ready")
    assert r.status_code == 200
    assert r.json()["dependencies"]["shortTermStore"] == {"state": "healthy"}
    detail = (await a.get("/health/detail")).json()
    assert detail["adapters"]["shortTermStore"]["provider"] == "redis"


async def test_global_stream_on_b_sees_tasks_published_on_a(
    instances: tuple[httpx.AsyncClient, httpx.AsyncClient], open_sse: Any
) -> None:
    a, b = instances
    async with open_sse(b, "/events?types=cross.*") as s:
        # The global stream has no replay: wait for its first heartbeat so it is live.
        while (frame := await s.next()) is not None and frame.comment is None:
            pass
        tid = (await a.post("/tasks", json={})).json()["id"]
        await a.patch(f"/tasks/{tid}/status", json={"status": "running"})
        await a.post(f"/tasks/{tid}/events", json=[{"type": "cross.a"}, {"type": "other"}])
        await a.post(f"/tasks/{tid}/events", json={"type": "cross.b", "data": 2})
        frames = await s.events_until(lambda f: f.data["type"] == "cross.b")
    assert [(f.data["taskId"], f.data["type"]) for f in frames] == [
        (tid, "cross.a"),
        (tid, "cross.b"),
    ]
    assert [f.data["filteredIndex"] for f in frames] == [0, 1]
