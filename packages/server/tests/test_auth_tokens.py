"""Minting admin and browser subscribe tokens."""

from __future__ import annotations

import jwt
import pytest

from taskcast.core import ConfigError
from taskcast.server._tokens import SUBSCRIBE_SCOPE, mint_subscribe_token, mint_token

SECRET = "token-minting-secret-long-enough-for-hs256"


def decode(token: str, **kwargs: object) -> dict[str, object]:
    return jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False}, **kwargs)  # type: ignore[arg-type]


def test_subscribe_token_claims() -> None:
    token = mint_subscribe_token(SECRET, "task-1", ttl_seconds=90, sub="u", now=1_000)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["taskIds"] == ["task-1"]
    assert claims["scope"] == [SUBSCRIBE_SCOPE]
    assert (claims["iat"], claims["exp"], claims["sub"]) == (1_000, 1_090, "u")
    assert len(str(claims["jti"])) >= 16
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    again = mint_subscribe_token(SECRET, "task-1", ttl_seconds=90, sub="u", now=1_000)
    assert again != token  # a fresh jti every time


def test_mint_token_claims() -> None:
    claims = decode(
        mint_token(
            SECRET,
            scope=["event:publish"],
            ttl_seconds=0.5,
            issuer="i",
            audience=["a", "b"],
            extra_claims={"workerId": "w", "scope": "overridden?"},
        )
    )
    assert claims["taskIds"] == "*"
    assert claims["scope"] == ["event:publish"]  # extras cannot override
    assert claims["exp"] == claims["iat"] + 1  # type: ignore[operator]
    assert (claims["iss"], claims["aud"], claims["workerId"]) == ("i", ["a", "b"], "w")
    assert "sub" not in claims
    single = decode(mint_token(SECRET, scope=[], ttl_seconds=5, audience="a"))
    assert single["aud"] == "a"


def test_other_hmac_algorithms() -> None:
    long_secret = SECRET * 2
    token = mint_token(long_secret, scope=["*"], ttl_seconds=5, algorithm="HS512")
    assert jwt.decode(token, long_secret, algorithms=["HS512"])["scope"] == ["*"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": -1}, "ttl_seconds"),
        ({"key": "short"}, "needs at least 32"),
        ({"key": ""}, "non-empty secret"),
        ({"key": SECRET, "algorithm": "HS384"}, "needs at least 48"),
    ],
)
def test_mint_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"key": SECRET, "scope": ["*"], "ttl_seconds": 5, **kwargs}
    with pytest.raises(ConfigError, match=message):
        mint_token(**args)  # type: ignore[arg-type]


def test_subscribe_token_needs_a_task() -> None:
    with pytest.raises(ConfigError, match="task_id"):
        mint_subscribe_token(SECRET, "")
