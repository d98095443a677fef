"""App wiring: OpenAPI, auth, health, CORS, config, error mapping, mounting, global stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

import taskcast.server as server_pkg
from taskcast.core import (
    ConfigError,
    EventInput,
    MemoryLongTermStore,
    MemoryShortTermStore,
    StorageUnavailableError,
    TaskcastError,
    TaskEngine,
)
from taskcast.server import (
    AuthContext,
    Authenticator,
    AuthError,
    ServerConfig,
    create_app,
    taskcast_lifespan,
)

pytestmark = pytest.mark.anyio


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def test_public_api() -> None:
    assert set(server_pkg.__all__) == {
        name for name in dir(server_pkg) if not name.startswith("_")
    } - {"annotations"} | {"__version__"}


# -- OpenAPI -----------------------------------------------------------------------------


async def test_openapi_documents_400_not_422(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["info"]["title"] == "Taskcast API"
    assert doc["openapi"].startswith("3.1")
    assert "Bearer" in doc["components"]["securitySchemes"]
    text = r.text
    assert '"422"' not in text and "HTTPValidationError" not in text
    ops = {(m, p): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert "400" in ops[("get", "/tasks/{id}/events/history")]["responses"]
    create = ops[("post", "/tasks")]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateTaskBody"
    }
    props = doc["components"]["schemas"]["CreateTaskBody"]["properties"]
    assert {"assignMode", "disconnectPolicy", "authConfig", "ttl", "result"} <= set(props)
    assert "idempotencyKey" in doc["components"]["schemas"]["EventBody"]["properties"]
    stream = ops[("get", "/tasks/{id}/events")]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    params = {p["name"] for p in stream["parameters"]}
    assert {"since.id", "since.index", "since.timestamp", "Last-Event-ID", "wrap"} <= params
    # Cached after the first build.
    assert (await client.get("/openapi.json")).json() == doc


# -- auth --------------------------------------------------------------------------------


class HeaderAuth(Authenticator):
    """Test authenticator: ``X-Scopes`` and ``X-Tasks`` headers; none at all → 401."""

    mode = "test"

    async def authenticate(self, request: Request) -> AuthContext:
        scopes = request.headers.get("x-scopes")
        if scopes is None:
            raise AuthError(401, "Missing Bearer token")
        tasks = request.headers.get("x-tasks")
        return AuthContext(
            sub=request.headers.get("x-sub"),
            scopes=frozenset(scopes.split(",")),
            task_ids=None if tasks is None else frozenset(tasks.split(",")),
        )


ROUTES = [
    ("POST", "/tasks", "task:create", None),
    ("GET", "/tasks", "event:subscribe", None),
    ("GET", "/tasks/T", "event:subscribe", "T"),
    ("DELETE", "/tasks/T", "task:manage", "T"),
    ("PATCH", "/tasks/T/status", "task:manage", "T"),
    ("POST", "/tasks/T/events", "event:publish", "T"),
    ("GET", "/tasks/T/events", "event:subscribe", "T"),
    ("GET", "/tasks/T/events/history", "event:history", "T"),
    ("POST", "/tasks/T/resolve", "task:resolve", "T"),
    ("GET", "/tasks/T/request", "task:resolve", "T"),
    ("GET", "/events", "event:subscribe", None),
]


@pytest.mark.parametrize(("method", "path", "scope", "task"), ROUTES)
async def test_every_route_checks_its_scope(
    engine: TaskEngine, method: str, path: str, scope: str, task: str | None
) -> None:
    app = create_app(engine, authenticator=HeaderAuth())
    async with asgi_client(app) as c:
        r = await c.request(method, path, content=b"{bad")
        assert (r.status_code, r.json()) == (401, {"error": "Missing Bearer token"})
        r = await c.request(method, path, headers={"x-scopes": "other"}, content=b"{bad")
        assert (r.status_code, r.json()) == (403, {"error": "Forbidden"})
        if task is not None:
            r = await c.request(
                method, path, headers={"x-scopes": scope, "x-tasks": "other"}, content=b"{bad"
            )
            assert (r.status_code, r.json()) == (403, {"error": "Forbidden"})
        if method != "GET" or "events" not in path or path.endswith("history"):
            # With the scope the request gets past auth (and fails on the bad body or task).
            r = await c.request(method, path, headers={"x-scopes": scope}, content=b"{bad")
            assert r.status_code in (200, 400, 404), (r.status_code, r.text)
    assert await engine.get_task("T") is None


async def test_401_carries_www_authenticate(engine: TaskEngine) -> None:
    async with asgi_client(create_app(engine, authenticator=HeaderAuth())) as c:
        r = await c.get("/tasks")
    assert r.headers["www-authenticate"] == "Bearer"


RULES = {
    "rules": [
        {
            "match": {
                "scope": [
                    "event:subscribe",
                    "event:history",
                    "event:publish",
                    "task:manage",
                    "task:resolve",
                ]
            },
            "require": {"sub": ["alice"]},
        }
    ]
}

GUARDED = [
    ("GET", "/tasks/R", None),
    ("GET", "/tasks/R/events/history", None),
    ("GET", "/tasks/R/events", None),
    ("POST", "/tasks/R/events", {"type": "x"}),
    ("POST", "/tasks/R/resolve", {"data": 1}),
    ("GET", "/tasks/R/request", None),
    ("PATCH", "/tasks/R/status", {"status": "running"}),
    ("DELETE", "/tasks/R", None),
]


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
async def test_task_auth_config_is_enforced(
    engine: TaskEngine, method: str, path: str, body: Any
) -> None:
    from taskcast.core import TaskInput

    await engine.create_task(TaskInput(id="R", auth_config=RULES))
    app = create_app(engine, authenticator=HeaderAuth())
    async with asgi_client(app) as c:
        r = await c.request(method, path, json=body, headers={"x-scopes": "*", "x-sub": "bob"})
        assert (r.status_code, r.json()) == (403, {"error": "Forbidden"})
        task = await engine.get_task("R")
        assert task is not None and task.status == "pending"
        assert await engine.get_events("R") == []
        if path.endswith("/events") and method == "GET":
            return  # alice's stream would stay open; the refusal is what matters here
        r = await c.request(method, path, json=body, headers={"x-scopes": "*", "x-sub": "alice"})
        assert r.status_code < 403 or r.json()["error"] in (
            "No blocked request",
            "Task is not blocked",
        )


async def test_create_needs_webhook_scope_and_valid_auth_config(engine: TaskEngine) -> None:
    app = create_app(engine, authenticator=HeaderAuth())
    hook = {"webhooks": [{"url": "http://example.invalid/h"}]}
    async with asgi_client(app) as c:
        r = await c.post("/tasks", json=hook, headers={"x-scopes": "task:create"})
        assert (r.status_code, r.json()) == (403, {"error": "Forbidden"})
        r = await c.post("/tasks", json=hook, headers={"x-scopes": "task:create,webhook:create"})
        assert r.status_code == 201
        r = await c.post(
            "/tasks", json={"authConfig": {"rules": "no"}}, headers={"x-scopes": "task:create"}
        )
        assert (r.status_code, r.json()) == (400, {"error": "authConfig.rules must be an array"})
    assert len((await engine.list_tasks()).tasks) == 1


async def test_public_routes_need_no_auth(engine: TaskEngine) -> None:
    app = create_app(engine, authenticator=HeaderAuth())
    async with asgi_client(app) as c:
        for path in ("/", "/health", "/health/ready", "/health/detail", "/openapi.json", "/docs"):
            assert (await c.get(path)).status_code == 200, path
        assert (await c.get("/health/detail")).json()["auth"] == {"mode": "test"}


async def test_list_is_restricted_to_task_ids(engine: TaskEngine) -> None:
    app = create_app(engine, authenticator=HeaderAuth())
    for tid in ("a", "b", "c"):
        await engine.create_task(server_task(tid))
    async with asgi_client(app) as c:
        r = await c.get("/tasks", headers={"x-scopes": "event:subscribe", "x-tasks": "a,c"})
        assert [t["id"] for t in r.json()["tasks"]] == ["a", "c"]
        r = await c.get("/tasks", headers={"x-scopes": "*"})
        assert len(r.json()["tasks"]) == 3


def server_task(tid: str) -> Any:
    from taskcast.core import TaskInput

    return TaskInput(id=tid)


async def test_default_authenticator_allows_everything(app: FastAPI) -> None:
    assert app.state.authenticator.mode == "none"
    assert isinstance(app.state.config, ServerConfig)


# -- health and error mapping -------------------------------------------------------------


class FlakyStore(MemoryShortTermStore):
    def __init__(self) -> None:
        super().__init__()
        self.down: BaseException | None = None
        self.hang = False

    async def ping(self) -> None:
        if self.hang:
            await asyncio.sleep(10)
        if self.down is not None:
            raise self.down

    async def get_task(self, task_id: str) -> Any:
        if isinstance(self.down, TaskcastError):
            raise self.down
        return await super().get_task(task_id)


class FlakyArchive(MemoryLongTermStore):
    down = False

    async def ping(self) -> None:
        if self.down:
            raise ConnectionRefusedError("no archive")

    async def save_task(self, task: Any) -> None:
        if self.down:
            raise StorageUnavailableError("postgres", "connection_refused")
        await super().save_task(task)


async def test_ready_reports_archive_backlog(eventually: Any) -> None:
    from taskcast.core import ArchiveWriter, RetryPolicy

    archive = FlakyArchive()
    archive.down = True
    writer = ArchiveWriter(
        archive, drain_timeout=0.1, retry=RetryPolicy(initial=0.01, maximum=0.05)
    )
    engine = TaskEngine(short_term=MemoryShortTermStore(), long_term=writer)
    await engine.start()
    try:
        await engine.create_task()
        await eventually(lambda: writer.state == "retrying")
        async with asgi_client(create_app(engine)) as c:
            r = await c.get("/health/ready")
            assert r.status_code == 200
            assert r.json()["degraded"] is True
            assert r.json()["backlog"] >= 1
            detail = (await c.get("/health/detail")).json()
            assert detail["archive"]["state"] == "retrying"
            assert detail["archive"]["degraded"] is True
            archive.down = False
            await eventually(lambda: writer.backlog == 0)
            r = await c.get("/health/ready")
            assert "degraded" not in r.json()
    finally:
        await engine.stop()


async def test_health_ready_and_detail(monkeypatch: pytest.MonkeyPatch) -> None:
    store, archive = FlakyStore(), FlakyArchive()
    engine = TaskEngine(short_term=store, long_term=archive)
    async with asgi_client(create_app(engine)) as c:
        r = await c.get("/health/ready")
        assert (r.status_code, r.json()) == (
            200,
            {
                "ok": True,
                "dependencies": {
                    "shortTermStore": {"state": "healthy"},
                    "broadcast": {"state": "healthy"},
                    "longTermStore": {"state": "healthy"},
                },
            },
        )
        archive.down = True
        r = await c.get("/health/ready")
        assert r.status_code == 200
        assert r.json()["degraded"] is True
        assert r.json()["backlog"] == 0
        assert r.json()["dependencies"]["longTermStore"] == {
            "state": "unhealthy",
            "errorKind": "unavailable",
        }
        r = await c.get("/health/detail")
        detail = r.json()
        assert detail["ok"] is False
        assert detail["adapters"]["longTermStore"] == {"provider": "memory", "status": "error"}
        assert detail["adapters"]["shortTermStore"] == {"provider": "memory", "status": "ok"}
        assert detail["dependencies"]["longTermStore"] == {
            "configured": True,
            "state": "unhealthy",
            "lastErrorKind": "unavailable",
        }
        assert isinstance(detail["uptime"], int) and detail["subscribers"] == 0
        store.down = StorageUnavailableError("redis", "connection_refused")
        r = await c.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["dependencies"]["shortTermStore"] == {
            "state": "unhealthy",
            "errorKind": "connection_refused",
        }
        # A store outage on a request is a 503 with the error body.
        r = await c.get("/tasks/x")
        assert (r.status_code, r.json()) == (
            503,
            {"error": "redis unavailable (connection_refused)"},
        )
        store.down = None
        store.hang = True
        monkeypatch.setattr("taskcast.server._health.PROBE_TIMEOUT", 0.05)
        r = await c.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["dependencies"]["shortTermStore"]["errorKind"] == "timeout"


async def test_unmapped_taskcast_error_is_a_500_not_a_400() -> None:
    store = FlakyStore()
    store.down = TaskcastError("unexpected")
    async with asgi_client(create_app(TaskEngine(short_term=store))) as c:
        r = await c.get("/tasks/x")
    assert (r.status_code, r.json()) == (500, {"error": "unexpected"})


# -- config and CORS ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heartbeat_seconds": 0},
        {"retry_ms": -1},
        {"max_body_bytes": 0},
        {"max_data_bytes": 0},
        {"max_batch": 0},
        {"queue_limit": 0},
        {"max_page_size": 0},
        {"default_page_size": 0},
        {"default_page_size": 1001},
        {"default_page_size": 20, "max_page_size": 10},
    ],
)
def test_config_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(**kwargs)


async def test_cors_off_by_default(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"Origin": "http://a.example"})
    assert "access-control-allow-origin" not in r.headers


async def test_cors_on(engine: TaskEngine) -> None:
    app = create_app(engine, config=ServerConfig(cors_origins=("http://a.example",)))
    async with asgi_client(app) as c:
        r = await c.get("/health", headers={"Origin": "http://a.example"})
        assert r.headers["access-control-allow-origin"] == "http://a.example"
        r = await c.options(
            "/tasks",
            headers={"Origin": "http://a.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.status_code == 200
        r = await c.get("/health", headers={"Origin": "http://b.example"})
        assert "access-control-allow-origin" not in r.headers


# -- lifespan and mounting ----------------------------------------------------------------


class CountingStore(MemoryShortTermStore):
    opened = closed = 0

    async def open(self) -> None:
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1


async def test_standalone_lifespan_starts_and_stops_engine(serve_app: Any) -> None:
    store = CountingStore()
    engine = TaskEngine(short_term=store)
    async with serve_app(create_app(engine)) as url, httpx.AsyncClient(base_url=url) as c:
        assert (await c.get("/health")).status_code == 200
        assert (store.opened, store.closed) == (1, 0)
    assert (store.opened, store.closed) == (1, 1)


async def test_mounted_under_prefix(serve_app: Any, open_sse: Any) -> None:
    store = CountingStore()
    engine = TaskEngine(short_term=store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with taskcast_lifespan(engine):
            yield

    host = FastAPI(lifespan=lifespan)

    @host.get("/own")
    async def own() -> dict[str, bool]:
        return {"host": True}

    host.mount("/taskcast", create_app(engine, config=ServerConfig(heartbeat_seconds=0.2)))
    async with serve_app(host, engine) as url, httpx.AsyncClient(base_url=url) as c:
        assert store.opened == 1
        assert (await c.get("/own")).json() == {"host": True}
        info = (await c.get("/taskcast/")).json()
        assert info["links"]["health"] == "/taskcast/health"
        r = await c.post("/taskcast/tasks", json={"id": "m1"})
        assert r.status_code == 201
        await c.patch("/taskcast/tasks/m1/status", json={"status": "running"})
        async with open_sse(c, "/taskcast/tasks/m1/events") as s:
            first = await s.events_until(lambda f: True)
            await c.post("/taskcast/tasks/m1/events", json={"type": "x"})
            await c.patch("/taskcast/tasks/m1/status", json={"status": "completed"})
            rest = await s.events_until(lambda f: f.event == "taskcast.done")
        assert first[0].data["data"] == {"status": "running"}
        assert [f.data.get("type") for f in rest] == ["x", "taskcast:status", None]
        assert (await c.get("/taskcast/openapi.json")).status_code == 200
        assert (await c.get("/taskcast/nope")).json() == {"error": "Not found"}
    assert store.closed == 1


# -- global stream -----------------------------------------------------------------------


async def test_global_stream(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any, eventually: Any
) -> None:
    async with open_sse(live, "/events", params={"types": "llm.*,taskcast:status"}) as s:
        first = await s.next()
        assert first is not None and first.retry == 1500
        await eventually(lambda: engine.hub.total > 0)
        a = await engine.create_task()
        await engine.transition_task(a.id, "running")
        await engine.publish_events(
            a.id, [EventInput(type="log"), EventInput(type="llm.delta", data="d")]
        )
        await engine.delete_task(a.id)
        b = await engine.create_task()
        await engine.publish_event(b.id, EventInput(type="llm.x"))
        frames = await s.events_until(lambda f: f.data["taskId"] == b.id)
    assert [(f.data["taskId"], f.data["type"], f.data["filteredIndex"]) for f in frames] == [
        (a.id, "taskcast:status", 0),
        (a.id, "llm.delta", 1),
        (b.id, "llm.x", 2),
    ]
    assert frames[1].id == frames[1].data["eventId"]


async def test_global_stream_respects_task_ids_and_heartbeats(
    engine: TaskEngine, serve_app: Any, open_sse: Any
) -> None:
    app = create_app(engine, authenticator=HeaderAuth(), config=ServerConfig(heartbeat_seconds=0.1))
    allowed = await engine.create_task()
    hidden = await engine.create_task()
    headers = {"x-scopes": "event:subscribe", "x-tasks": allowed.id}
    async with (
        serve_app(app, engine) as url,
        httpx.AsyncClient(base_url=url) as c,
        open_sse(c, "/events", headers=headers) as s,
    ):
        comments: list[str] = []
        while len(comments) < 2:
            frame = await s.next()
            assert frame is not None
            if frame.comment:
                comments.append(frame.comment)
        await engine.publish_event(hidden.id, EventInput(type="secret"))
        await engine.publish_event(allowed.id, EventInput(type="mine"))
        frames = await s.events_until(lambda f: True)
        assert [f.data["type"] for f in frames] == ["mine"]
        engine.hub.shutdown()
        rest = await s.rest()
    assert comments == ["ping", "ping"]
    assert rest[-1].retry == 3000


async def test_global_stream_hides_tasks_refused_by_auth_config(
    engine: TaskEngine, serve_app: Any, open_sse: Any, eventually: Any
) -> None:
    from taskcast.core import TaskInput

    app = create_app(engine, authenticator=HeaderAuth())
    secret = await engine.create_task(TaskInput(auth_config=RULES))
    public = await engine.create_task()
    headers = {"x-scopes": "*", "x-sub": "bob"}
    async with (
        serve_app(app, engine) as url,
        httpx.AsyncClient(base_url=url) as c,
        open_sse(c, "/events", headers=headers) as s,
    ):
        await eventually(lambda: engine.hub.total > 0)
        for _ in range(2):
            await engine.publish_event(secret.id, EventInput(type="secret"))
            await engine.publish_event(public.id, EventInput(type="public"))
        frames = await s.events_until(lambda f: f.data["filteredIndex"] == 1)
    assert [f.data["type"] for f in frames] == ["public", "public"]


async def test_global_stream_cuts_slow_consumer(
    serve_app: Any, open_sse: Any, eventually: Any
) -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    app = create_app(engine, config=ServerConfig(queue_limit=3))
    task = await engine.create_task()
    async with (
        serve_app(app, engine) as url,
        httpx.AsyncClient(base_url=url) as c,
        open_sse(c, "/events") as s,
    ):
        await s.next()
        await eventually(lambda: engine.hub.total > 0)
        await engine.publish_events(task.id, [EventInput(type="x") for _ in range(4)])
        rest = await s.rest()
    assert rest[-1].comment == "slow consumer, resume with Last-Event-ID"
