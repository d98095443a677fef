"""Every route of ``create_app`` under ``jwt`` auth: refused without credentials, refused
without scope, refused for another task; plus the admin token exchange, over HTTP.

Routes are enumerated from the app, so a new route that forgets its guard fails here.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route

from taskcast.core import ConfigError, MemoryShortTermStore, TaskEngine, TaskInput
from taskcast.server import CompositeAuthenticator, SSEResponse, TrustedService, create_app
from taskcast.server._admin import AdminConfig, admin_router
from taskcast.server._auth import SERVICE_KEY_HEADER
from taskcast.server._jwt import JWTAuthenticator, JWTConfig
from taskcast.server._tokens import mint_subscribe_token, mint_token

pytestmark = pytest.mark.anyio

SECRET = "http-matrix-secret-that-is-long-enough!!"
ADMIN = "admin-token-for-tests-0123456789"
JWT_CONFIG = JWTConfig(secret=SECRET, issuer="taskcast-test")

# (method, path) pairs anyone may call. Everything else must authenticate.
PUBLIC = {
    ("GET", "/"),
    ("GET", "/health"),
    ("GET", "/health/ready"),
    ("GET", "/health/detail"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/docs/assets/{name}"),
    ("POST", "/admin/token"),
}


def build_app(engine: TaskEngine, admin: AdminConfig | None = None) -> FastAPI:
    app = create_app(engine, authenticator=JWTAuthenticator(JWT_CONFIG))
    app.include_router(
        admin_router(admin or AdminConfig.for_jwt(JWT_CONFIG, enabled=True, admin_token=ADMIN))
    )
    return app


def routes(app: FastAPI) -> list[tuple[str, str, bool]]:
    """(method, path, streams) for every HTTP endpoint, however the app nests its routers."""
    found: list[tuple[str, str, bool]] = []

    def add(route: Any, path: str) -> None:
        if not isinstance(route, Route | APIRoute):
            raise AssertionError(f"unknown route type {type(route).__name__} at {path}")
        streams = isinstance(route, APIRoute) and _is_sse(route)
        for method in route.methods or ():
            if method != "HEAD":
                found.append((method, path, streams))

    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):  # FastAPI's lazily included routers
            for context in route.effective_route_contexts():
                add(context.original_route, context.path)
        else:
            add(route, getattr(route, "path", "?"))
    return found


def _is_sse(route: APIRoute) -> bool:
    response_class = getattr(route.response_class, "value", route.response_class)
    return isinstance(response_class, type) and issubclass(response_class, SSEResponse)


def tok(scope: list[str] | str, task_ids: list[str] | None = None, **extra: Any) -> str:
    return mint_token(
        SECRET,
        scope=[scope] if isinstance(scope, str) else scope,
        task_ids=task_ids,
        ttl_seconds=60,
        issuer="taskcast-test",
        extra_claims=extra,
    )


def fill(path: str, task_id: str) -> str:
    return re.sub(r"\{[^}]+\}", task_id, path)


@pytest.fixture
async def engine() -> AsyncIterator[TaskEngine]:
    async with TaskEngine(short_term=MemoryShortTermStore()) as e:
        yield e


@pytest.fixture
async def client(engine: TaskEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(engine)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c


async def call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = json.dumps({"status": "running", "type": "x", "level": "info", "data": {}})
    return await client.request(
        method,
        path,
        headers={"Content-Type": "application/json", **(headers or {})},
        content=body if method in {"POST", "PATCH", "PUT"} else None,
    )


async def test_route_table_is_known(engine: TaskEngine) -> None:
    found = routes(build_app(engine))
    paths = {(m, p) for m, p, _ in found}
    assert paths >= PUBLIC
    guarded = paths - PUBLIC
    # Sanity: the enumeration sees the task routes (if it saw nothing, the matrix is empty).
    assert ("POST", "/tasks") in guarded
    assert ("GET", "/tasks/{task_id}/events") in guarded
    assert any(streams for _, _, streams in found)


async def test_every_guarded_route_needs_a_bearer(
    client: httpx.AsyncClient, engine: TaskEngine
) -> None:
    for method, path, _ in routes(build_app(engine)):
        if (method, path) in PUBLIC:
            continue
        for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer x.y.z"}):
            resp = await call(client, method, fill(path, "t1"), headers)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.json()["error"] in {"Missing Bearer token", "Invalid or expired token"}


async def test_every_guarded_route_refuses_wrong_issuer_and_alg_none(
    client: httpx.AsyncClient, engine: TaskEngine
) -> None:
    wrong_iss = jwt.encode({"scope": ["*"], "iss": "other"}, SECRET, algorithm="HS256")
    none = jwt.encode({"scope": ["*"], "iss": "taskcast-test"}, None, algorithm="none")  # type: ignore[arg-type]
    for method, path, _ in routes(build_app(engine)):
        if (method, path) in PUBLIC:
            continue
        for bad in (wrong_iss, none):
            resp = await call(client, method, fill(path, "t1"), {"Authorization": f"Bearer {bad}"})
            assert resp.status_code == 401, (method, path, resp.text)


async def test_every_guarded_route_needs_a_scope(
    client: httpx.AsyncClient, engine: TaskEngine
) -> None:
    no_scope = {"Authorization": f"Bearer {tok([])}"}
    unrelated = {"Authorization": f"Bearer {tok(['task:signal'])}"}
    for method, path, _ in routes(build_app(engine)):
        if (method, path) in PUBLIC:
            continue
        for headers in (no_scope, unrelated):
            resp = await call(client, method, fill(path, "t1"), headers)
            assert (resp.status_code, resp.json()) == (403, {"error": "Forbidden"}), (method, path)


async def test_task_routes_refuse_another_tasks_token(
    client: httpx.AsyncClient, engine: TaskEngine
) -> None:
    headers = {"Authorization": f"Bearer {tok('*', ['task-a'])}"}
    checked = 0
    for method, path, _ in routes(build_app(engine)):
        if (method, path) in PUBLIC or "{" not in path:
            continue
        resp = await call(client, method, fill(path, "task-b"), headers)
        assert (resp.status_code, resp.json()) == (403, {"error": "Forbidden"}), (method, path)
        checked += 1
    assert checked >= 5


async def test_full_token_reaches_every_handler(
    client: httpx.AsyncClient, engine: TaskEngine
) -> None:
    headers = {"Authorization": f"Bearer {tok('*')}"}
    for method, path, streams in routes(build_app(engine)):
        if (method, path) in PUBLIC or (streams and "{" not in path):
            continue  # the global stream never ends; covered over a real socket below
        resp = await call(client, method, fill(path, "no-such-task"), headers)
        assert resp.status_code not in (401, 403), (method, path, resp.text)


async def test_subscribe_token_cannot_write(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/tasks", json={"id": "t-sub"}, headers={"Authorization": f"Bearer {tok('*')}"}
    )
    assert created.status_code == 201
    sub = mint_subscribe_token(SECRET, "t-sub", issuer="taskcast-test")
    auth = {"Authorization": f"Bearer {sub}"}
    assert (await client.get("/tasks/t-sub", headers=auth)).status_code == 200
    for method, path in [
        ("PATCH", "/tasks/t-sub/status"),
        ("POST", "/tasks/t-sub/events"),
        ("GET", "/tasks/t-sub/events/history"),
        ("POST", "/tasks"),
    ]:
        resp = await call(client, method, path, auth)
        assert resp.status_code == 403, (method, path)
    # From the query string it is not even considered for writes.
    resp = await client.patch(
        "/tasks/t-sub/status", params={"token": sub}, json={"status": "running"}
    )
    assert resp.status_code == 401


# -- admin token exchange ----------------------------------------------------------------


async def test_admin_exchange_issues_a_usable_token(client: httpx.AsyncClient) -> None:
    resp = await client.post("/admin/token", json={"adminToken": ADMIN})
    assert resp.status_code == 200
    body = resp.json()
    assert abs(body["expiresAt"] - (time.time() + 86_400)) < 5
    claims = await JWTAuthenticator(JWT_CONFIG).verify(body["token"])
    assert claims["sub"] == "admin" and claims["scope"] == ["*"] and claims["taskIds"] == "*"
    assert claims["iss"] == "taskcast-test"
    created = await client.post(
        "/tasks", json={}, headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert created.status_code == 201


async def test_admin_exchange_with_scopes_and_lifetime(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/admin/token",
        json={"adminToken": ADMIN, "scopes": ["event:subscribe"], "expiresIn": 60.5},
    )
    body = resp.json()
    claims = await JWTAuthenticator(JWT_CONFIG).verify(body["token"])
    assert claims["scope"] == ["event:subscribe"]
    assert claims["exp"] - claims["iat"] == 60
    denied = await client.post(
        "/tasks", json={}, headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert denied.status_code == 403


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[1, 2]",
        '"adminToken"',
        json.dumps({"adminToken": ADMIN, "scopes": "*"}),
        json.dumps({"adminToken": ADMIN, "scopes": [1]}),
        json.dumps({"adminToken": ADMIN, "expiresIn": 0}),
        json.dumps({"adminToken": ADMIN, "expiresIn": -5}),
        json.dumps({"adminToken": ADMIN, "expiresIn": "1h"}),
        json.dumps({"adminToken": ADMIN, "expiresIn": True}),
        '{"adminToken": "x", "expiresIn": NaN}',
    ],
)
async def test_admin_exchange_bad_body(client: httpx.AsyncClient, content: str) -> None:
    resp = await client.post("/admin/token", content=content)
    assert (resp.status_code, resp.json()) == (400, {"error": "Invalid request body"})


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"adminToken": ""},
        {"adminToken": 5},
        {"adminToken": ADMIN[:-1]},
        {"adminToken": ADMIN + "x"},
    ],
)
async def test_admin_exchange_bad_token(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    resp = await client.post("/admin/token", json=body)
    assert (resp.status_code, resp.json()) == (401, {"error": "Invalid admin token"})


async def test_admin_disabled_is_404(engine: TaskEngine) -> None:
    app = build_app(engine, AdminConfig(enabled=False, admin_token=ADMIN, signing_key=SECRET))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        resp = await c.post("/admin/token", json={"adminToken": ADMIN})
        assert (resp.status_code, resp.json()) == (404, {"error": "Not found"})
        paths = (await c.get("/openapi.json")).json()["paths"]
        assert "/admin/token" not in paths


async def test_admin_without_signing_key_returns_empty_token(
    engine: TaskEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taskcast.server._admin")
    app = build_app(engine, AdminConfig(enabled=True, max_expires_in=3600))
    generated = re.search(r"auto-generated\): (\S+)", caplog.text)
    assert generated is not None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        resp = await c.post("/admin/token", json={"adminToken": generated.group(1)})
        assert resp.status_code == 200 and resp.json()["token"] == ""
        resp = await c.post(
            "/admin/token", json={"adminToken": generated.group(1), "expiresIn": 3601}
        )
        assert resp.status_code == 400


def test_admin_config_helpers() -> None:
    assert AdminConfig.for_jwt(None, enabled=True).signing_key is None
    cfg = AdminConfig.for_jwt(
        JWTConfig(secret=SECRET, audience=("a", "b"), algorithm="HS384"), enabled=True
    )
    assert (cfg.signing_key, cfg.algorithm, cfg.audience) == (SECRET, "HS384", "a")
    assert (
        AdminConfig.for_jwt(JWTConfig(secret=SECRET, algorithm="RS256"), enabled=True).algorithm
        == "HS256"
    )
    assert "admin_token" not in repr(AdminConfig(admin_token="zzz")).replace("admin_token=", "")
    same = AdminConfig(enabled=True, admin_token="t")
    assert same.with_generated_token() is same
    off = AdminConfig(enabled=False)
    assert off.with_generated_token() is off
    assert len(AdminConfig(enabled=True).with_generated_token().admin_token or "") >= 32
    with pytest.raises(ConfigError):
        AdminConfig(default_expires_in=0)


# -- over a real socket: browser tokens on the SSE route ---------------------------------


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        pass


@pytest.fixture
def live_url() -> Iterator[str]:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    app = build_app(engine)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


async def test_browser_subscribe_over_sse(live_url: str) -> None:
    full = {"Authorization": f"Bearer {tok('*')}"}
    async with httpx.AsyncClient(base_url=live_url, timeout=10) as c:
        assert (await c.post("/tasks", json={"id": "live"}, headers=full)).status_code == 201
        await c.patch("/tasks/live/status", json={"status": "running"}, headers=full)
        await c.post(
            "/tasks/live/events", json={"type": "a", "level": "info", "data": 1}, headers=full
        )
        sub = mint_subscribe_token(SECRET, "live", issuer="taskcast-test")
        async with c.stream("GET", "/tasks/live/events", params={"token": sub}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    assert line == "event: taskcast.event"
                    break
        c.cookies.set("taskcast_token", sub)
        async with c.stream("GET", "/tasks/live/events") as resp:
            assert resp.status_code == 200
        c.cookies.clear()
        other = mint_subscribe_token(SECRET, "other", issuer="taskcast-test")
        resp = await c.get("/tasks/live/events", params={"token": other})
        assert (resp.status_code, resp.json()) == (403, {"error": "Forbidden"})
        # The global stream with a full token passes auth and starts streaming.
        async with c.stream("GET", "/events", headers=full) as resp:
            assert resp.status_code == 200
        # A one-task token may open the global stream; the server filters it to that task.
        async with c.stream("GET", "/events", params={"token": sub}) as resp:
            assert resp.status_code == 200


# -- every read, every kind of caller: secrets stay write-only, per-task rules hold ------

HOOK_SECRET = "whsec-never-shown-0123456789"
HOOK = {
    "url": "https://hookuser:hookpass@hooks.example.com/in?key=qk-123&x=1",
    "secret": HOOK_SECRET,
    "filter": {"types": ["*"]},
}
SHOWN_HOOK = {
    "url": "https://***@hooks.example.com/in?key=***&x=***",
    "hasSecret": True,
    "filter": {"types": ["*"]},
}
LEAKS = (HOOK_SECRET, "hookpass", "hookuser", "qk-123")
SERVICE = TrustedService(name="backend", key="service-key-0123456789abcdef", scope=("*",))


def assert_no_secret(text: str, where: object) -> None:
    for leaked in LEAKS:
        assert leaked not in text, (where, leaked, text[:300])


async def ensure_task(engine: TaskEngine, task_id: str, *, finished: bool = False) -> None:
    """The task with the secret-bearing webhook (again, if a DELETE removed it)."""
    if await engine.get_task(task_id) is None:
        await engine.create_task(TaskInput(id=task_id, webhooks=[HOOK]))
        if finished:
            await engine.transition_task(task_id, "running")
            await engine.transition_task(task_id, "completed", result={"ok": True})


Caller = tuple[str, dict[str, str], bool]  # kind, headers, subscribe-only via ?token=


async def callers(client: httpx.AsyncClient) -> list[Caller]:
    """Every kind of caller; ``no auth`` is for an app in auth mode ``none``."""
    exchanged = await client.post("/admin/token", json={"adminToken": ADMIN})
    admin = exchanged.json()["token"]
    return [
        ("admin token", {"Authorization": f"Bearer {admin}"}, False),
        ("subscribe token in ?token=", {}, True),
        ("service key", {SERVICE_KEY_HEADER: SERVICE.key}, False),
        ("no auth", {}, False),
    ]


async def test_no_route_returns_a_webhook_secret_to_any_caller(engine: TaskEngine) -> None:
    # Regression (issue 15 item 1): GET /tasks/{id}, GET /tasks and the POST /tasks echo
    # returned each webhook's secret and full URL, even to a browser's subscribe token.
    secured = create_app(
        engine, authenticator=CompositeAuthenticator(JWTAuthenticator(JWT_CONFIG), [SERVICE])
    )
    secured.include_router(
        admin_router(AdminConfig.for_jwt(JWT_CONFIG, enabled=True, admin_token=ADMIN))
    )
    open_app = create_app(engine)  # auth mode none
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=secured), base_url="http://test"
    ) as client:
        kinds = await callers(client)
    seen_tasks = 0
    for app in (secured, open_app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            for kind, headers, query_token in kinds:
                if (app is open_app) != (kind == "no auth"):
                    continue
                if not query_token:
                    created = await client.post(
                        "/tasks", json={"webhooks": [HOOK]}, headers=headers
                    )
                    assert created.status_code == 201, (kind, created.text)
                    assert created.json()["webhooks"] == [SHOWN_HOOK]
                    assert_no_secret(created.text, (kind, "POST /tasks"))
                for method, path, streams in routes(app):
                    if streams and "{" not in path:
                        continue  # GET /events never ends: checked over a socket below
                    if query_token and method != "GET":
                        continue  # a token in the query string is only taken on GETs
                    # A finished task's stream replays its history (status events too) and ends.
                    task_id = "done" if streams else "w"
                    await ensure_task(engine, task_id, finished=streams)
                    params = {}
                    if query_token:
                        params["token"] = mint_subscribe_token(
                            SECRET, task_id, issuer="taskcast-test"
                        )
                    resp = await client.request(
                        method,
                        fill(path, task_id),
                        params=params,
                        headers={"Content-Type": "application/json", **headers},
                        content=json.dumps({"status": "running", "type": "x", "data": {}})
                        if method in {"POST", "PATCH"}
                        else None,
                    )
                    assert_no_secret(resp.text, (kind, method, path, resp.status_code))
                    body = resp.json() if "json" in resp.headers.get("content-type", "") else None
                    tasks = (body.get("tasks") or [body]) if isinstance(body, dict) else []
                    for task in tasks:
                        if isinstance(task, dict) and task.get("id") == task_id:
                            assert task["webhooks"] == [SHOWN_HOOK], (kind, method, path)
                            seen_tasks += 1
                    if streams:
                        assert resp.status_code == 200 and "taskcast.done" in resp.text, kind
    # Every kind read the task through GET /tasks and GET /tasks/{id} at least.
    assert seen_tasks >= 4 * 2


async def test_global_stream_carries_no_webhook_secret(live_url: str) -> None:
    full = {"Authorization": f"Bearer {tok('*')}"}
    sub = mint_subscribe_token(SECRET, "gw", issuer="taskcast-test")
    async with httpx.AsyncClient(base_url=live_url, timeout=10) as c:
        created = await c.post("/tasks", json={"id": "gw", "webhooks": [HOOK]}, headers=full)
        assert created.status_code == 201
        async with c.stream("GET", "/events", params={"token": sub}) as resp:
            assert resp.status_code == 200
            await c.patch("/tasks/gw/status", json={"status": "running"}, headers=full)
            await c.patch(
                "/tasks/gw/status", json={"status": "completed", "result": {}}, headers=full
            )
            seen = ""
            async for line in resp.aiter_lines():
                seen += line + "\n"
                if '"completed"' in line:
                    break
    assert '"taskcast:status"' in seen
    assert_no_secret(seen, "GET /events")


ALICE_ONLY = {"rules": [{"match": {"scope": ["event:subscribe"]}, "require": {"sub": ["alice"]}}]}
RED_TEAM = {"rules": [{"require": {"claims": {"team": "red"}}}]}
# A rule for another scope does not hide the task from readers.
PUBLISH_RULE = {"rules": [{"match": {"scope": ["event:publish"]}, "require": {"sub": ["x"]}}]}


async def test_lists_show_exactly_the_tasks_a_caller_may_read(engine: TaskEngine) -> None:
    # Regression (issue 15 item 2): a caller refused (403) on GET /tasks/{id} still saw the
    # task, with its params, result and rules, in GET /tasks.
    rules = [None, ALICE_ONLY, RED_TEAM, None, ALICE_ONLY, ALICE_ONLY, PUBLISH_RULE, RED_TEAM]
    ids = [f"t{i}" for i in range(len(rules))]
    for task_id, config in zip(ids, rules, strict=True):
        await engine.create_task(TaskInput(id=task_id, auth_config=config, params={"p": 1}))
    secured = create_app(
        engine, authenticator=CompositeAuthenticator(JWTAuthenticator(JWT_CONFIG), [SERVICE])
    )
    bob = tok("event:subscribe", sub="bob")
    readers: list[tuple[str, Any, dict[str, str], dict[str, str]]] = [
        ("bob", secured, {"Authorization": f"Bearer {bob}"}, {}),
        ("alice", secured, {"Authorization": f"Bearer {tok('*', sub='alice')}"}, {}),
        ("red team", secured, {"Authorization": f"Bearer {tok('*', team='red')}"}, {}),
        ("alice, two tasks", secured, {"Authorization": f"Bearer {tok('*', ['t1', 't2'], sub='alice')}"}, {}),
        ("subscribe token for t4", secured, {}, {"token": mint_subscribe_token(SECRET, "t4", issuer="taskcast-test", sub="bob")}),
        ("service key", secured, {SERVICE_KEY_HEADER: SERVICE.key}, {}),
        ("no auth", create_app(engine), {}, {}),
    ]  # fmt: skip
    expected_visible = {
        "bob": {"t0", "t3", "t6"},
        "alice": {"t0", "t1", "t3", "t4", "t5", "t6"},
        "red team": {"t0", "t2", "t3", "t6", "t7"},
        "alice, two tasks": {"t1"},
        "subscribe token for t4": set(),
        "service key": {"t0", "t3", "t6"},
        "no auth": set(ids),
    }
    for name, app, headers, query in readers:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
        ) as c:
            readable = set()
            for task_id in ids:
                r = await c.get(f"/tasks/{task_id}", params=query)
                assert r.status_code in (200, 403), (name, task_id, r.text)
                if r.status_code == 200:
                    readable.add(task_id)
            assert readable == expected_visible[name], name
            # Listed, whole and in pages of two (pages may come short, even empty, while
            # the cursor leads on), the caller sees exactly what it may read one by one.
            whole = (await c.get("/tasks", params=query)).json()
            assert [t["id"] for t in whole["tasks"]] == sorted(readable), name
            paged: list[str] = []
            params = {**query, "limit": "2"}
            pages = 0
            while True:
                body = (await c.get("/tasks", params=params)).json()
                assert len(body["tasks"]) <= 2
                paged += [t["id"] for t in body["tasks"]]
                pages += 1
                if "nextCursor" not in body:
                    break
                params["cursor"] = body["nextCursor"]
            assert paged == sorted(readable), name
            if name not in ("alice, two tasks", "subscribe token for t4"):
                assert pages == 4, name  # eight tasks, two a page: the store's pages
