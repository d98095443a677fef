"""Browser subscribe tokens, minted by a backend without the server package.

A browser's ``EventSource`` cannot send an ``Authorization`` header; a Taskcast server in
``jwt`` mode therefore also accepts a token in the ``token`` query parameter (or the
``taskcast_token`` cookie) on GET requests, capped to reading streams. This module signs
such a token with the server's shared HMAC secret.

It writes the JWT itself (RFC 7519 compact form, HMAC-SHA2 from :mod:`hmac`) instead of
depending on PyJWT: the SDK stays dependency-light, and an HMAC JWT is a few lines. The
claims are exactly those of ``taskcast.server.mint_subscribe_token``. Servers verifying
with a public key (RS*/ES*/EdDSA) need tokens signed by the matching private key; mint those
with PyJWT or your identity provider, using the same claims.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["SUBSCRIBE_SCOPE", "mint_subscribe_token"]

SUBSCRIBE_SCOPE = "event:subscribe"

_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output (the server
# refuses shorter secrets too).
_MIN_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def mint_subscribe_token(
    secret: str | bytes,
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
    """A short-lived JWT that may only subscribe to ``task_id``'s event stream.

    Claims: ``scope: ["event:subscribe"]``, ``taskIds: [task_id]``, ``iat``, ``exp``
    (``iat + ttl_seconds``), a random ``jti``, and ``sub``/``iss``/``aud`` when given (set
    ``issuer``/``audience`` when the server checks them). Hand it to the browser, which
    appends ``?token=<it>`` to the stream URL (see ``taskcast.widget.WidgetConfig.token``).

    Args:
        secret: The server's ``auth.jwt.secret``.
        task_id: The one task the token may follow.
        ttl_seconds: Lifetime. Keep it short: the token travels in a URL. A browser that
            reconnects after it expired is refused (401), so cover the task's expected
            duration or render a fresh page.
        algorithm: ``HS256``, ``HS384`` or ``HS512``, as the server is configured.
        now: Issue time in Unix seconds (default: now).
        allow_weak_keys: Sign with a secret shorter than RFC 7518 asks (the server refuses
            such secrets unless it is told otherwise too).

    Raises:
        ValueError: an empty ``task_id`` or secret, a non-positive ``ttl_seconds``, an
            algorithm other than HS256/384/512, or a too-short secret.
    """
    if not task_id:
        raise ValueError("task_id must not be empty")
    if not ttl_seconds > 0:
        raise ValueError("ttl_seconds must be positive")
    digest = _HASHES.get(algorithm)
    if digest is None:
        raise ValueError(f"algorithm must be one of HS256, HS384, HS512, got {algorithm!r}")
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the secret must not be empty")
    if len(key) < _MIN_KEY_BYTES[algorithm] and not allow_weak_keys:
        raise ValueError(
            f"JWT secret is {len(key)} bytes; {algorithm} needs at least "
            f"{_MIN_KEY_BYTES[algorithm]}"
        )
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(12),
        "scope": [SUBSCRIBE_SCOPE],
        "taskIds": [task_id],
        "iat": issued,
        "exp": issued + max(1, int(ttl_seconds)),
    }
    if sub is not None:
        claims["sub"] = sub
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience if isinstance(audience, str) else list(audience)
    signing_input = _b64(_json({"alg": algorithm, "typ": "JWT"})) + "." + _b64(_json(claims))
    signature = hmac.new(key, signing_input.encode("ascii"), digest).digest()
    return signing_input + "." + _b64(signature)
