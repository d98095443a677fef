"""REST routes over the ASGI transport: status codes, bodies and errors, exactly."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from taskcast.core import EventInput, TaskEngine, TaskInput
from taskcast.server import ServerConfig, create_app

pytestmark = pytest.mark.anyio


async def make_task(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/tasks", json=body)
    assert r.status_code == 201, r.text
    task: dict[str, Any] = r.json()
    return task


async def running(client: httpx.AsyncClient, **body: Any) -> str:
    task = await make_task(client, **body)
    r = await client.patch(f"/tasks/{task['id']}/status", json={"status": "running"})
    assert r.status_code == 200
    return str(task["id"])


# -- service routes ----------------------------------------------------------------------


async def test_root_info(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert r.json() == {
        "name": "taskcast",
        "version": "0.1.0",
        "apiVersion": "v1",
        "links": {
            "health": "/health",
            "healthReady": "/health/ready",
            "healthDetail": "/health/detail",
            "openapi": "/openapi.json",
            "docs": "/docs",
        },
    }


async def test_health(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.json() == {"ok": True, "name": "taskcast", "version": "0.1.0", "apiVersion": "v1"}


async def test_docs_page(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]


async def test_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope")
    assert (r.status_code, r.json()) == (404, {"error": "Not found"})
    r = await client.put("/tasks")
    assert (r.status_code, r.json()) == (405, {"error": "Method Not Allowed"})


# -- create ------------------------------------------------------------------------------


async def test_create_minimal_has_no_null_keys(client: httpx.AsyncClient) -> None:
    r = await client.post("/tasks", json={})
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"id", "status", "createdAt", "updatedAt"}
    assert body["status"] == "pending"
    assert len(body["id"]) == 26
    assert body["createdAt"] == body["updatedAt"]


async def test_create_with_empty_body_and_null_body(client: httpx.AsyncClient) -> None:
    assert (await client.post("/tasks")).status_code == 201
    assert (await client.post("/tasks", content=b"null")).status_code == 201


async def test_create_every_field(client: httpx.AsyncClient) -> None:
    body = {
        "id": "task-1",
        "type": "llm.chat",
        "params": {"prompt": "hi"},
        "result": {"partial": True},
        "metadata": {"m": 1},
        "ttl": 60,
        "authConfig": {"rules": []},
        "webhooks": [{"url": "http://example.invalid/hook"}],
        "cleanup": {"rules": [{"target": "all"}]},
        "tags": ["a", "b"],
        "assignMode": "pull",
        "cost": 2,
        "disconnectPolicy": "fail",
        "unknownKey": "ignored",
    }
    r = await client.post("/tasks", json=body)
    assert r.status_code == 201
    got = r.json()
    expected = {k: v for k, v in body.items() if k != "unknownKey"}
    # Webhooks are echoed as readers see them: whether a secret is set, never the secret.
    expected["webhooks"] = [{"url": "http://example.invalid/hook", "hasSecret": False}]
    assert {k: got[k] for k in expected} == expected
    assert "unknownKey" not in got


async def test_create_accepts_json_whatever_the_content_type(client: httpx.AsyncClient) -> None:
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {} if ctype is None else {"content-type": ctype}
        r = await client.post("/tasks", content=b'{"type": "x"}', headers=headers)
        assert r.status_code == 201, ctype
        assert r.json()["type"] == "x"


async def test_create_duplicate_is_409(client: httpx.AsyncClient) -> None:
    await make_task(client, id="dup")
    r = await client.post("/tasks", json={"id": "dup"})
    assert (r.status_code, r.json()) == (409, {"error": "Task already exists: dup"})


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": -5}, "ttl"),
        ({"ttl": "5"}, "ttl"),
        ({"ttl": 1.5}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"cost": 0}, "cost"),
        ({"id": ""}, "id"),
        ({"id": 5}, "id"),
        ({"id": "a\nb"}, "id"),
        ({"ttl": 2**31}, "ttl"),
        ({"cost": 2**40}, "cost"),
        ({"params": [1]}, "params"),
        ({"tags": "a"}, "tags"),
        ({"assignMode": "push"}, "assignMode"),
        ({"disconnectPolicy": "x"}, "disconnectPolicy"),
        ({"cleanup": {"no": "rules"}}, "cleanup.rules"),
        ([1, 2], "Invalid request body"),
        ("text", "Invalid request body"),
    ],
)
async def test_create_rejects_wrong_types(
    client: httpx.AsyncClient, engine: TaskEngine, body: Any, fragment: str
) -> None:
    r = await client.post("/tasks", json=body)
    assert r.status_code == 400
    assert fragment in r.json()["error"]
    assert (await engine.list_tasks()).tasks == []


@pytest.mark.parametrize(
    "raw",
    [
        b"{bad",
        b'{"a":1} trailing',
        b"NaN",
        b'{"params":{"x":Infinity}}',
        b'{"params":{"x":1e400}}',
        b'{"params":{"x":' + b"1" * 400 + b"}}",
        b'"\\ud800"',
        b"\xff\xfe",
        b"[" * 300 + b"]" * 300,
    ],
)
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, engine: TaskEngine, raw: bytes
) -> None:
    r = await client.post("/tasks", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("Malformed JSON in request body")
    assert (await engine.list_tasks()).tasks == []


async def test_body_over_limit_is_413(client: httpx.AsyncClient, engine: TaskEngine) -> None:
    big = b'{"params":{"x":"' + b"a" * (1024 * 1024) + b'"}}'
    r = await client.post("/tasks", content=big)
    assert (r.status_code, r.json()) == (
        413,
        {"error": "Request body too large (max 1048576 bytes)"},
    )

    async def chunks() -> Any:
        # No Content-Length: the limit is enforced while reading.
        yield b'{"params":{"x":"'
        for _ in range(20):
            yield b"a" * 60_000
        yield b'"}}'

    r = await client.post("/tasks", content=chunks())
    assert r.status_code == 413
    assert (await engine.list_tasks()).tasks == []


# -- read, list, delete -----------------------------------------------------------------


async def test_get_task_enriched(client: httpx.AsyncClient) -> None:
    task = await make_task(client, type="t")
    r = await client.get(f"/tasks/{task['id']}")
    assert r.status_code == 200
    assert r.json() == {**task, "hot": False, "subscriberCount": 0}


async def test_get_unknown_task(client: httpx.AsyncClient) -> None:
    r = await client.get("/tasks/missing")
    # The original's exact words: its clients and tests compare them.
    assert (r.status_code, r.json()) == (404, {"error": "Task not found"})


async def test_list_filters_and_paging(client: httpx.AsyncClient) -> None:
    a = await make_task(client, type="llm.chat")
    b = await make_task(client, type="llm.embed")
    c = await make_task(client, type="job")
    await client.patch(f"/tasks/{c['id']}/status", json={"status": "running"})

    r = await client.get("/tasks")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"tasks"}
    assert [t["id"] for t in body["tasks"]] == [a["id"], b["id"], c["id"]]
    assert all(t["hot"] is False and t["subscriberCount"] == 0 for t in body["tasks"])

    r = await client.get("/tasks", params={"type": "llm.*"})
    assert [t["id"] for t in r.json()["tasks"]] == [a["id"], b["id"]]
    r = await client.get("/tasks", params={"type": "job,llm.embed"})
    assert [t["id"] for t in r.json()["tasks"]] == [b["id"], c["id"]]
    r = await client.get("/tasks", params={"status": "running,,completed"})
    assert [t["id"] for t in r.json()["tasks"]] == [c["id"]]
    r = await client.get("/tasks", params={"status": ""})
    assert len(r.json()["tasks"]) == 3

    r = await client.get("/tasks", params={"limit": 2})
    page = r.json()
    assert [t["id"] for t in page["tasks"]] == [a["id"], b["id"]]
    r = await client.get("/tasks", params={"limit": 2, "cursor": page["nextCursor"]})
    assert [t["id"] for t in r.json()["tasks"]] == [c["id"]]
    assert "nextCursor" not in r.json()


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"status": "running,bogus"}, "Invalid status: bogus"),
        ({"cursor": "!!!"}, "Invalid cursor"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "Invalid cursor"),
        ({"cursor": "OTk5OTk5OTk5OTk5OTk5OTk5OTk5OmE"}, "Invalid cursor"),
        ({"limit": "0"}, "Invalid query parameter limit"),
        ({"limit": "x"}, "Invalid query parameter limit"),
    ],
)
async def test_list_bad_query(
    client: httpx.AsyncClient, params: dict[str, str], error: str
) -> None:
    r = await client.get("/tasks", params=params)
    assert r.status_code == 400
    assert r.json()["error"].startswith(error)


async def test_list_is_paged_by_default(engine: TaskEngine, serve_app: Any) -> None:
    # Regression (issue 15 item 11): without `limit`, GET /tasks answered every task.
    for i in range(101):
        await engine.create_task(TaskInput(id=f"t{i:03}"))
    async with (
        serve_app(create_app(engine), engine) as url,
        httpx.AsyncClient(base_url=url) as c,
    ):
        page = (await c.get("/tasks")).json()
        assert [t["id"] for t in page["tasks"]] == [f"t{i:03}" for i in range(100)]
        rest = (await c.get("/tasks", params={"cursor": page["nextCursor"]})).json()
        assert rest == {"tasks": [rest["tasks"][0]]} and rest["tasks"][0]["id"] == "t100"
        assert len((await c.get("/tasks", params={"limit": 1000})).json()["tasks"]) == 101
        r = await c.get("/tasks", params={"limit": 1001})
        assert (r.status_code, r.json()) == (400, {"error": "limit must be at most 1000"})


async def test_list_page_sizes_are_configurable(engine: TaskEngine) -> None:
    for i in range(7):
        await engine.create_task(TaskInput(id=f"t{i}"))
    app = create_app(engine, config=ServerConfig(default_page_size=3, max_page_size=5))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        pages: list[list[str]] = []
        params: dict[str, Any] = {}
        while True:
            body = (await c.get("/tasks", params=params)).json()
            pages.append([t["id"] for t in body["tasks"]])
            if "nextCursor" not in body:
                break
            params["cursor"] = body["nextCursor"]
        assert pages == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]
        assert len((await c.get("/tasks", params={"limit": 5})).json()["tasks"]) == 5
        r = await c.get("/tasks", params={"limit": 6})
        assert (r.status_code, r.json()) == (400, {"error": "limit must be at most 5"})


async def test_delete(client: httpx.AsyncClient, engine: TaskEngine) -> None:
    tid = await running(client)
    await client.post(f"/tasks/{tid}/events", json={"type": "x"})
    r = await client.delete(f"/tasks/{tid}")
    assert r.status_code == 204
    assert r.content == b""
    assert await engine.get_task(tid) is None
    assert (await client.get(f"/tasks/{tid}")).status_code == 404
    r = await client.delete(f"/tasks/{tid}")
    assert (r.status_code, r.json()) == (404, {"error": f"Task not found: {tid}"})


# -- transitions -------------------------------------------------------------------------


async def test_transition_sets_fields(client: httpx.AsyncClient) -> None:
    tid = await running(client)
    r = await client.patch(
        f"/tasks/{tid}/status",
        json={
            "status": "blocked",
            "reason": "need input",
            "resumeAfterMs": 1000,
            "blockedRequest": {"type": "confirm", "data": {"q": 1}},
            "ttl": 30,
        },
    )
    assert r.status_code == 200
    task = r.json()
    assert task["status"] == "blocked"
    assert task["reason"] == "need input"
    assert task["blockedRequest"] == {"type": "confirm", "data": {"q": 1}}
    assert task["resumeAt"] >= task["updatedAt"] + 1000
    assert task["ttl"] == 30
    r = await client.patch(
        f"/tasks/{tid}/status",
        json={"status": "failed", "error": {"code": "E1", "message": "boom"}, "result": {"r": 1}},
    )
    task = r.json()
    assert task["status"] == "failed"
    assert task["error"] == {"code": "E1", "message": "boom"}
    assert task["result"] == {"r": 1}
    assert "completedAt" in task
    assert "reason" not in task and "blockedRequest" not in task


async def test_invalid_transition_is_409(client: httpx.AsyncClient, engine: TaskEngine) -> None:
    task = await make_task(client)
    r = await client.patch(f"/tasks/{task['id']}/status", json={"status": "completed"})
    assert (r.status_code, r.json()) == (
        409,
        {"error": "Invalid transition: pending \u2192 completed"},
    )
    stored = await engine.get_task(task["id"])
    assert stored is not None and stored.status == "pending"
    assert await engine.get_events(task["id"]) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": "bogus"},
        {"status": "running", "ttl": 0},
        {"status": "running", "ttl": "1"},
        {"status": "running", "resumeAfterMs": -1},
        {"status": "failed", "error": {"code": "x"}},
        {"status": "running", "result": "x"},
        {"status": "blocked", "blockedRequest": {"data": 1}},
    ],
)
async def test_transition_bad_body_leaves_task(
    client: httpx.AsyncClient, engine: TaskEngine, body: dict[str, Any]
) -> None:
    task = await make_task(client)
    r = await client.patch(f"/tasks/{task['id']}/status", json=body)
    assert r.status_code == 400
    assert isinstance(r.json()["error"], str)
    stored = await engine.get_task(task["id"])
    assert stored is not None and stored.to_dict() == task
    assert await engine.get_events(task["id"]) == []


async def test_transition_missing_body_and_unknown_task(client: httpx.AsyncClient) -> None:
    task = await make_task(client)
    r = await client.patch(f"/tasks/{task['id']}/status")
    assert (r.status_code, r.json()) == (400, {"error": "Request body is required"})
    r = await client.patch("/tasks/nope/status", json={"status": "running"})
    assert (r.status_code, r.json()) == (404, {"error": "Task not found: nope"})


# -- publish -----------------------------------------------------------------------------


async def test_publish_single_defaults_level(client: httpx.AsyncClient) -> None:
    tid = await running(client)
    r = await client.post(
        f"/tasks/{tid}/events", json={"type": "llm.delta", "data": {"delta": "a"}}
    )
    assert r.status_code == 201
    event = r.json()
    assert set(event) == {"id", "taskId", "index", "timestamp", "type", "level", "data"}
    assert (event["taskId"], event["index"], event["level"]) == (tid, 1, "info")


async def test_publish_batch_and_series_fields(client: httpx.AsyncClient) -> None:
    tid = await running(client)
    r = await client.post(
        f"/tasks/{tid}/events",
        json=[
            {"type": "a", "level": "debug", "data": 1},
            {
                "type": "b",
                "seriesId": "s",
                "seriesMode": "accumulate",
                "seriesAccField": "text",
                "data": {"text": "x"},
            },
        ],
    )
    assert r.status_code == 201
    events = r.json()
    assert [e["index"] for e in events] == [1, 2]
    assert events[1]["seriesId"] == "s"
    assert events[1]["seriesMode"] == "accumulate"
    assert events[1]["seriesAccField"] == "text"


async def test_publish_idempotency_key(client: httpx.AsyncClient, engine: TaskEngine) -> None:
    tid = await running(client)
    first = await client.post(f"/tasks/{tid}/events", json={"type": "a", "idempotencyKey": "k1"})
    again = await client.post(f"/tasks/{tid}/events", json={"type": "a", "idempotencyKey": "k1"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert first.json()["idempotencyKey"] == "k1"
    assert len(await engine.get_events(tid)) == 2  # status + one event


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"level": "info"}, "type"),
        ({"type": ""}, "type"),
        ({"type": 3}, "type"),
        ({"type": "a", "level": "loud"}, "level"),
        ({"type": "a", "seriesMode": "all"}, "seriesMode"),
        ([{"type": "a"}, {"type": "b", "level": 1}], "1.level"),
        ({"type": "taskcast:status"}, "reserved"),
        ("x", "Invalid request body"),
    ],
)
async def test_publish_rejects_and_stores_nothing(
    client: httpx.AsyncClient, engine: TaskEngine, body: Any, fragment: str
) -> None:
    tid = await running(client)
    before = await engine.get_events(tid)
    r = await client.post(f"/tasks/{tid}/events", json=body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]
    assert await engine.get_events(tid) == before


async def test_publish_empty_batch_answers_empty_list(
    client: httpx.AsyncClient, engine: TaskEngine
) -> None:
    # The original's clients call publishEvents(id, []) and get `[]`, as from the original.
    tid = await running(client)
    before = await engine.get_events(tid)
    r = await client.post(f"/tasks/{tid}/events", json=[])
    assert (r.status_code, r.json()) == (201, [])
    assert await engine.get_events(tid) == before
    r = await client.post("/tasks/nope/events", json=[])
    assert (r.status_code, r.json()) == (404, {"error": "Task not found"})
    assert await engine.get_task("nope") is None


async def test_publish_batch_limit_and_data_limit(engine: TaskEngine) -> None:
    from taskcast.server import ServerConfig, create_app

    app = create_app(engine, config=ServerConfig(max_batch=3, max_data_bytes=100))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        tid = await running(c)
        r = await c.post(f"/tasks/{tid}/events", json=[{"type": "a"}] * 4)
        assert (r.status_code, r.json()) == (400, {"error": "Too many events in one batch (max 3)"})
        r = await c.post(f"/tasks/{tid}/events", json=[{"type": "a", "data": "x" * 50}] * 3)
        assert r.status_code == 201
        r = await c.post(
            f"/tasks/{tid}/events", json=[{"type": "a"}, {"type": "b", "data": "x" * 200}]
        )
        assert (r.status_code, r.json()) == (413, {"error": "Event data too large (max 100 bytes)"})
    assert len(await engine.get_events(tid)) == 4


async def test_publish_to_terminal_and_unknown(client: httpx.AsyncClient) -> None:
    tid = await running(client)
    await client.patch(f"/tasks/{tid}/status", json={"status": "completed"})
    r = await client.post(f"/tasks/{tid}/events", json={"type": "a"})
    assert (r.status_code, r.json()) == (
        400,
        {"error": "Cannot publish to task in terminal status: completed"},
    )
    r = await client.post("/tasks/nope/events", json={"type": "a"})
    assert (r.status_code, r.json()) == (404, {"error": "Task not found: nope"})


async def test_publish_to_pending_is_allowed(client: httpx.AsyncClient) -> None:
    task = await make_task(client)
    r = await client.post(f"/tasks/{task['id']}/events", json={"type": "a"})
    assert r.status_code == 201
    assert r.json()["index"] == 0


# -- history -----------------------------------------------------------------------------


async def history(client: httpx.AsyncClient, tid: str, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(f"/tasks/{tid}/events/history", params=params)
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()
    return events


async def test_history_cursors_and_filters(client: httpx.AsyncClient, engine: TaskEngine) -> None:
    tid = await running(client)
    await engine.publish_events(
        tid,
        [EventInput(type="llm.delta", level="info", data=i) for i in range(3)]
        + [EventInput(type="log", level="warn", data="w")],
    )
    everything = await history(client, tid)
    assert [e["index"] for e in everything] == [0, 1, 2, 3, 4]
    assert [e["index"] for e in await history(client, tid, **{"since.index": 2})] == [3, 4]
    assert [
        e["index"] for e in await history(client, tid, **{"since.id": everything[1]["id"]})
    ] == [2, 3, 4]
    # An unknown id reads everything.
    assert len(await history(client, tid, **{"since.id": "unknown"})) == 5
    ts = everything[0]["timestamp"]
    assert all(e["timestamp"] > ts for e in await history(client, tid, **{"since.timestamp": ts}))
    assert [e["index"] for e in await history(client, tid, limit=2)] == [0, 1]
    assert [e["type"] for e in await history(client, tid, types="llm.*")] == ["llm.delta"] * 3
    assert [e["index"] for e in await history(client, tid, types="llm.*", limit=2)] == [1, 2]
    assert [e["index"] for e in await history(client, tid, levels="warn")] == [4]
    assert [e["index"] for e in await history(client, tid, includeStatus="false")] == [1, 2, 3, 4]
    assert await history(client, tid, types="") == []


async def test_history_accumulated_collapses(client: httpx.AsyncClient, engine: TaskEngine) -> None:
    tid = await running(client)
    await engine.publish_events(
        tid,
        [
            EventInput(type="t", series_id="s", series_mode="accumulate", data={"delta": c})
            for c in "abc"
        ]
        + [EventInput(type="log", data="x")]
        + [
            EventInput(type="t", series_id="s", series_mode="accumulate", data={"delta": c})
            for c in "de"
        ],
    )
    events = await history(client, tid, seriesFormat="accumulated")
    assert [(e["index"], e.get("seriesSnapshot")) for e in events] == [
        (0, None),
        (3, True),
        (4, None),
        (6, None),
    ]
    assert events[1]["data"] == {"delta": "abc"}
    # A later run of the same series is one merged delta (linear replay size).
    assert events[3]["data"] == {"delta": "de"}
    # After a cursor the first event of a series is a snapshot with the whole value.
    after = await history(client, tid, seriesFormat="accumulated", **{"since.index": 5})
    assert [(e["index"], e["data"]) for e in after] == [(6, {"delta": "abcde"})]
    assert len(await history(client, tid, seriesFormat="accumulated", limit=1)) == 1
    raw = await history(client, tid)
    assert len(raw) == 7 and all("seriesSnapshot" not in e for e in raw)


async def test_history_pages_through_long_histories(
    client: httpx.AsyncClient, engine: TaskEngine
) -> None:
    tid = await running(client)
    await engine.publish_events(tid, [EventInput(type="x", data=i) for i in range(1000)])
    await engine.publish_events(tid, [EventInput(type="x", data=i) for i in range(500)])
    events = await history(client, tid)
    assert [e["index"] for e in events] == list(range(1501))
    events = await history(client, tid, seriesFormat="accumulated")
    assert len(events) == 1501


@pytest.mark.parametrize(
    "params",
    [
        {"since.index": "abc"},
        {"since.index": "-2"},
        {"since.timestamp": "x"},
        {"limit": "0"},
        {"limit": "-1"},
        {"seriesFormat": "snapshots"},
        {"includeStatus": "maybe"},
        {"since.timestamp": str(2**60)},
        {"since.index": str(2**60)},
    ],
)
async def test_history_bad_query(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    tid = await running(client)
    r = await client.get(f"/tasks/{tid}/events/history", params=params)
    assert r.status_code == 400
    assert r.json()["error"].startswith("Invalid query parameter")


async def test_history_unknown_task(client: httpx.AsyncClient) -> None:
    r = await client.get("/tasks/nope/events/history")
    assert (r.status_code, r.json()) == (404, {"error": "Task not found"})


# -- blocked requests --------------------------------------------------------------------


async def test_resolve_flow(client: httpx.AsyncClient, engine: TaskEngine) -> None:
    tid = await running(client)
    r = await client.get(f"/tasks/{tid}/request")
    assert (r.status_code, r.json()) == (404, {"error": "No blocked request"})
    r = await client.post(f"/tasks/{tid}/resolve", json={"data": 1})
    assert (r.status_code, r.json()) == (400, {"error": "Task is not blocked"})
    await client.patch(
        f"/tasks/{tid}/status",
        json={"status": "blocked", "blockedRequest": {"type": "approve", "data": {"amount": 5}}},
    )
    r = await client.get(f"/tasks/{tid}/request")
    assert (r.status_code, r.json()) == (200, {"type": "approve", "data": {"amount": 5}})
    r = await client.post(f"/tasks/{tid}/resolve", json={"data": "yes"})
    assert r.status_code == 200
    task = r.json()
    assert task["status"] == "running"
    assert task["result"] == {"resolution": "yes"}
    events = await engine.get_events(tid)
    assert events[-1].type == "taskcast:resolved"
    assert events[-1].data == {"resolution": {"resolution": "yes"}}


async def test_resolve_with_object_and_errors(client: httpx.AsyncClient) -> None:
    tid = await running(client)
    await client.patch(
        f"/tasks/{tid}/status", json={"status": "blocked", "blockedRequest": {"type": "q"}}
    )
    r = await client.post(f"/tasks/{tid}/resolve", json=[1])
    assert r.status_code == 400
    r = await client.post(f"/tasks/{tid}/resolve", json={"data": {"ok": True}})
    assert r.json()["result"] == {"ok": True}
    # The original's exact words (its tests compare them).
    r = await client.post("/tasks/nope/resolve", json={})
    assert (r.status_code, r.json()) == (404, {"error": "Task not found"})
    r = await client.get("/tasks/nope/request")
    assert (r.status_code, r.json()) == (404, {"error": "Task not found"})
    r = await client.get(f"/tasks/{tid}/request")
    assert (r.status_code, r.json()) == (404, {"error": "No blocked request"})


async def test_many_validation_errors_are_summarised(client: httpx.AsyncClient) -> None:
    tid = await running(client)
    r = await client.post(f"/tasks/{tid}/events", json=[{"level": 1}] * 4)
    assert r.status_code == 400
    message = r.json()["error"]
    assert message.startswith("Invalid field 0.type: Field required; ")
    assert message.endswith("; and 3 more errors")
