"""Bad input on every backend, over real HTTP: task ids, string limits and NUL characters.

Every case is answered 400 (404 for an id that routing cannot reach) with an
``{"error": ...}`` body, never 500, and leaves the stored state as it was; the same on
memory, SQLite, Redis and Redis + PostgreSQL. Redis and PostgreSQL cases need the servers
at TASKCAST_TEST_REDIS_URL / TASKCAST_TEST_POSTGRES_URL (skipped with the reason when
unreachable, failed when CI=true).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from taskcast.core import EngineLimits, MemoryShortTermStore, TaskEngine, new_id

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("TASKCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("TASKCAST_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"

LONG = "x" * 257  # one more than the default limit of ids and names
NUL = "\u0000"
MANY = [f"p{i}.*" for i in range(101)]  # one more pattern than a filter may hold


def _unreachable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _need_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unreachable(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()


def _need_postgres() -> None:
    import psycopg

    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        _unreachable(f"PostgreSQL not reachable at {PG_URL}: {exc}")


def _drop_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def _drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis+postgres", marks=[pytest.mark.redis, pytest.mark.postgres]),
    ]
)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TaskEngine]:
    """The engine of the app under test (conftest's ``app`` and ``live`` serve it)."""
    backend: str = request.param
    if backend == "memory":
        yield TaskEngine(short_term=MemoryShortTermStore())
        return
    if backend == "sqlite":
        from taskcast.sqlite import SQLiteStore

        yield TaskEngine(short_term=SQLiteStore(tmp_path / "limits.db"))
        return
    _need_redis()
    from taskcast.redis import RedisBroadcast, RedisShortTermStore

    prefix = "tclimits-" + uuid.uuid4().hex
    long_term = None
    schema = None
    if backend == "redis+postgres":
        _need_postgres()
        from taskcast.postgres import PostgresLongTermStore, apply_migrations

        schema = f"tc_limits_{new_id().lower()}"
        await apply_migrations(PG_URL, schema)
        long_term = PostgresLongTermStore(PG_URL, schema=schema, max_size=4)
    try:
        yield TaskEngine(
            short_term=RedisShortTermStore(REDIS_URL, prefix=prefix),
            broadcast=RedisBroadcast(REDIS_URL, prefix=prefix),
            long_term=long_term,
        )
    finally:
        _drop_redis_keys(prefix)
        if schema is not None:
            _drop_schema(schema)


async def _running_task(live: httpx.AsyncClient, task_id: str = "t") -> dict[str, Any]:
    """A running task with one event; returns what the state checks compare."""
    assert (await live.post("/tasks", json={"id": task_id, "type": "job"})).status_code == 201
    assert (await live.patch(f"/tasks/{task_id}/status", json={"status": "running"})).is_success
    one = {"type": "llm.delta", "level": "info", "data": {"delta": "hi"}}
    assert (await live.post(f"/tasks/{task_id}/events", json=one)).status_code == 201
    return await _state(live, task_id)


async def _state(live: httpx.AsyncClient, task_id: str = "t") -> dict[str, Any]:
    task = (await live.get(f"/tasks/{task_id}")).json()
    for key in ("hot", "subscriberCount"):
        task.pop(key, None)
    return {
        "task": task,
        "history": (await live.get(f"/tasks/{task_id}/events/history")).json(),
        "ids": sorted(t["id"] for t in (await live.get("/tasks")).json()["tasks"]),
    }


def _refused(res: httpx.Response, *words: str, status: int = 400) -> None:
    assert res.status_code == status, (res.status_code, res.text)
    assert res.headers["content-type"] == "application/json"
    message = res.json()["error"]
    for word in words:
        assert word in message, (word, message)


# -- task ids ------------------------------------------------------------------------------

# Path ids as sent on the wire (percent-encoded) that no task can have.
BAD_PATH_IDS = {
    "a%00b": "control character U+0000",
    "a%1Fb": "control character U+001F",
    "%C2%85": "control character U+0085",
    LONG: "longer than 256 characters",
    "%2E%2E": "'.' and '..'",
    "%2E": "'.' and '..'",
}


def _task_routes(path_id: str) -> list[tuple[str, str, Any]]:
    base = f"/tasks/{path_id}"
    return [
        ("GET", base, None),
        ("DELETE", base, None),
        ("PATCH", f"{base}/status", {"status": "running"}),
        ("POST", f"{base}/resolve", {"data": 1}),
        ("GET", f"{base}/request", None),
        ("POST", f"{base}/events", {"type": "x", "level": "info"}),
        ("GET", f"{base}/events", None),
        ("GET", f"{base}/events/history", None),
        ("GET", f"{base}/webhooks/deliveries", None),
    ]


async def test_every_task_route_refuses_an_invalid_path_id(live: httpx.AsyncClient) -> None:
    before = await _running_task(live)
    for path_id, reason in BAD_PATH_IDS.items():
        for method, path, body in _task_routes(path_id):
            res = await live.request(method, path, json=body)
            _refused(res, "Invalid task id", reason)
    # An encoded '/' is decoded before routing: no task route matches, so it is a 404.
    for method, path, body in _task_routes("a%2Fb"):
        _refused(await live.request(method, path, json=body), status=404)
    assert await _state(live) == before


GOOD_IDS = ["demo", "job-1", "a.b", "user:42", "a b", "café", "a?b#c%d&e", "x" * 256]


async def test_ids_that_work_are_created_read_published_and_deleted(
    live: httpx.AsyncClient,
) -> None:
    for task_id in [*GOOD_IDS, new_id()]:
        created = await live.post("/tasks", json={"id": task_id})
        assert created.status_code == 201, (task_id, created.text)
        path = "/tasks/" + quote(task_id, safe="")
        assert (await live.get(path)).json()["id"] == task_id
        assert (await live.patch(f"{path}/status", json={"status": "running"})).is_success
        event = {"type": "x", "level": "info", "data": 1}
        assert (await live.post(f"{path}/events", json=event)).status_code == 201
        history = (await live.get(f"{path}/events/history")).json()
        assert [e["taskId"] for e in history] == [task_id, task_id]
        assert (await live.delete(path)).status_code == 204
        assert (await live.get(path)).status_code == 404


@pytest.mark.parametrize(
    ("task_id", "reason"),
    [
        ("a/b", "must not contain '/'"),
        (".", "'.' and '..'"),
        ("..", "'.' and '..'"),
        (f"a{NUL}b", "Invalid field id: contains a NUL character"),
        ("a\nb", "control character U+000A"),
        ("a\x7fb", "control character U+007F"),
        (LONG, "longer than 256 characters"),
        ("", "at least 1 character"),
    ],
)
async def test_create_refuses_ids_that_cannot_work(
    live: httpx.AsyncClient, task_id: str, reason: str
) -> None:
    before = await _running_task(live)
    _refused(await live.post("/tasks", json={"id": task_id}), reason)
    assert await _state(live) == before


# -- string limits -------------------------------------------------------------------------


async def test_every_name_in_a_new_task_is_bounded(live: httpx.AsyncClient) -> None:
    before = await _running_task(live)
    hook = {"url": "https://hooks.example/x", "filter": {"types": ["ok", LONG]}}
    cases = [
        ({"type": LONG}, "Invalid field type: longer than 256 characters (max 256)"),
        ({"tags": ["ok", LONG]}, "Invalid field tags.1: longer than 256 characters"),
        ({"metadata": {LONG: 1}}, "metadata key 'xxxx"),
        ({"webhooks": [hook]}, "webhooks.0.filter.types.1: longer than 256 characters"),
        (
            {"webhooks": [{"url": "https://hooks.example/x", "secret": "s" * 1025}]},
            "Invalid field webhooks.0.secret: longer than 1024 characters (max 1024)",
        ),
        (
            {"webhooks": [{"url": "https://hooks.example/x", "filter": {"types": MANY}}]},
            "Invalid field webhooks.0.filter.types: more than 100 patterns (max 100)",
        ),
    ]
    for extra, message in cases:
        _refused(await live.post("/tasks", json={"id": "new", **extra}), message)
    assert await _state(live) == before
    # The limit itself is allowed.
    at_limit = {"id": "new", "type": "t" * 256, "tags": ["g" * 256], "metadata": {"k" * 256: 1}}
    assert (await live.post("/tasks", json=at_limit)).status_code == 201


async def test_every_name_in_an_event_is_bounded(live: httpx.AsyncClient) -> None:
    """A 900 KB ``type`` used to be stored and fanned out past the 256 KiB data limit."""
    before = await _running_task(live)
    event = {"type": "x", "level": "info", "data": {"delta": "a"}}
    cases = [
        ({"type": "t" * 900_000}, "Invalid field type: longer than 256 characters (max 256)"),
        ({"seriesId": LONG, "seriesMode": "accumulate"}, "Invalid field seriesId: longer"),
        (
            {"seriesId": "s", "seriesMode": "accumulate", "seriesAccField": LONG},
            "Invalid field seriesAccField: longer",
        ),
        ({"idempotencyKey": LONG}, "Invalid field idempotencyKey: longer than 256"),
    ]
    for extra, message in cases:
        _refused(await live.post("/tasks/t/events", json={**event, **extra}), message)
    # A batch is all-or-nothing: the second event's type refuses the first as well.
    batch = [event, {**event, "type": LONG}]
    _refused(await live.post("/tasks/t/events", json=batch), "Invalid field 1.type: longer")
    assert await _state(live) == before
    ok = {**event, "type": "t" * 256, "seriesId": "s" * 256, "seriesMode": "keep-all"}
    assert (await live.post("/tasks/t/events", json={**ok, "idempotencyKey": "k" * 256})).is_success


async def test_transition_names_are_bounded(live: httpx.AsyncClient) -> None:
    before = await _running_task(live)
    cases = [
        ({"status": "failed", "error": {"code": LONG, "message": "m"}}, "error.code: longer"),
        (
            {"status": "blocked", "blockedRequest": {"type": LONG, "data": {}}},
            "blockedRequest.type: longer",
        ),
    ]
    for body, message in cases:
        _refused(await live.patch("/tasks/t/status", json=body), message)
    assert await _state(live) == before


async def test_filter_query_parameters_are_bounded(live: httpx.AsyncClient) -> None:
    before = await _running_task(live)
    for path, name in [
        ("/tasks/t/events/history", "types"),
        ("/tasks/t/events/history", "levels"),
        ("/tasks/t/events", "types"),
        ("/events", "types"),
        ("/tasks", "type"),
        ("/tasks", "status"),
    ]:
        res = await live.get(path, params={name: f"ok,{LONG}"})
        _refused(res, f"Invalid query parameter {name}: an item is longer than 256 characters")
        # Every event is matched against every pattern of every subscriber: the count is
        # bounded too (the URL limit alone let thousands through).
        res = await live.get(path, params={name: ",".join(MANY)})
        _refused(res, f"Invalid query parameter {name}: more than 100 items (max 100)")
    for path in ("/tasks/t/events/history", "/tasks/t/events"):
        _refused(await live.get(path, params={"since.id": LONG}), "since.id: longer than 256")
        _refused(await live.get(path, params={"since.id": NUL}), "since.id: contains a NUL")
    _refused(
        await live.get("/tasks/t/events", headers={"Last-Event-ID": LONG}),
        "Invalid header Last-Event-ID: longer than 256",
    )
    assert await _state(live) == before


# -- NUL -----------------------------------------------------------------------------------


async def test_nul_is_refused_in_every_body_before_it_is_acknowledged(
    live: httpx.AsyncClient,
) -> None:
    """``\\u0000`` was acknowledged (201) but can never be written to PostgreSQL."""
    before = await _running_task(live)
    event = {"type": "x", "level": "info", "data": {"delta": "a"}}
    creates = [
        ({"params": {"prompt": f"a{NUL}b"}}, "Invalid field params.prompt: contains a NUL"),
        ({"metadata": {f"k{NUL}": 1}}, "Invalid field metadata.k\\u0000: contains a NUL"),
        ({"result": {"list": ["ok", NUL]}}, "Invalid field result.list.1: contains a NUL"),
        ({"type": f"a{NUL}"}, "Invalid field type: contains a NUL"),
        ({"tags": [NUL]}, "Invalid field tags.0: contains a NUL"),
        ({"authConfig": {"rules": [{"match": {"scope": [NUL]}}]}}, "contains a NUL"),
    ]
    for extra, message in creates:
        _refused(await live.post("/tasks", json={"id": "new", **extra}), message)
    publishes: list[tuple[Any, str]] = [
        ({**event, "data": NUL}, "Invalid field data: contains a NUL character (\\u0000)"),
        ({**event, "data": {"delta": f"x{NUL}"}}, "Invalid field data.delta: contains a NUL"),
        ({**event, "type": f"a{NUL}b"}, "Invalid field type: contains a NUL"),
        ({**event, "seriesId": NUL, "seriesMode": "latest"}, "seriesId: contains a NUL"),
        ({**event, "idempotencyKey": NUL}, "idempotencyKey: contains a NUL"),
        ([event, {**event, "data": [NUL]}], "Invalid field 1.data.0: contains a NUL"),
    ]
    for body, message in publishes:
        _refused(await live.post("/tasks/t/events", json=body), message)
    transitions = [
        {"status": "completed", "result": {"answer": NUL}},
        {"status": "failed", "error": {"message": f"boom{NUL}"}},
        {"status": "paused", "reason": NUL},
    ]
    for body in transitions:
        _refused(await live.patch("/tasks/t/status", json=body), "contains a NUL")
    _refused(await live.post("/tasks/t/resolve", json={"data": NUL}), "contains a NUL")
    assert await _state(live) == before


async def test_an_escaped_backslash_before_u0000_is_text_not_nul(live: httpx.AsyncClient) -> None:
    await _running_task(live)
    text = "\\u0000 is how JSON writes NUL"
    body = json.dumps({"type": "doc", "level": "info", "data": {"text": text}})
    assert "\\\\u0000" in body
    res = await live.post("/tasks/t/events", content=body)
    assert res.status_code == 201, res.text
    assert res.json()["data"] == {"text": text}
    history = (await live.get("/tasks/t/events/history")).json()
    assert history[-1]["data"] == {"text": text}
    created = await live.post("/tasks", json={"id": "doc", "params": {"text": text}})
    assert created.status_code == 201
    assert (await live.get("/tasks/doc")).json()["params"] == {"text": text}


# -- configuration -------------------------------------------------------------------------


async def test_limits_are_the_engines_and_configurable(serve_app: Any) -> None:
    from taskcast.server import create_app

    engine = TaskEngine(
        short_term=MemoryShortTermStore(), limits=EngineLimits(max_id_chars=8, max_name_chars=4)
    )
    async with serve_app(create_app(engine), engine) as url, httpx.AsyncClient(base_url=url) as c:
        _refused(await c.post("/tasks", json={"id": "123456789"}), "longer than 8 characters")
        assert (await c.post("/tasks", json={"id": "12345678", "type": "abcd"})).status_code == 201
        _refused(await c.get("/tasks/123456789"), "Invalid task id: longer than 8")
        await c.patch("/tasks/12345678/status", json={"status": "running"})
        res = await c.post("/tasks/12345678/events", json={"type": "abcde", "level": "info"})
        _refused(res, "Invalid field type: longer than 4 characters (max 4)")
        res = await c.get("/tasks/12345678/events/history", params={"types": "abcde"})
        _refused(res, "Invalid query parameter types: an item is longer than 4 characters")
