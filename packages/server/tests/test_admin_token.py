"""``POST /admin/token`` over a real socket: failed attempts are throttled per client, issued
lifetimes are capped, and the table of clients stays bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

import httpx
import pytest

from taskcast.core import ConfigError, MemoryShortTermStore, TaskEngine
from taskcast.server import AdminConfig, admin_router, create_app
from taskcast.server._jwt import JWTAuthenticator, JWTConfig

pytestmark = pytest.mark.anyio

SECRET = "admin-throttle-secret-long-enough-for-hs256"
ADMIN = "the-admin-token-0123456789abcdef"
JWT = JWTConfig(secret=SECRET)

Serve = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
def admin_server(serve_app: Serve) -> Callable[..., AbstractAsyncContextManager[str]]:
    """``async with admin_server(**AdminConfig fields) as url``: the app on uvicorn."""

    def start(**fields: Any) -> AbstractAsyncContextManager[str]:
        engine = TaskEngine(short_term=MemoryShortTermStore())
        app = create_app(engine)
        admin = AdminConfig.for_jwt(JWT, enabled=True, admin_token=ADMIN)
        app.include_router(admin_router(replace(admin, **fields)))
        return serve_app(app, engine)

    return start


def _from(url: str, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client whose connections leave from ``address`` (any 127.x address is loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=10)


async def _attempt(
    client: httpx.AsyncClient, token: str, forwarded: str | None = None, **body: Any
) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return await client.post("/admin/token", json={"adminToken": token, **body}, headers=headers)


async def test_failed_attempts_are_throttled_per_client(admin_server: Any) -> None:
    async with (
        admin_server(max_failures=3, failure_window_seconds=60) as url,
        _from(url) as attacker,
        _from(url, "127.0.0.2") as other,
    ):
        for _ in range(3):
            assert (await _attempt(attacker, "guess")).status_code == 401
        refused = await _attempt(attacker, "guess")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json() == {
            "error": "Too many failed admin token attempts; retry in "
            f"{refused.headers['Retry-After']} s"
        }
        # Locked out means locked out: even the right token is not checked, so a
        # guesser learns nothing until the window ends.
        assert (await _attempt(attacker, ADMIN)).status_code == 429
        # A malformed body is refused the same way, not parsed.
        locked = await attacker.post("/admin/token", content=b"not json")
        assert locked.status_code == 429
        # Another client is not affected.
        assert (await _attempt(other, ADMIN)).status_code == 200
        assert (await _attempt(other, "guess")).status_code == 401


async def test_concurrent_guesses_cannot_exceed_the_allowance(admin_server: Any) -> None:
    async with admin_server(max_failures=5, failure_window_seconds=60) as url, _from(url) as client:
        answers = await asyncio.gather(*(_attempt(client, f"g{i}") for i in range(40)))
        codes = sorted(r.status_code for r in answers)
        assert codes == [401] * 5 + [429] * 35


async def test_successes_are_not_throttled_and_clear_the_count(admin_server: Any) -> None:
    async with admin_server(max_failures=3, failure_window_seconds=60) as url, _from(url) as client:
        for _ in range(30):
            assert (await _attempt(client, ADMIN)).status_code == 200
        for _ in range(4):
            assert (await _attempt(client, "typo")).status_code == 401
            assert (await _attempt(client, "typo")).status_code == 401
            assert (await _attempt(client, ADMIN)).status_code == 200
        # Bad bodies do not test the token and are not counted either.
        for _ in range(5):
            bad = await _attempt(client, "guess", expiresIn=-1)
            assert bad.status_code == 400
        assert (await _attempt(client, ADMIN)).status_code == 200


async def test_lockout_ends_with_its_window(admin_server: Any) -> None:
    async with (
        admin_server(max_failures=2, failure_window_seconds=0.5) as url,
        _from(url) as client,
    ):
        for _ in range(2):
            assert (await _attempt(client, "guess")).status_code == 401
        refused = await _attempt(client, ADMIN)
        assert (refused.status_code, refused.headers["Retry-After"]) == (429, "1")
        deadline = time.monotonic() + 10
        while (answer := await _attempt(client, ADMIN)).status_code == 429:
            assert time.monotonic() < deadline, "the lockout did not end"
            await asyncio.sleep(0.05)
        assert answer.status_code == 200


async def test_clients_behind_a_trusted_proxy_and_ipv6_networks(admin_server: Any) -> None:
    # uvicorn takes the address from X-Forwarded-For when the peer is a trusted proxy
    # (127.0.0.1 by default), so each forwarded client is counted on its own.
    async with admin_server(max_failures=2, failure_window_seconds=60) as url, _from(url) as proxy:
        for _ in range(2):
            assert (await _attempt(proxy, "g", "203.0.113.7")).status_code == 401
        assert (await _attempt(proxy, ADMIN, "203.0.113.7")).status_code == 429
        assert (await _attempt(proxy, ADMIN, "203.0.113.8")).status_code == 200
        # One host usually holds a whole IPv6 /64: its addresses share one count.
        for address in ("2001:db8::1", "2001:db8::2"):
            assert (await _attempt(proxy, "g", address)).status_code == 401
        assert (await _attempt(proxy, ADMIN, "2001:db8::ffff:1")).status_code == 429
        assert (await _attempt(proxy, ADMIN, "2001:db8:0:1::1")).status_code == 200


async def test_the_client_table_is_bounded(admin_server: Any) -> None:
    async with (
        admin_server(max_failures=2, failure_window_seconds=60, max_tracked_clients=3) as url,
        _from(url) as proxy,
    ):
        for _ in range(2):
            assert (await _attempt(proxy, "g", "198.51.100.1")).status_code == 401
        assert (await _attempt(proxy, ADMIN, "198.51.100.1")).status_code == 429
        # Three newer failing clients push the oldest record out of the table.
        for n in (2, 3, 4):
            assert (await _attempt(proxy, "g", f"198.51.100.{n}")).status_code == 401
        assert (await _attempt(proxy, ADMIN, "198.51.100.1")).status_code == 200


async def test_lifetime_is_capped(admin_server: Any) -> None:
    verify = JWTAuthenticator(JWT).verify
    async with admin_server() as url, _from(url) as client:
        ten_years = 10 * 365 * 86_400
        for too_long in (86_401, 86_400.5, ten_years):
            resp = await _attempt(client, ADMIN, expiresIn=too_long)
            assert (resp.status_code, resp.json()) == (
                400,
                {"error": "expiresIn must be at most 86400 seconds"},
            )
        # Refused before the token is checked, and not counted as a failure.
        for _ in range(12):
            resp = await _attempt(client, "guess", expiresIn=ten_years)
            assert resp.status_code == 400
        resp = await _attempt(client, ADMIN, expiresIn=86_400)
        claims = await verify(resp.json()["token"])
        assert claims["exp"] - claims["iat"] == 86_400
    async with admin_server(max_expires_in=3600) as url, _from(url) as client:
        # Without expiresIn the default (24 h) is held to the cap.
        resp = await _attempt(client, ADMIN)
        claims = await verify(resp.json()["token"])
        assert claims["exp"] - claims["iat"] == 3600
        resp = await _attempt(client, ADMIN, expiresIn=3601)
        assert resp.json() == {"error": "expiresIn must be at most 3600 seconds"}


async def test_openapi_documents_the_new_answers(admin_server: Any) -> None:
    async with admin_server() as url, _from(url) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert {"400", "401", "429"} <= set(paths["/admin/token"]["post"]["responses"])


@pytest.mark.parametrize(
    "fields",
    [
        {"max_expires_in": 0},
        {"max_expires_in": 1.5},
        {"max_failures": 0},
        {"max_failures": True},
        {"failure_window_seconds": 0},
        {"failure_window_seconds": float("inf")},
        {"max_tracked_clients": 0},
    ],
)
def test_limits_must_be_positive(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        AdminConfig(**fields)
