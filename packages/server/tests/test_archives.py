"""Task archives over real HTTP: export, import (the original's exact calls), fuzzed
archives, overwrite with live subscribers, scopes, and the storage release route."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from taskcast.core import (
    MemoryLongTermStore,
    MemoryShortTermStore,
    TaskEngine,
)
from taskcast.server import ServerConfig, create_app
from taskcast.server._jwt import JWTAuthenticator, JWTConfig
from taskcast.server._tokens import mint_token

pytestmark = pytest.mark.anyio

# What the original's server SDK sends (TaskcastServerClient.request): JSON both ways.
SDK_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


async def _make_task(client: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    """A task with keep-all events, an accumulate and a latest series, interleaved."""
    r = await client.post("/tasks", json={"id": task_id, "type": "demo", "params": {"p": 1}})
    assert r.status_code == 201, r.text
    await client.patch(f"/tasks/{task_id}/status", json={"status": "running"})
    batch = [
        {"type": "log", "level": "info", "data": {"n": 1}},
        {"type": "llm.delta", "level": "info", "data": {"delta": "Hel"}, "seriesId": "out",
         "seriesMode": "accumulate"},
        {"type": "progress", "level": "info", "data": {"pct": 10}, "seriesId": "p",
         "seriesMode": "latest"},
        {"type": "llm.delta", "level": "info", "data": {"delta": "lo"}, "seriesId": "out",
         "seriesMode": "accumulate"},
        {"type": "log", "level": "warn", "data": {"n": 2}},
        {"type": "progress", "level": "info", "data": {"pct": 90}, "seriesId": "p",
         "seriesMode": "latest"},
        {"type": "llm.delta", "level": "info", "data": {"delta": "!"}, "seriesId": "out",
         "seriesMode": "accumulate"},
    ]  # fmt: skip
    r = await client.post(f"/tasks/{task_id}/events", json=batch)
    assert r.status_code == 201, r.text
    r = await client.patch(
        f"/tasks/{task_id}/status", json={"status": "completed", "result": {"ok": True}}
    )
    assert r.status_code == 200, r.text
    history: list[dict[str, Any]] = (await client.get(f"/tasks/{task_id}/events/history")).json()
    return history


async def test_export_compacts_series_and_renumbers(live: httpx.AsyncClient) -> None:
    await _make_task(live, "exp-1")
    r = await live.get("/tasks/exp-1/archive", headers=SDK_HEADERS)
    assert r.status_code == 200, r.text
    archive = r.json()
    assert archive["schema"] == "taskcast.taskArchive"
    assert archive["version"] == 1
    assert isinstance(archive["exportedAt"], int)
    assert archive["task"]["id"] == "exp-1"
    assert archive["task"]["status"] == "completed"
    events = archive["events"]
    assert [e["index"] for e in events] == list(range(len(events)))
    assert [(e["type"], e["data"]) for e in events] == [
        ("taskcast:status", {"status": "running"}),
        ("log", {"n": 1}),
        ("llm.delta", {"delta": "Hello!"}),  # merged, at the series' first position
        # A stored `latest` series holds only its newest entry (where that was published).
        ("log", {"n": 2}),
        ("progress", {"pct": 90}),
        ("taskcast:status", {"status": "completed", "result": {"ok": True}}),
    ]
    assert not any("seriesSnapshot" in e for e in events)
    r = await live.get("/tasks/nope/archive")
    assert r.status_code == 404
    assert r.json() == {"error": "Task not found"}


async def test_original_sdk_calls_round_trip(live: httpx.AsyncClient) -> None:
    """exportTaskArchive(id) then deleting and importTaskArchive(archive) (its exact HTTP)."""
    await _make_task(live, "sdk-1")
    archive = (await live.get("/tasks/sdk-1/archive", headers=SDK_HEADERS)).json()
    assert (await live.delete("/tasks/sdk-1")).status_code == 204
    r = await live.post(
        "/tasks/import", content=json.dumps({"archive": archive}), headers=SDK_HEADERS
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "ok": True,
        "taskId": "sdk-1",
        "eventCount": len(archive["events"]),
        "overwritten": False,
    }
    history = (await live.get("/tasks/sdk-1/events/history")).json()
    assert history == archive["events"]
    again = (await live.get("/tasks/sdk-1/archive")).json()
    assert {**again, "exportedAt": 0} == {**archive, "exportedAt": 0}
    # Again without overwrite: 409, with overwrite: replaced.
    body = json.dumps({"archive": archive, "overwrite": False})
    r = await live.post("/tasks/import", content=body, headers=SDK_HEADERS)
    assert r.status_code == 409
    body = json.dumps({"archive": archive, "overwrite": True})
    r = await live.post("/tasks/import", content=body, headers=SDK_HEADERS)
    assert r.status_code == 200
    assert r.json()["overwritten"] is True


async def test_imported_task_behaves_as_published_live(
    live: httpx.AsyncClient, open_sse: Any
) -> None:
    """SSE replay, resume cursors, series snapshots and further publishing after an import."""
    archive = {
        "schema": "taskcast.taskArchive",
        "version": 1,
        "exportedAt": 1,
        "task": {"id": "imp-live", "status": "running", "createdAt": 1, "updatedAt": 2},
        "events": [
            {"id": "e0", "taskId": "imp-live", "index": 0, "timestamp": 3, "type": "log",
             "level": "info", "data": {"n": 0}},
            {"id": "e1", "taskId": "imp-live", "index": 1, "timestamp": 4, "type": "llm",
             "level": "info", "data": {"delta": "Hi"}, "seriesId": "s",
             "seriesMode": "accumulate"},
            {"id": "e2", "taskId": "imp-live", "index": 2, "timestamp": 5, "type": "pct",
             "level": "info", "data": {"v": 1}, "seriesId": "p", "seriesMode": "latest"},
        ],
    }  # fmt: skip
    r = await live.post("/tasks/import", json={"archive": archive})
    assert r.status_code == 200, r.text
    # Publishing continues at index 3, merging into the imported series.
    r = await live.post(
        "/tasks/imp-live/events",
        json=[
            {"type": "llm", "level": "info", "data": {"delta": " there"}, "seriesId": "s",
             "seriesMode": "accumulate"},
            {"type": "pct", "level": "info", "data": {"v": 2}, "seriesId": "p",
             "seriesMode": "latest"},
        ],
    )  # fmt: skip
    assert [e["index"] for e in r.json()] == [3, 4]
    await live.patch("/tasks/imp-live/status", json={"status": "completed"})
    async with open_sse(
        live, "/tasks/imp-live/events", params={"seriesFormat": "accumulated"}
    ) as stream:
        frames = await stream.events_until(lambda f: f.event == "taskcast.done")
    data = [f.data for f in frames if f.event == "taskcast.event"]
    assert [d["data"] for d in data][:3] == [{"n": 0}, {"delta": "Hi there"}, {"v": 2}]
    # Resume after the imported event e0 sends exactly the rest.
    async with open_sse(live, "/tasks/imp-live/events", headers={"Last-Event-ID": "e0"}) as stream:
        frames = await stream.events_until(lambda f: f.event == "taskcast.done")
    ids = [f.id for f in frames if f.event == "taskcast.event"]
    assert ids[0] == "e1" and "e0" not in ids
    history = (await live.get("/tasks/imp-live/events/history")).json()
    assert [e["index"] for e in history] == [0, 1, 3, 4, 5]  # e2 replaced by the new latest


def _valid() -> dict[str, Any]:
    return {
        "schema": "taskcast.taskArchive",
        "version": 1,
        "exportedAt": 10,
        "task": {"id": "fz", "status": "running", "createdAt": 1, "updatedAt": 2},
        "events": [
            {"id": "a", "taskId": "fz", "index": 0, "timestamp": 3, "type": "t",
             "level": "info", "data": None},
            {"id": "b", "taskId": "fz", "index": 1, "timestamp": 4, "type": "t",
             "level": "info", "data": {"x": 1}},
        ],
    }  # fmt: skip


def _mutate(path: str, value: Any) -> dict[str, Any]:
    archive = _valid()
    target: Any = archive
    *head, last = path.split(".")
    for part in head:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is _DELETE:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return archive


_DELETE = object()

FUZZ = [
    ("schema", "other", "Unsupported archive schema: other"),
    ("schema", _DELETE, "Unsupported archive schema: undefined"),
    ("version", 2, "Unsupported archive version: 2"),
    ("version", "1", "Unsupported archive version: 1"),
    ("exportedAt", "x", "Archive exportedAt must be a finite number"),
    ("task", None, "Archive task must be an object"),
    ("task.id", 5, "Archive task.id must be a string"),
    ("task.id", "a/b", "Archive task.id must not contain '/'"),
    ("task.status", "weird", "Archive task.status is invalid"),
    ("task.createdAt", _DELETE, "Archive task.createdAt must be a finite number"),
    ("task.updatedAt", "2", "Archive task.updatedAt must be a finite number"),
    ("task.params", "str", "Archive task.params must be an object"),
    ("task.tags", "a", "Archive task.tags must be a list of strings"),
    ("task.webhooks", [{"url": "ftp://x"}], "Archive task."),
    ("events", {}, "Archive events must be an array"),
    ("events.0", 7, "Archive event must be an object"),
    ("events.0.id", _DELETE, "Archive event.id must be a string"),
    ("events.0.taskId", 1, "Archive event.taskId must be a string for event a"),
    ("events.0.taskId", "other", "Archive event taskId mismatch for event a"),
    ("events.0.index", -1, "Archive event.index must be a non-negative integer for event a"),
    ("events.0.index", "0", "Archive event.index must be a non-negative integer for event a"),
    ("events.0.index", 2, "Archive events must have contiguous indexes from 0; expected 0, got 1"),
    ("events.1.index", 0, "Archive contains duplicate event index: 0"),
    ("events.1.id", "a", "Archive contains duplicate event id: a"),
    ("events.0.timestamp", None, "Archive event.timestamp for event a: must be a finite number"),
    ("events.0.type", 3, "Archive event.type must be a string for event a"),
    ("events.0.level", "loud", "Archive event.level is invalid for event a"),
    ("events.0.data", _DELETE, "Archive event.data is required for event a"),
    ("events.0.seriesMode", "odd", "Archive event.seriesMode is invalid for event a"),
    ("events.0.seriesId", 1, "Archive event.seriesId must be a string for event a"),
    ("events.0.seriesSnapshot", True, "seriesSnapshot is a collapsed presentation field"),
    ("events.0._accumulatedData", {"x": 1}, "_accumulatedData is transient"),
    ("events.0.type", "x" * 300, "longer than 256"),
]


@pytest.mark.parametrize(("path", "value", "message"), FUZZ)
async def test_fuzzed_archives_are_400_and_store_nothing(
    client: httpx.AsyncClient, path: str, value: Any, message: str
) -> None:
    r = await client.post("/tasks/import", json={"archive": _mutate(path, value)})
    assert r.status_code == 400, (path, r.status_code, r.text)
    assert message in r.json()["error"], r.json()
    assert (await client.get("/tasks/fz")).status_code == 404
    assert (await client.get("/tasks/other")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [b"[]", b"5", b'"x"', b"null", b'{"archive": {}, "overwrite": "yes"}', b"{}"],
)
async def test_bad_import_bodies(client: httpx.AsyncClient, body: bytes) -> None:
    r = await client.post("/tasks/import", content=body, headers=SDK_HEADERS)
    assert r.status_code == 400, r.text
    assert isinstance(r.json()["error"], str)


async def test_an_archive_in_a_different_order_is_sorted(live: httpx.AsyncClient) -> None:
    archive = _valid()
    archive["events"].reverse()
    r = await live.post("/tasks/import", json={"archive": archive})
    assert r.status_code == 200, r.text
    assert [e["id"] for e in (await live.get("/tasks/fz/events/history")).json()] == ["a", "b"]


async def test_huge_archives_and_event_data_are_refused(engine: TaskEngine) -> None:
    config = ServerConfig(max_import_bytes=64 * 1024, max_data_bytes=1024)
    app = create_app(engine, config=config)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        big = _valid()
        big["events"][1]["data"] = {"x": "y" * 2000}
        r = await client.post("/tasks/import", json={"archive": big})
        assert r.status_code == 413
        assert "Event data too large (max 1024 bytes) in event b" in r.json()["error"]
        many = _valid()
        many["events"] = [
            {"id": f"e{i}", "taskId": "fz", "index": i, "timestamp": 1, "type": "t",
             "level": "info", "data": {"i": i}}
            for i in range(2000)
        ]  # fmt: skip
        r = await client.post("/tasks/import", json={"archive": many})
        assert r.status_code == 413
        assert r.json() == {"error": "Request body too large (max 65536 bytes)"}
        assert (await client.get("/tasks/fz")).status_code == 404
    # The publish limit does not apply: an archive over 1 MiB imports with the default.
    app = create_app(engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        large = _valid()
        large["events"] = [
            {"id": f"e{i}", "taskId": "fz", "index": i, "timestamp": 1, "type": "t",
             "level": "info", "data": {"text": "z" * 1000}}
            for i in range(1500)
        ]  # fmt: skip
        r = await client.post("/tasks/import", json={"archive": large})
        assert r.status_code == 200, r.text
        assert r.json()["eventCount"] == 1500


async def test_overwrite_ends_live_subscribers_with_replaced(
    live: httpx.AsyncClient, open_sse: Any
) -> None:
    archive = _valid()
    archive["task"]["id"] = "ow"
    for e in archive["events"]:
        e["taskId"] = "ow"
    r = await live.post("/tasks", json={"id": "ow"})
    await live.patch("/tasks/ow/status", json={"status": "running"})
    await live.post("/tasks/ow/events", json={"type": "old", "level": "info", "data": 1})
    async with open_sse(live, "/tasks/ow/events") as stream:
        first = await stream.events_until(
            lambda f: f.event == "taskcast.event" and f.data["type"] == "old"
        )
        assert first[-1].data["data"] == 1
        r = await live.post("/tasks/import", json={"archive": archive, "overwrite": True})
        assert r.status_code == 200, r.text
        frames = await stream.events_until(lambda f: f.event == "taskcast.done")
    assert frames[-1].data == {"reason": "replaced"}
    history = (await live.get("/tasks/ow/events/history")).json()
    assert [e["id"] for e in history] == ["a", "b"]


def _jwt_app() -> tuple[Any, TaskEngine]:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    config = JWTConfig(secret="archive-test-secret-that-is-long-enough!!")
    return create_app(engine, authenticator=JWTAuthenticator(config)), engine


def _token(*scope: str, task_ids: list[str] | None = None) -> dict[str, str]:
    token = mint_token(
        "archive-test-secret-that-is-long-enough!!", scope=scope, task_ids=task_ids, ttl_seconds=60
    )
    return {"Authorization": f"Bearer {token}"}


async def test_scopes() -> None:
    app, _engine = _jwt_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        archive = _valid()
        body = {"archive": archive}
        r = await client.post("/tasks/import", json=body, headers=_token("event:subscribe"))
        assert r.status_code == 403
        r = await client.post(
            "/tasks/import", json=body, headers=_token("task:create", task_ids=["other"])
        )
        assert r.status_code == 403
        assert (await client.get("/tasks/fz", headers=_token("*"))).status_code == 404
        r = await client.post("/tasks/import", json=body, headers=_token("task:create"))
        assert r.status_code == 200, r.text
        over = {"archive": archive, "overwrite": True}
        r = await client.post("/tasks/import", json=over, headers=_token("task:create"))
        assert r.status_code == 403
        r = await client.post(
            "/tasks/import", json=over, headers=_token("task:create", "task:manage")
        )
        assert r.status_code == 200
        hooked = copy.deepcopy(archive)
        hooked["task"]["id"] = "hooked"
        for e in hooked["events"]:
            e["taskId"] = "hooked"
        hooked["task"]["webhooks"] = [{"url": "https://example.com/h"}]
        r = await client.post(
            "/tasks/import", json={"archive": hooked}, headers=_token("task:create")
        )
        assert r.status_code == 403
        r = await client.get("/tasks/fz/archive", headers=_token("event:subscribe"))
        assert r.status_code == 403
        r = await client.get("/tasks/fz/archive", headers=_token("event:history"))
        assert r.status_code == 200


async def test_export_never_returns_webhook_secrets(live: httpx.AsyncClient) -> None:
    r = await live.post(
        "/tasks",
        json={"id": "sec", "webhooks": [{"url": "https://example.com/h", "secret": "s3cret!!"}]},
    )
    assert r.status_code == 201
    r = await live.get("/tasks/sec/archive")
    assert "s3cret" not in r.text
    archive = r.json()
    assert archive["task"]["webhooks"] == [{"url": "https://example.com/h", "hasSecret": True}]
    # The exported form imports (the webhook then has no secret until one is set again).
    await live.delete("/tasks/sec")
    r = await live.post("/tasks/import", json={"archive": archive})
    assert r.status_code == 200, r.text


async def test_release_route_without_long_term_store_is_404(live: httpx.AsyncClient) -> None:
    await live.post("/tasks", json={"id": "rel"})
    r = await live.post("/tasks/rel/storage/release", json={})
    assert r.status_code == 404
    assert r.json()["code"] == "storage_release_unsupported"
    assert "long-term store" in r.json()["error"]


async def test_release_route_with_long_term_store(serve_app: Any) -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore(), long_term=MemoryLongTermStore())
    async with (
        serve_app(create_app(engine), engine) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        history = await _make_task(client, "rel")
        archive = (await client.get("/tasks/rel/archive")).json()
        r = await client.post("/tasks/rel/storage/release", json={"expectedLastEventIndex": 3})
        assert r.status_code == 409
        assert r.json()["code"] == "storage_precondition_failed"
        r = await client.post("/tasks/rel/storage/release", json={"inactiveSince": 1})
        assert r.status_code == 409
        r = await client.post("/tasks/rel/storage/release", json={"inactiveSince": "x"})
        assert r.status_code == 400
        assert r.json() == {"error": "Invalid storage release request"}
        last = history[-1]["index"]
        r = await client.post("/tasks/rel/storage/release", json={"expectedLastEventIndex": last})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "taskId": "rel",
            "storageState": "cold",
            "archiveWatermark": last,
            "released": True,
        }
        assert await engine.short_term.get_task("rel") is None
        r = await client.post("/tasks/rel/storage/release")
        assert r.status_code == 200
        assert r.json()["released"] is False
        # A released task exports from the long-term store, the same archive.
        again = (await client.get("/tasks/rel/archive")).json()
        assert {**again, "exportedAt": 0} == {**archive, "exportedAt": 0}
        # Importing over a released task needs overwrite, then replaces it.
        r = await client.post("/tasks/import", json={"archive": archive})
        assert r.status_code == 409
        r = await client.post("/tasks/import", json={"archive": archive, "overwrite": True})
        assert r.status_code == 200
        assert r.json()["overwritten"] is True
        assert (await client.get("/tasks/rel/events/history")).json() == archive["events"]
        assert (await client.post("/tasks/missing/storage/release")).status_code == 404
