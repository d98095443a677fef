"""Attack matrix for ``jwt`` mode: token extraction, verification and browser tokens."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from taskcast.server._auth import (
    AuthContext,
    Authenticator,
    AuthError,
    auth_context,
    auth_error_response,
)
from taskcast.server._jwt import JWTAuthenticator, JWTConfig
from taskcast.server._tokens import mint_subscribe_token, mint_token

pytestmark = pytest.mark.anyio

SECRET = "test-secret-that-is-long-enough-for-hs256!"
OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256"


def probe_app(authenticator: Authenticator) -> FastAPI:
    """A one-route app: authenticate, then require ``?scope=`` on the path's task."""
    app = FastAPI()
    app.state.authenticator = authenticator

    @app.exception_handler(AuthError)
    async def _refuse(request: Request, exc: AuthError) -> JSONResponse:
        return auth_error_response(exc)

    @app.api_route("/probe/{task_id}", methods=["GET", "POST", "HEAD"])
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
            "workerId": ctx.worker_id,
        }

    return app


@pytest.fixture
def config() -> JWTConfig:
    return JWTConfig(secret=SECRET)


@pytest.fixture
async def client(config: JWTConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = probe_app(JWTAuthenticator(config))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c


def token(claims: dict[str, Any] | None = None, *, key: str = SECRET, alg: str = "HS256") -> str:
    now = int(time.time())
    body: dict[str, Any] = {"sub": "u1", "scope": ["*"], "iat": now, "exp": now + 60}
    body.update(claims or {})
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def assert_refused(resp: httpx.Response, status: int, message: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json() == {"error": message}


# -- the header --------------------------------------------------------------------------


async def test_valid_token_gives_claims(client: httpx.AsyncClient) -> None:
    resp = await client.get(
        "/probe/t1", headers=bearer(token({"taskIds": ["t1"], "workerId": "w1"}))
    )
    assert resp.status_code == 200
    assert resp.json() == {
        "sub": "u1",
        "scopes": ["*"],
        "taskIds": ["t1"],
        "source": "jwt",
        "workerId": "w1",
    }
    assert resp.headers.get("www-authenticate") is None


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic dXNlcjpwdw==", "bearer abc", "Bearer", "Bearer ", "Bearer    ", "Token x"],
)
async def test_missing_or_malformed_bearer(client: httpx.AsyncClient, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    resp = await client.get("/probe/t1", headers=headers)
    await assert_refused(resp, 401, "Missing Bearer token")
    assert resp.headers["www-authenticate"] == "Bearer"


def _alg_none() -> str:
    return jwt.encode({"sub": "x", "scope": ["*"]}, None, algorithm="none")  # type: ignore[arg-type]


def _tampered() -> str:
    head, _, sig = token({"scope": ["event:subscribe"]}).split(".")
    forged = jwt.utils.base64url_encode(b'{"sub":"u1","scope":["*"]}').decode()
    return f"{head}.{forged}.{sig}"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("abc.def", id="garbage"),
        pytest.param("not-a-jwt", id="no-dots"),
        pytest.param(_alg_none(), id="alg-none"),
        pytest.param(_alg_none().rstrip(".") + ".c2ln", id="alg-none-with-signature"),
        pytest.param(token(key=OTHER_SECRET), id="wrong-key"),
        pytest.param(token(alg="HS512", key=SECRET + SECRET), id="alg-not-configured"),
        pytest.param(_tampered(), id="tampered-payload"),
        pytest.param(token({"exp": int(time.time()) - 120}), id="expired"),
        pytest.param(token({"nbf": int(time.time()) + 120}), id="nbf-in-future"),
        pytest.param(token({"exp": "tomorrow"}), id="exp-not-a-number"),
        pytest.param(token({"taskIds": 5}), id="taskIds-wrong-type"),
        pytest.param(token({"taskIds": "t1"}), id="taskIds-single-string"),
        pytest.param(token({"scope": [1, 2]}), id="scope-wrong-type"),
        pytest.param(token({"sub": 42}), id="sub-not-a-string"),
        pytest.param("x" * 20_000, id="oversized"),
    ],
)
async def test_invalid_tokens_are_refused_without_detail(
    client: httpx.AsyncClient, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskcast.server._jwt")
    resp = await client.get("/probe/t1", headers=bearer(bad))
    await assert_refused(resp, 401, "Invalid or expired token")
    # The reason is logged for operators, never the token itself.
    assert all(bad not in r.getMessage() for r in caplog.records)


async def test_expiry_within_leeway_is_accepted(client: httpx.AsyncClient) -> None:
    resp = await client.get("/probe/t1", headers=bearer(token({"exp": int(time.time()) - 5})))
    assert resp.status_code == 200


async def test_token_without_exp_is_accepted_unless_required(client: httpx.AsyncClient) -> None:
    resp = await client.get("/probe/t1", headers=bearer(token({"exp": None, "iat": None})))
    assert resp.status_code == 200
    strict = probe_app(JWTAuthenticator(JWTConfig(secret=SECRET, require_exp=True)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=strict), base_url="http://t"
    ) as c:
        resp = await c.get("/probe/t1", headers=bearer(token({"exp": None})))
        await assert_refused(resp, 401, "Invalid or expired token")
        assert (await c.get("/probe/t1", headers=bearer(token()))).status_code == 200


# -- authorisation on top of a valid token -----------------------------------------------


async def test_token_for_task_a_cannot_touch_task_b(client: httpx.AsyncClient) -> None:
    tok = token({"taskIds": ["task-a"]})
    assert (await client.get("/probe/task-a", headers=bearer(tok))).status_code == 200
    resp = await client.get("/probe/task-b", headers=bearer(tok))
    await assert_refused(resp, 403, "Forbidden")


async def test_missing_scope_is_403(client: httpx.AsyncClient) -> None:
    tok = token({"scope": ["event:subscribe"]})
    assert (await client.get("/probe/t1", headers=bearer(tok))).status_code == 200
    resp = await client.get("/probe/t1?scope=event:publish", headers=bearer(tok))
    await assert_refused(resp, 403, "Forbidden")


async def test_absent_scope_grants_nothing_and_absent_task_ids_grant_all(
    client: httpx.AsyncClient,
) -> None:
    tok = token({"scope": None})
    resp = await client.get("/probe/t1", headers=bearer(tok))
    await assert_refused(resp, 403, "Forbidden")
    tok = token({"scope": ["event:subscribe"], "taskIds": None})
    resp = await client.get("/probe/any-task", headers=bearer(tok))
    assert resp.json()["taskIds"] is None


async def test_space_separated_scope_string(client: httpx.AsyncClient) -> None:
    tok = token({"scope": "event:subscribe event:publish", "taskIds": "*"})
    resp = await client.get("/probe/t1?scope=event:publish", headers=bearer(tok))
    assert resp.json()["scopes"] == ["event:publish", "event:subscribe"]


# -- issuer and audience -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ({"iss": "https://idp", "aud": "taskcast"}, True),
        ({"iss": "https://idp", "aud": ["other", "taskcast"]}, True),
        ({"iss": "https://evil", "aud": "taskcast"}, False),
        ({"aud": "taskcast"}, False),
        ({"iss": "https://idp", "aud": "other"}, False),
        ({"iss": "https://idp"}, False),
    ],
)
async def test_issuer_and_audience(claims: dict[str, Any], ok: bool) -> None:
    cfg = JWTConfig(secret=SECRET, issuer="https://idp", audience="taskcast")
    app = probe_app(JWTAuthenticator(cfg))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        resp = await c.get("/probe/t1", headers=bearer(token(claims)))
    assert resp.status_code == (200 if ok else 401)


async def test_audience_tuple_and_unchecked_audience(client: httpx.AsyncClient) -> None:
    # No audience configured: a token's aud is not checked (as the original).
    assert (await client.get("/probe/t1", headers=bearer(token({"aud": "x"})))).status_code == 200
    cfg = JWTConfig(secret=SECRET, audience=("a", "b"))
    app = probe_app(JWTAuthenticator(cfg))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/probe/t1", headers=bearer(token({"aud": "b"})))).status_code == 200
        assert (await c.get("/probe/t1", headers=bearer(token({"aud": "c"})))).status_code == 401


async def test_extra_accepted_algorithms() -> None:
    long_secret = SECRET * 2
    cfg = JWTConfig(secret=long_secret, algorithm="HS256", algorithms=("HS512",))
    auth = JWTAuthenticator(cfg)
    assert auth.algorithms == ("HS256", "HS512")
    claims = await auth.verify(token(key=long_secret, alg="HS512"))
    assert claims["sub"] == "u1"


# -- browser tokens: query parameter and cookie ------------------------------------------


async def test_query_token_is_capped_to_subscribe(client: httpx.AsyncClient) -> None:
    tok = token({"scope": ["*"], "taskIds": ["t1"]})
    resp = await client.get("/probe/t1", params={"token": tok})
    assert resp.status_code == 200
    assert resp.json()["scopes"] == ["event:subscribe"]
    resp = await client.get("/probe/t1", params={"token": tok, "scope": "event:publish"})
    await assert_refused(resp, 403, "Forbidden")


async def test_query_token_with_unrelated_scopes_gets_none(client: httpx.AsyncClient) -> None:
    tok = token({"scope": ["event:publish"]})
    resp = await client.get("/probe/t1", params={"token": tok})
    await assert_refused(resp, 403, "Forbidden")


async def test_query_and_cookie_tokens_only_on_get(client: httpx.AsyncClient) -> None:
    tok = mint_subscribe_token(SECRET, "t1")
    resp = await client.post("/probe/t1", params={"token": tok})
    await assert_refused(resp, 401, "Missing Bearer token")
    resp = await client.post("/probe/t1", headers={"Cookie": f"taskcast_token={tok}"})
    await assert_refused(resp, 401, "Missing Bearer token")
    assert (await client.head("/probe/t1", params={"token": tok})).status_code == 200


async def test_cookie_token(client: httpx.AsyncClient) -> None:
    tok = mint_subscribe_token(SECRET, "t1", sub="user-7")
    client.cookies.set("taskcast_token", tok)
    try:
        resp = await client.get("/probe/t1")
        assert resp.status_code == 200
        assert resp.json()["sub"] == "user-7"
        resp = await client.get("/probe/t2")
        await assert_refused(resp, 403, "Forbidden")
    finally:
        client.cookies.clear()


async def test_browser_token_must_expire(client: httpx.AsyncClient) -> None:
    tok = token({"exp": None})
    resp = await client.get("/probe/t1", params={"token": tok})
    await assert_refused(resp, 401, "Invalid or expired token")


async def test_invalid_query_token(client: httpx.AsyncClient) -> None:
    resp = await client.get("/probe/t1", params={"token": token(key=OTHER_SECRET)})
    await assert_refused(resp, 401, "Invalid or expired token")
    expired = mint_subscribe_token(SECRET, "t1", ttl_seconds=10, now=time.time() - 3600)
    resp = await client.get("/probe/t1", params={"token": expired})
    await assert_refused(resp, 401, "Invalid or expired token")


async def test_header_wins_over_query(client: httpx.AsyncClient) -> None:
    good = mint_subscribe_token(SECRET, "t1")
    resp = await client.get(
        "/probe/t1", params={"token": good}, headers={"Authorization": "Basic x"}
    )
    await assert_refused(resp, 401, "Missing Bearer token")
    header_tok = token({"sub": "from-header"})
    resp = await client.get("/probe/t1", params={"token": good}, headers=bearer(header_tok))
    assert resp.json()["sub"] == "from-header"
    assert resp.json()["scopes"] == ["*"]


async def test_browser_sources_can_be_disabled_or_renamed() -> None:
    cfg = JWTConfig(secret=SECRET, query_param=None, cookie_name="tc")
    app = probe_app(JWTAuthenticator(cfg))
    tok = mint_subscribe_token(SECRET, "t1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        resp = await c.get("/probe/t1", params={"token": tok})
        await assert_refused(resp, 401, "Missing Bearer token")
        c.cookies.set("taskcast_token", tok)
        resp = await c.get("/probe/t1")
        await assert_refused(resp, 401, "Missing Bearer token")
        c.cookies.clear()
        c.cookies.set("tc", tok)
        assert (await c.get("/probe/t1")).status_code == 200


async def test_subscribe_token_round_trip_with_issuer_and_audience() -> None:
    cfg = JWTConfig(secret=SECRET, issuer="me", audience="taskcast")
    auth = JWTAuthenticator(cfg)
    tok = mint_subscribe_token(SECRET, "t1", issuer="me", audience="taskcast")
    claims = await auth.verify(tok)
    assert claims["taskIds"] == ["t1"]
    assert claims["scope"] == ["event:subscribe"]
    assert claims["exp"] - claims["iat"] == 300
    assert isinstance(claims["jti"], str)


async def test_header_token_may_carry_full_scopes(client: httpx.AsyncClient) -> None:
    tok = mint_token(SECRET, scope=["event:publish"], task_ids=["t1"], ttl_seconds=60)
    resp = await client.post("/probe/t1?scope=event:publish", headers=bearer(tok))
    assert resp.status_code == 200


async def test_authenticator_mode_is_jwt() -> None:
    assert JWTAuthenticator(JWTConfig(secret=SECRET)).mode == "jwt"


async def test_base_authenticator_refuses() -> None:
    app = probe_app(Authenticator())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        await assert_refused(await c.get("/probe/t1"), 401, "Unauthorized")
