"""``POST /tasks/{id}/events`` is served before FastAPI's routing: same answers either way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.dependencies.utils import solve_dependencies
from fastapi.responses import Response
from fastapi.telemetry import TelemetryData

from taskcast.core import MemoryShortTermStore, TaskEngine, TaskInput, TaskNotFoundError
from taskcast.server import (
    AuthContext,
    CustomAuthenticator,
    ServerConfig,
    _events as events_module,
    create_app,
)
from taskcast.server._auth import auth_context
from taskcast.server._body import parse_json, validate
from taskcast.server._errors import ApiError
from taskcast.server._schemas import BATCH_ADAPTER

pytestmark = pytest.mark.anyio


async def _header_auth(request: Request) -> AuthContext | Mapping[str, Any] | None:
    """No ``x-scope`` header: 401; otherwise a caller with that scope on task ``t1`` only."""
    scope = request.headers.get("x-scope")
    if scope is None:
        return None
    return {"sub": "u", "scope": [scope], "taskIds": ["t1"]}


@pytest.fixture
async def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of the requests FastAPI solved dependencies for."""
    calls: list[str] = []

    async def counting(*, request: Any, **kwargs: Any) -> Any:
        calls.append(request.url.path)
        return await solve_dependencies(request=request, **kwargs)

    # The name the route handlers of fastapi.routing call.
    monkeypatch.setattr("fastapi.routing.solve_dependencies", counting)
    return calls


async def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.fixture
async def engine() -> AsyncIterator[TaskEngine]:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    await engine.create_task(TaskInput(id="t1"))
    await engine.create_task(TaskInput(id="t2"))
    yield engine


# Bodies with the answer FastAPI's own handler gave before the fast path existed.
CASES: list[tuple[bytes, dict[str, str], int, str | None]] = [
    (b'{"type":"a"}', {}, 201, None),
    (b'{"type":"a"}', {"content-type": "text/plain"}, 201, None),
    (b'{"type":"a","data":NaN}', {}, 400, "Malformed JSON in request body: expected value"),
    (b'{"type":"a","data":1e400}', {}, 400, "Malformed JSON in request body: number out of range"),
    (b'{"type":"a"}x', {}, 400, "Malformed JSON in request body: trailing characters"),
    (b"{", {}, 400, "Malformed JSON in request body: EOF while parsing"),
    (b"", {}, 400, "Request body is required"),
    (b"  \n", {}, 400, "Request body is required"),
    (b'{"level":"info"}', {}, 400, "Invalid field type: Field required"),
    (b'{"type":"a","level":"loud"}', {}, 400, "Invalid field level: "),
    (b"[]", {}, 201, None),
    (b'"x"', {}, 400, "Invalid request body: "),
]


@pytest.mark.parametrize(("raw", "headers", "status", "error"), CASES)
async def test_answers_match_fastapis_own_handler(
    engine: TaskEngine,
    solved: list[str],
    raw: bytes,
    headers: dict[str, str],
    status: int,
    error: str | None,
) -> None:
    fast_app = create_app(engine)
    slow_app = create_app(engine)
    # Any dependency override sends the route through FastAPI's handler.
    slow_app.dependency_overrides[_header_auth] = _header_auth
    answers = []
    for app in (fast_app, slow_app):
        async with await _client(app) as c:
            r = await c.post("/tasks/t1/events", content=raw, headers=headers)
        body = r.json()
        for volatile in ("id", "index", "timestamp"):
            if isinstance(body, dict):
                body.pop(volatile, None)
        answers.append((r.status_code, r.headers["content-type"], body))
    assert answers[0] == answers[1]
    assert answers[0][0] == status
    if error is not None:
        assert answers[0][2]["error"].startswith(error)
    assert solved == ["/tasks/t1/events"]  # only the app with overrides solved them


async def test_refusals_on_the_fast_path(engine: TaskEngine, solved: list[str]) -> None:
    app = create_app(engine, authenticator=CustomAuthenticator(_header_auth))
    async with await _client(app) as c:
        r = await c.post("/tasks/t1/events", json={"type": "a"})
        assert (r.status_code, r.json()) == (401, {"error": "Unauthorized"})
        assert r.headers["www-authenticate"] == "Bearer"
        r = await c.post("/tasks/t1/events", json={"type": "a"}, headers={"x-scope": "x"})
        assert (r.status_code, r.json()) == (403, {"error": "Forbidden"})
        # A task outside the caller's taskIds is refused before anything is read.
        r = await c.post("/tasks/t2/events", content=b"{", headers={"x-scope": "event:publish"})
        assert (r.status_code, r.json()) == (403, {"error": "Forbidden"})
        r = await c.post("/tasks/t1/events", json={"type": "a"}, headers={"x-scope": "*"})
        assert r.status_code == 201
        assert r.json()["taskId"] == "t1"
    assert solved == []


async def test_unknown_task_and_limits_on_the_fast_path(
    engine: TaskEngine, solved: list[str]
) -> None:
    app = create_app(engine, config=ServerConfig(max_body_bytes=64, max_batch=2))
    async with await _client(app) as c:
        r = await c.post("/tasks/nope/events", json={"type": "a"})
        assert (r.status_code, r.json()) == (404, {"error": "Task not found: nope"})
        r = await c.post("/tasks/t1/events", json={"type": "a", "data": "x" * 64})
        assert (r.status_code, r.json()) == (
            413,
            {"error": "Request body too large (max 64 bytes)"},
        )
        r = await c.post("/tasks/t1/events", json=[{"type": "a"}] * 3)
        assert (r.status_code, r.json()) == (400, {"error": "Too many events in one batch (max 2)"})
        r = await c.post("/tasks/t1/events", json=[{"type": "a"}, {"type": "b"}])
        assert r.status_code == 201
        assert [e["type"] for e in r.json()] == ["a", "b"]
    assert solved == []


async def test_overridden_auth_context_is_honoured(engine: TaskEngine, solved: list[str]) -> None:
    app = create_app(engine)

    async def read_only() -> AuthContext:
        return AuthContext(scopes=frozenset({"event:subscribe"}))

    app.dependency_overrides[auth_context] = read_only
    async with await _client(app) as c:
        r = await c.post("/tasks/t1/events", json={"type": "a"})
    assert (r.status_code, r.json()) == (403, {"error": "Forbidden"})
    assert solved == ["/tasks/t1/events"]


async def test_recorded_requests_take_fastapis_handler(
    engine: TaskEngine, solved: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # While FastAPI's telemetry records a request it reports the solved parameters.
    monkeypatch.setattr(events_module, "get_telemetry_data", TelemetryData)
    async with await _client(create_app(engine)) as c:
        r = await c.post("/tasks/t1/events", json={"type": "a"})
    assert r.status_code == 201
    assert solved == ["/tasks/t1/events"]


BODIES = [
    b'{"type":"a","level":"warn","data":{"x":[1,2.5,true,null]},"seriesId":"s",'
    b'"seriesMode":"accumulate","seriesAccField":"d","idempotencyKey":"k","other":1}',
    b'{"type":"a","type":"b"}',
    b'{"type":"a","data":123456789012345678901234567890}',
    b'{"type":"a","data":1.7976931348623157e308}',
    b'{"type":"a","data":"NaN Infinity"}',
    b'{"type":"a","data":' + b"1" * 250 + b"}",
    b'{"type":"a","data":Infinity}',
    b'{"type":"a","data":-Infinity}',
    b'{"type":"a","data":"\\ud800"}',
    b'{"type":"a","data":"\\ud83d\\ude00"}',
    b'{"type":"a","data":' + b"[" * 300 + b"]" * 300 + b"}",
    b'{"type":"a","idempotencyKey":""}',
    b'{"type":"a","level":null}',
    b'{"type":"\xff"}',
    b'\xef\xbb\xbf{"type":"a"}',
    b' {"type":"a"}',
    b'{"type":"a"} ',
    b'[{"type":"a"},{"type":"b"}]',
]


@pytest.mark.parametrize("raw", BODIES)
def test_single_event_parsing_matches_the_general_path(raw: bytes) -> None:
    def outcome(parse: Any) -> tuple[str, Any]:
        try:
            body = parse()
        except ApiError as exc:
            return ("error", (exc.status_code, exc.message))
        items = body if isinstance(body, list) else [body]
        return ("ok", [json.dumps(i.model_dump(), sort_keys=True) for i in items])

    fast = outcome(lambda: events_module._parse_events(raw, 1000))
    general = outcome(lambda: validate(BATCH_ADAPTER, parse_json(raw)))
    assert fast == general


async def test_other_methods_and_paths_route_as_before(
    engine: TaskEngine, solved: list[str]
) -> None:
    app = create_app(engine)
    # Documented once, by the events router's route.
    assert list(app.openapi()["paths"]["/tasks/{id}/events"]) == ["post", "get"]
    async with await _client(app) as c:
        r = await c.post("/tasks/t1/events", json={"type": "a"})
        assert r.status_code == 201
        for method in ("PUT", "DELETE", "PATCH"):
            r = await c.request(method, "/tasks/t1/events")
            assert (r.status_code, r.headers["allow"]) == (405, "POST")
        r = await c.post("/tasks/t1/events/", json={"type": "a"})
        assert (r.status_code, r.headers["location"]) == (307, "http://t/tasks/t1/events")
        r = await c.post("/tasks/t1/events/history", json={"type": "a"})
        assert (r.status_code, r.json()) == (405, {"error": "Method Not Allowed"})
        r = await c.get("/tasks/t1/events/history")
        assert r.status_code == 200 and [e["type"] for e in r.json()] == ["a"]
    assert solved == ["/tasks/t1/events/history"]


async def test_middleware_of_the_app_and_its_host_wraps_the_fast_path(
    engine: TaskEngine, solved: list[str]
) -> None:
    seen: list[tuple[str, int]] = []

    class Recorder:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            async def record(message: Any) -> None:
                if message["type"] == "http.response.start":
                    seen.append((scope["path"], message["status"]))
                await send(message)

            await self.app(scope, receive, record)

    app = create_app(engine, config=ServerConfig(cors_origins=("https://a.example",)))
    app.add_middleware(Recorder)  # a host's, added after create_app
    async with await _client(app) as c:
        r = await c.post(
            "/tasks/t1/events", json={"type": "a"}, headers={"origin": "https://a.example"}
        )
        assert r.status_code == 201
        assert r.headers["access-control-allow-origin"] == "https://a.example"
        r = await c.post("/tasks/nope/events", json={"type": "a"})
        assert r.status_code == 404
    assert seen == [("/tasks/t1/events", 201), ("/tasks/nope/events", 404)]
    assert solved == []


async def test_publish_in_an_app_mounted_under_a_prefix(
    engine: TaskEngine, solved: list[str]
) -> None:
    host = FastAPI()
    host.mount("/taskcast", create_app(engine))
    async with await _client(host) as c:
        r = await c.post("/taskcast/tasks/t1/events", json={"type": "a"})
        assert (r.status_code, r.json()["taskId"]) == (201, "t1")
        r = await c.post("/taskcast/tasks/t1/events/", json={"type": "a"})
        assert (r.status_code, r.headers["location"]) == (
            307,
            "http://t/taskcast/tasks/t1/events",
        )
        r = await c.post("/tasks/t1/events", json={"type": "a"})
        assert r.status_code == 404
    assert solved == []
    assert [e.type for e in await engine.get_events("t1")] == ["a"]


async def test_the_apps_exception_handlers_answer_for_the_fast_path(
    engine: TaskEngine, solved: list[str]
) -> None:
    app = create_app(engine)
    calls: list[str] = []

    def teapot(request: Request, exc: Exception) -> Response:  # a plain (sync) handler
        calls.append(request.path_params["task_id"])
        return Response(b"gone", status_code=418)

    app.add_exception_handler(TaskNotFoundError, teapot)
    async with await _client(app) as c:
        r = await c.post("/tasks/nope/events", json={"type": "a"})
        assert (r.status_code, r.content) == (418, b"gone")
    assert calls == ["nope"]
    assert solved == []


async def test_an_unhandled_error_is_a_500_as_from_the_route(
    engine: TaskEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "publish_events", broken)
    answers = []
    for overrides in (False, True):
        app = create_app(engine)
        if overrides:
            app.dependency_overrides[_header_auth] = _header_auth
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post("/tasks/t1/events", json={"type": "a"})
        answers.append((r.status_code, r.text))
    assert answers == [(500, "Internal Server Error")] * 2
