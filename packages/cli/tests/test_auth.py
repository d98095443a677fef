"""Authentication settings reach the application: jwt, custom, service keys, admin tokens."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from typer.testing import CliRunner

from taskcast.cli import SettingsError, app, build, load_settings, resolve_settings
from taskcast.server import AuthContext, Authenticator

pytestmark = pytest.mark.anyio

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


@asynccontextmanager
async def client_for(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    built = build(settings)
    await built.engine.start()
    try:
        transport = httpx.ASGITransport(app=built.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client
    finally:
        await built.engine.stop()


def settings_of(file: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    data = {"storage": "memory", **file}
    return resolve_settings(file=(Path("taskcast.config.yaml"), data), environ=env or {})


async def test_jwt_mode_from_the_environment() -> None:
    settings = settings_of({}, {"TASKCAST_AUTH_MODE": "jwt", "TASKCAST_JWT_SECRET": SECRET})
    async with client_for(settings) as client:
        assert (await client.post("/tasks", json={})).status_code == 401
        token = pyjwt.encode({"sub": "me", "scope": ["*"]}, SECRET, algorithm="HS256")
        ok = await client.post("/tasks", json={}, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 201


async def test_trusted_services_are_checked_first() -> None:
    settings = settings_of(
        {
            "auth": {"mode": "jwt", "jwt": {"secret": SECRET, "issuer": "me", "audience": "x"}},
            "trustedServices": [{"name": "svc", "key": "k3y", "scope": ["task:create"]}],
        }
    )
    async with client_for(settings) as client:
        ok = await client.post("/tasks", json={}, headers={"X-Taskcast-Service-Key": "k3y"})
        assert ok.status_code == 201
        bad = await client.post("/tasks", json={}, headers={"X-Taskcast-Service-Key": "nope"})
        assert bad.status_code == 401


async def test_custom_function_from_a_python_config(clean_env: Path) -> None:
    (clean_env / "taskcast.config.py").write_text(
        "def check(request):\n"
        "    if request.headers.get('x-api-key') == 'let-me-in':\n"
        "        return {'sub': 'robot', 'scope': ['*']}\n"
        "    return None\n"
        "config = {'storage': 'memory', 'auth': {'mode': 'custom'}, 'authenticator': check}\n"
    )
    async with client_for(load_settings(environ={})) as client:
        assert (await client.post("/tasks", json={})).status_code == 401
        ok = await client.post("/tasks", json={}, headers={"x-api-key": "let-me-in"})
        assert ok.status_code == 201


async def test_custom_function_by_import_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cli_test_auth_mod.py").write_text(
        "async def allow(request):\n    return {'sub': 'x', 'scope': ['*']}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = settings_of({"auth": {"mode": "custom", "custom": "cli_test_auth_mod:allow"}})
    try:
        async with client_for(settings) as client:
            assert (await client.post("/tasks", json={})).status_code == 201
    finally:
        sys.modules.pop("cli_test_auth_mod", None)


class _Header(Authenticator):
    mode = "custom"

    async def authenticate(self, request: Any) -> AuthContext:
        return AuthContext(sub="header")


async def test_authenticator_instance_with_services() -> None:
    base = settings_of(
        {
            "auth": {"mode": "custom"},
            "trustedServices": [{"name": "svc", "key": "k", "scope": ["*"], "taskIds": "*"}],
        }
    )
    settings = base.model_copy(update={"extras": {"authenticator": _Header()}})
    async with client_for(settings) as client:
        assert (await client.post("/tasks", json={})).status_code == 201
        bad = await client.post("/tasks", json={}, headers={"X-Taskcast-Service-Key": "no"})
        assert bad.status_code == 401
    alone = settings_of({"auth": {"mode": "custom"}}).model_copy(
        update={"extras": {"authenticator": _Header()}}
    )
    assert isinstance(build(alone).app.state.authenticator, _Header)


def test_authenticator_mistakes() -> None:
    with_mode_none = settings_of({}).model_copy(update={"extras": {"authenticator": _Header()}})
    with pytest.raises(SettingsError, match=r"auth\.mode is none; set auth\.mode to custom"):
        build(with_mode_none)
    not_callable = settings_of({"auth": {"mode": "custom"}}).model_copy(
        update={"extras": {"authenticator": 42}}
    )
    with pytest.raises(SettingsError, match=r"expected a function or a taskcast\.server"):
        build(not_callable)
    with pytest.raises(SettingsError, match=r"^invalid auth settings: "):
        build(settings_of({"auth": {"mode": "custom"}}))
    with pytest.raises(SettingsError, match=r"^invalid auth settings: JWT secret is 5 bytes"):
        build(settings_of({"auth": {"mode": "jwt", "jwt": {"secret": "short"}}}))


def test_short_secret_is_exit_2_in_one_line(clean_env: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["--storage", "memory", "--port", "0"],
        env={"TASKCAST_AUTH_MODE": "jwt", "TASKCAST_JWT_SECRET": "short"},
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("taskcast: invalid auth settings: JWT secret is 5 bytes")
    assert result.stderr.count("\n") == 1


async def test_admin_token_exchange() -> None:
    settings = settings_of(
        {"adminApi": True, "adminToken": "adm", "auth": {"mode": "jwt", "jwt": {"secret": SECRET}}}
    )
    async with client_for(settings) as client:
        denied = await client.post("/admin/token", json={"adminToken": "wrong"})
        assert denied.status_code == 401
        issued = await client.post("/admin/token", json={"adminToken": "adm"})
        assert issued.status_code == 200
        token = issued.json()["token"]
        assert pyjwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "admin"
        ok = await client.post("/tasks", json={}, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 201
    async with client_for(settings_of({})) as client:
        off = await client.post("/admin/token", json={"adminToken": "adm"})
        assert (off.status_code, off.json()) == (404, {"error": "Not found"})


async def test_admin_token_limits_from_file_and_environment() -> None:
    base = {
        "adminApi": True,
        "adminToken": "adm",
        "auth": {"mode": "jwt", "jwt": {"secret": SECRET}},
    }
    async with client_for(settings_of(base)) as client:
        # Defaults: a 24 h cap, and 10 failures per minute before 429.
        capped = await client.post("/admin/token", json={"adminToken": "adm", "expiresIn": 86_401})
        assert (capped.status_code, capped.json()) == (
            400,
            {"error": "expiresIn must be at most 86400 seconds"},
        )
        codes = [
            (await client.post("/admin/token", json={"adminToken": "x"})).status_code
            for _ in range(11)
        ]
        assert codes == [401] * 10 + [429]
    file = {**base, "adminTokenMaxExpiresIn": 120, "adminTokenFailureWindowSeconds": 30}
    env = {"TASKCAST_ADMIN_TOKEN_MAX_FAILURES": "2", "TASKCAST_ADMIN_TOKEN_MAX_CLIENTS": "5"}
    async with client_for(settings_of(file, env)) as client:
        issued = await client.post("/admin/token", json={"adminToken": "adm"})
        claims = pyjwt.decode(issued.json()["token"], SECRET, algorithms=["HS256"])
        assert claims["exp"] - claims["iat"] == 120
        for expected in (401, 401, 429):
            resp = await client.post("/admin/token", json={"adminToken": "x"})
            assert resp.status_code == expected
        assert 1 <= int(resp.headers["Retry-After"]) <= 30
