"""``mint_subscribe_token``: the server's claims, accepted by a JWT-configured server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from taskcast.server_sdk import SUBSCRIBE_SCOPE, mint_subscribe_token

pytestmark = pytest.mark.anyio

SECRET = "k" * 32


def test_claims_match_the_servers_token() -> None:
    from taskcast.server import mint_subscribe_token as server_mint

    ours = mint_subscribe_token(
        SECRET, "t1", 60, sub="u1", issuer="https://iss", audience=["a", "b"], now=1000
    )
    theirs = server_mint(
        SECRET, "t1", 60, sub="u1", issuer="https://iss", audience=["a", "b"], now=1000
    )
    options: Any = {"verify_exp": False, "verify_aud": False}
    mine = jwt.decode(ours, SECRET, algorithms=["HS256"], options=options)
    reference = jwt.decode(theirs, SECRET, algorithms=["HS256"], options=options)
    assert set(mine) == set(reference)
    assert {k: v for k, v in mine.items() if k != "jti"} == {
        k: v for k, v in reference.items() if k != "jti"
    }
    assert mine == {
        "jti": mine["jti"],
        "scope": [SUBSCRIBE_SCOPE],
        "taskIds": ["t1"],
        "iat": 1000,
        "exp": 1060,
        "sub": "u1",
        "iss": "https://iss",
        "aud": ["a", "b"],
    }
    assert jwt.get_unverified_header(ours) == {"alg": "HS256", "typ": "JWT"}


@pytest.mark.parametrize(("algorithm", "size"), [("HS384", 48), ("HS512", 64)])
def test_other_hmac_algorithms(algorithm: str, size: int) -> None:
    secret = b"x" * size
    token = mint_subscribe_token(secret, "t", algorithm=algorithm, audience="one")
    claims = jwt.decode(token, secret, algorithms=[algorithm], audience="one")
    assert claims["taskIds"] == ["t"] and claims["aud"] == "one"
    assert claims["exp"] - claims["iat"] == 300
    # Two tokens for the same task differ (jti), so a leaked one can be told apart.
    assert mint_subscribe_token(secret, "t", algorithm=algorithm) != mint_subscribe_token(
        secret, "t", algorithm=algorithm
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((SECRET, ""), {}, "task_id"),
        ((SECRET, "t", 0), {}, "ttl_seconds"),
        ((SECRET, "t"), {"algorithm": "RS256"}, "algorithm"),
        ((b"", "t"), {}, "must not be empty"),
        (("short", "t"), {}, "needs at least 32"),
    ],
)
def test_bad_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mint_subscribe_token(*args, **kwargs)


def test_weak_keys_only_on_request() -> None:
    token = mint_subscribe_token("short", "t", allow_weak_keys=True, ttl_seconds=0.5)
    options: Any = {"verify_signature": False}
    claims = jwt.decode(token, options=options)
    assert claims["exp"] - claims["iat"] == 1


@pytest.fixture
async def jwt_server() -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    from taskcast.core import MemoryShortTermStore, TaskEngine
    from taskcast.server import JWTConfig, build_authenticator, create_app

    engine = TaskEngine(short_term=MemoryShortTermStore())
    authenticator = build_authenticator(
        "jwt", jwt=JWTConfig(secret=SECRET, issuer="https://iss", audience=("web",))
    )
    app = create_app(engine, authenticator=authenticator)
    transport = httpx.ASGITransport(app=app)
    await engine.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client, engine
    finally:
        await engine.stop()


async def test_the_server_accepts_it_in_the_query(
    jwt_server: tuple[httpx.AsyncClient, Any],
) -> None:
    from taskcast.core import TaskInput

    client, engine = jwt_server
    task = await engine.create_task(TaskInput(type="t"))
    other = await engine.create_task(TaskInput(type="t"))
    await engine.transition_task(task.id, "running")
    await engine.transition_task(task.id, "completed")
    token = mint_subscribe_token(SECRET, task.id, issuer="https://iss", audience="web")

    # A finished task's stream replays and ends, so the ASGI transport can read it whole.
    stream = await client.get(f"/tasks/{task.id}/events", params={"token": token})
    assert stream.status_code == 200
    assert "event: taskcast.done" in stream.text
    header = await client.get(
        f"/tasks/{task.id}/events", headers={"Authorization": f"Bearer {token}"}
    )
    assert header.status_code == 200
    # Only that task, and only reading.
    assert (
        await client.get(f"/tasks/{other.id}/events", params={"token": token})
    ).status_code == 403
    write = await client.post(
        f"/tasks/{task.id}/events",
        json={"type": "x", "level": "info"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert write.status_code == 403
    # A token for another issuer is refused.
    foreign = mint_subscribe_token(SECRET, task.id, issuer="https://evil", audience="web")
    assert (
        await client.get(f"/tasks/{task.id}/events", params={"token": foreign})
    ).status_code == 401
