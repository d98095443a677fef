"""Minting Taskcast JWTs: admin tokens and browser subscribe tokens.

A subscribe token is what a backend hands a browser so it can follow one task and nothing
else: claims ``{"taskIds": [task_id], "scope": ["event:subscribe"], "iat", "exp"}`` plus
optional ``sub``/``iss``/``aud``/``jti``, signed with the server's JWT key. The server
accepts it in the ``Authorization`` header, the ``token`` query parameter or the
``taskcast_token`` cookie (see :class:`~taskcast.server.JWTAuthenticator`).
"""

from __future__ import annotations

import secrets
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

from taskcast.core import ConfigError

from ._jwt import HMAC_ALGORITHMS, hmac_min_key_bytes

__all__ = ["SUBSCRIBE_SCOPE", "mint_subscribe_token", "mint_token"]

SUBSCRIBE_SCOPE = "event:subscribe"


def mint_token(
    key: str | bytes | Any,
    *,
    scope: Sequence[str],
    task_ids: Sequence[str] | None = None,
    ttl_seconds: float,
    algorithm: str = "HS256",
    sub: str | None = None,
    issuer: str | None = None,
    audience: str | Sequence[str] | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    now: float | None = None,
    allow_weak_keys: bool = False,
) -> str:
    """Sign a Taskcast JWT.

    Args:
        key: HMAC secret for ``HS*``; a PEM private key (or key object) for ``RS*``/``ES*``/
            ``EdDSA``.
        scope: Granted scopes (claim ``scope``).
        task_ids: Tasks the token may touch (claim ``taskIds``); ``None`` writes ``"*"``.
        ttl_seconds: Lifetime; ``exp = iat + ttl_seconds``.
        algorithm: Signing algorithm.
        sub: Optional subject.
        issuer: ``iss``, when the server checks one.
        audience: ``aud``, when the server checks one.
        extra_claims: More claims (they cannot override the ones above).
        now: Issue time in Unix seconds (default: the current time).
        allow_weak_keys: Sign with an HMAC secret shorter than RFC 7518 asks.

    Raises:
        ConfigError: non-positive ``ttl_seconds`` or a too-short HMAC secret.
    """
    if not ttl_seconds > 0:
        raise ConfigError("ttl_seconds must be positive")
    if algorithm in HMAC_ALGORITHMS:
        raw = key.encode() if isinstance(key, str) else key
        if not isinstance(raw, bytes) or not raw:
            raise ConfigError("An HMAC token needs a non-empty secret")
        if len(raw) < hmac_min_key_bytes(algorithm) and not allow_weak_keys:
            raise ConfigError(
                f"JWT secret is {len(raw)} bytes; {algorithm} needs at least "
                f"{hmac_min_key_bytes(algorithm)}"
            )
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = dict(extra_claims or {})
    claims.update(
        {
            "scope": list(scope),
            "taskIds": "*" if task_ids is None else list(task_ids),
            "iat": issued,
            "exp": issued + max(1, int(ttl_seconds)),
        }
    )
    if sub is not None:
        claims["sub"] = sub
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience if isinstance(audience, str) else list(audience)
    with warnings.catch_warnings():
        # Weak keys were refused above unless explicitly allowed.
        warnings.simplefilter("ignore", UserWarning)
        return jwt.encode(claims, key, algorithm=algorithm)


def mint_subscribe_token(
    secret: str | bytes | Any,
    task_id: str,
    ttl_seconds: float = 300,
    algorithm: str = "HS256",
    *,
    sub: str | None = None,
    issuer: str | None = None,
    audience: str | Sequence[str] | None = None,
    now: float | None = None,
    allow_weak_keys: bool = False,
) -> str:
    """A short-lived token that may only subscribe to ``task_id``'s event stream.

    Claims: ``taskIds: [task_id]``, ``scope: ["event:subscribe"]``, ``iat``, ``exp``, a
    random ``jti`` and the optional ``sub``/``iss``/``aud``. Hand it to a browser, which
    sends it as ``Authorization: Bearer``, ``?token=`` or the ``taskcast_token`` cookie.
    """
    if not task_id:
        raise ConfigError("task_id must not be empty")
    return mint_token(
        secret,
        scope=[SUBSCRIBE_SCOPE],
        task_ids=[task_id],
        ttl_seconds=ttl_seconds,
        algorithm=algorithm,
        sub=sub,
        issuer=issuer,
        audience=audience,
        extra_claims={"jti": secrets.token_urlsafe(12)},
        now=now,
        allow_weak_keys=allow_weak_keys,
    )
