"""Trusted service keys, custom authenticators and assembling the authenticator from config."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from taskcast.core import ConfigError
from taskcast.server._auth import (
    FULL_ACCESS,
    AuthContext,
    Authenticator,
    AuthError,
    CompositeAuthenticator,
    CustomAuthenticator,
    NoAuth,
    TrustedService,
    auth_context,
    auth_error_response,
    build_authenticator,
    context_from_claims,
    load_custom_authenticator,
)
from taskcast.server._jwt import JWTAuthenticator, JWTConfig

pytestmark = pytest.mark.anyio

SECRET = "test-secret-that-is-long-enough-for-hs256!"
KEY_HEADER = "X-Taskcast-Service-Key"


def probe_app(authenticator: Authenticator) -> FastAPI:
    app = FastAPI()
    app.state.authenticator = authenticator

    @app.exception_handler(AuthError)
    async def _refuse(request: Request, exc: AuthError) -> JSONResponse:
        return auth_error_response(exc)

    @app.get("/probe/{task_id}")
    async def probe(
        task_id: str,
        ctx: Annotated[AuthContext, Depends(auth_context)],
        scope: str = "event:subscribe",
    ) -> dict[str, Any]:
        ctx.require(scope, task_id)
        return {
            "sub": ctx.sub,
            "scopes": sorted(ctx.scopes),
            "taskIds": None if ctx.task_ids is None else sorted(ctx.task_ids),
            "source": ctx.source,
        }

    return app


async def get(
    authenticator: Authenticator, path: str = "/probe/t1", headers: Mapping[str, str] | None = None
) -> httpx.Response:
    app = probe_app(authenticator)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.get(path, headers=dict(headers or {}))


SERVICES = [
    TrustedService(name="billing", key="billing-key-0123456789", scope=("event:publish",)),
    TrustedService(
        name="ingest",
        key="ingest-key-abcdefghijkl",
        scope=("event:subscribe",),
        task_ids=("t1",),
    ),
]


# -- service keys ------------------------------------------------------------------------


async def test_service_key_gives_the_service_context() -> None:
    auth = CompositeAuthenticator(NoAuth(), SERVICES)
    resp = await get(auth, "/probe/t1?scope=event:publish", {KEY_HEADER: "billing-key-0123456789"})
    assert resp.json() == {
        "sub": "svc:billing",
        "scopes": ["event:publish"],
        "taskIds": None,
        "source": "service",
    }
    resp = await get(auth, "/probe/t2", {KEY_HEADER: "ingest-key-abcdefghijkl"})
    assert (resp.status_code, resp.json()) == (403, {"error": "Forbidden"})
    resp = await get(auth, "/probe/t1", {KEY_HEADER: "ingest-key-abcdefghijkl"})
    assert resp.json()["taskIds"] == ["t1"]


@pytest.mark.parametrize(
    "key", ["wrong", "billing-key-012345678", "billing-key-0123456789x", "BILLING-KEY-0123456789"]
)
async def test_wrong_service_key_is_401_even_in_mode_none(key: str) -> None:
    resp = await get(CompositeAuthenticator(NoAuth(), SERVICES), headers={KEY_HEADER: key})
    assert (resp.status_code, resp.json()) == (401, {"error": "Invalid service key"})


async def test_wrong_service_key_is_401_even_with_a_valid_bearer() -> None:
    inner = JWTAuthenticator(JWTConfig(secret=SECRET))
    good = jwt.encode({"scope": ["*"], "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    auth = CompositeAuthenticator(inner, SERVICES)
    headers = {KEY_HEADER: "nope", "Authorization": f"Bearer {good}"}
    assert (await get(auth, headers=headers)).status_code == 401
    assert (await get(auth, headers={"Authorization": f"Bearer {good}"})).status_code == 200
    resp = await get(auth)
    assert resp.json() == {"error": "Missing Bearer token"}
    assert auth.mode == "jwt"


async def test_without_services_the_header_is_ignored() -> None:
    auth = CompositeAuthenticator(NoAuth(), [])
    resp = await get(auth, headers={KEY_HEADER: "anything"})
    assert resp.json()["source"] == "none"
    assert auth.mode == "none"
    # An empty header counts as absent.
    resp = await get(CompositeAuthenticator(NoAuth(), SERVICES), headers={KEY_HEADER: ""})
    assert resp.status_code == 200


def test_trusted_service_from_config_dict() -> None:
    svc = TrustedService.from_dict({"name": "a", "key": "k" * 20, "scope": ["*"], "taskIds": "*"})
    assert svc.task_ids is None and svc.scope == ("*",)
    assert "k" * 20 not in repr(svc)
    svc = TrustedService.from_dict({"name": "b", "key": "k", "taskIds": ["x"]})
    assert svc.task_ids == ("x",) and svc.scope == ()
    ctx = svc.context()
    assert ctx.sub == "svc:b" and ctx.task_ids == frozenset({"x"}) and ctx.scopes == frozenset()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "a"}, "need string"),
        ({"name": "a", "key": "k", "scope": "*"}, "scope must be"),
        ({"name": "a", "key": "k", "taskIds": "x"}, "taskIds must be"),
        ({"name": "a", "key": "k", "taskIds": [1]}, "taskIds must be"),
        ({"name": "a", "key": ""}, "non-empty key"),
        ({"name": "", "key": "k"}, "needs a name"),
    ],
)
def test_trusted_service_config_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrustedService.from_dict(data)


# -- custom ------------------------------------------------------------------------------


async def test_custom_sync_function_returning_claims() -> None:
    seen: list[int] = []

    def check(request: Request) -> dict[str, Any] | None:
        seen.append(threading.get_ident())
        if request.headers.get("x-user") == "alice":
            return {"sub": "alice", "scope": ["event:subscribe"], "taskIds": ["t1"], "team": "a"}
        return None

    auth = CustomAuthenticator(check)
    assert auth.mode == "custom"
    resp = await get(auth, headers={"x-user": "alice"})
    assert resp.json() == {
        "sub": "alice",
        "scopes": ["event:subscribe"],
        "taskIds": ["t1"],
        "source": "custom",
    }
    assert seen[0] != threading.get_ident()  # ran in a worker thread
    resp = await get(auth)
    assert (resp.status_code, resp.json()) == (401, {"error": "Unauthorized"})


async def test_custom_async_function_and_callable_object() -> None:
    async def check(request: Request) -> AuthContext:
        return AuthContext(sub="bob", scopes=frozenset({"*"}))

    resp = await get(CustomAuthenticator(check))
    assert resp.json()["sub"] == "bob"

    class Checker:
        async def __call__(self, request: Request) -> AuthContext | None:
            return None

    resp = await get(CustomAuthenticator(Checker()))
    assert resp.status_code == 401


async def test_custom_inline_and_awaitable_results() -> None:
    async def later() -> dict[str, Any]:
        return {"sub": "carol", "scope": "*"}

    resp = await get(CustomAuthenticator(lambda r: later(), run_sync_in_thread=False))
    assert resp.json()["sub"] == "carol"


async def test_custom_may_raise_its_own_refusal() -> None:
    def check(request: Request) -> None:
        raise AuthError(403, "Account suspended")

    resp = await get(CustomAuthenticator(check, run_sync_in_thread=False))
    assert (resp.status_code, resp.json()) == (403, {"error": "Account suspended"})


async def test_custom_malformed_results() -> None:
    resp = await get(CustomAuthenticator(lambda r: {"taskIds": 3}))
    assert (resp.status_code, resp.json()) == (401, {"error": "Unauthorized"})
    with pytest.raises(TypeError, match="expected AuthContext"):
        await get(CustomAuthenticator(lambda r: "yes"))  # type: ignore[arg-type,return-value]


def test_load_custom_authenticator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_auth_mod.py").write_text(
        "class Holder:\n"
        "    @staticmethod\n"
        "    def check(request):\n"
        "        return {'sub': 'x'}\n"
        "NOT_CALLABLE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        auth = load_custom_authenticator("my_auth_mod:Holder.check")
        assert isinstance(auth, CustomAuthenticator)
        for path, message in [
            ("my_auth_mod", "must look like"),
            (":f", "must look like"),
            ("my_auth_mod:", "must look like"),
            ("no_such_module_xyz:f", "Cannot import"),
            ("my_auth_mod:missing", "not found"),
            ("my_auth_mod:NOT_CALLABLE", "not callable"),
        ]:
            with pytest.raises(ConfigError, match=message):
                load_custom_authenticator(path)
    finally:
        sys.modules.pop("my_auth_mod", None)


# -- claims and assembly -----------------------------------------------------------------


def test_context_from_claims() -> None:
    ctx = context_from_claims({"sub": "s", "taskIds": "*", "scope": ["a"]}, source="jwt")
    assert (
        ctx.task_ids is None
        and ctx.scopes == frozenset({"a"})
        and ctx.claims
        == {
            "sub": "s",
            "taskIds": "*",
            "scope": ["a"],
        }
    )
    assert context_from_claims({}, source="custom").scopes == frozenset()
    for bad in ({"sub": 1}, {"taskIds": [1]}, {"scope": {"a": 1}}):
        with pytest.raises(ValueError):
            context_from_claims(bad, source="jwt")
    assert FULL_ACCESS.source == "none" and FULL_ACCESS.has_scope("anything")
    assert AuthContext(claims={"workerId": 3}).worker_id is None


def test_build_authenticator() -> None:
    assert isinstance(build_authenticator(), NoAuth)
    assert isinstance(build_authenticator("jwt", jwt=JWTConfig(secret=SECRET)), JWTAuthenticator)
    assert isinstance(build_authenticator("custom", custom=lambda r: None), CustomAuthenticator)
    assert isinstance(
        build_authenticator("custom", custom="taskcast.server._auth:context_from_claims"),
        CustomAuthenticator,
    )
    composite = build_authenticator(
        "none",
        trusted_services=[SERVICES[0], {"name": "x", "key": "x-key", "scope": ["*"]}],
    )
    assert isinstance(composite, CompositeAuthenticator)
    assert [s.name for s in composite.services] == ["billing", "x"]
    for mode, message in [("jwt", "needs JWT settings"), ("custom", "needs a function")]:
        with pytest.raises(ConfigError, match=message):
            build_authenticator(mode)
    with pytest.raises(ConfigError, match="Unknown auth mode"):
        build_authenticator("basic")
