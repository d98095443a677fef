"""``POST /admin/token``: exchange the admin token for a JWT (reference §7.5).

Not behind the auth dependency: the admin token is the credential. The dashboard and the
CLI's ``node`` entries with ``tokenType: admin`` use it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from taskcast.core import ConfigError

from ._jwt import HMAC_ALGORITHMS, JWTConfig
from ._tokens import mint_token

__all__ = ["AdminConfig", "admin_router"]

logger = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True, kw_only=True)
class AdminConfig:
    """The admin token exchange."""

    enabled: bool = False
    """Serve ``POST /admin/token``; when off it answers 404."""
    admin_token: str | None = field(default=None, repr=False)
    """The shared admin secret; generated at startup (and logged once) when enabled and unset."""
    signing_key: str | bytes | None = field(default=None, repr=False)
    """Key that signs the issued JWT (the ``jwt`` mode secret). Without it the exchange
    answers ``{"token": ""}`` as the original does outside ``jwt`` mode."""
    algorithm: str = "HS256"
    issuer: str | None = None
    """``iss`` written into issued tokens, so a server checking ``iss`` accepts them."""
    audience: str | None = None
    """``aud`` written into issued tokens."""
    default_expires_in: int = 86_400
    """Lifetime in seconds when the request gives no ``expiresIn``."""
    max_expires_in: float | None = None
    """Upper bound on a requested ``expiresIn`` (``None``: no bound, as the original)."""

    def __post_init__(self) -> None:
        if self.default_expires_in <= 0:
            raise ConfigError("default_expires_in must be positive")

    @classmethod
    def for_jwt(
        cls, jwt_config: JWTConfig | None, *, enabled: bool, admin_token: str | None = None
    ) -> AdminConfig:
        """Sign with the ``jwt`` mode's secret, algorithm, issuer and audience (when HMAC)."""
        if jwt_config is None or not jwt_config.secret:
            return cls(enabled=enabled, admin_token=admin_token)
        algorithm = jwt_config.algorithm or "HS256"
        audience = jwt_config.audience
        return cls(
            enabled=enabled,
            admin_token=admin_token,
            signing_key=jwt_config.secret,
            algorithm=algorithm if algorithm in HMAC_ALGORITHMS else "HS256",
            issuer=jwt_config.issuer,
            audience=audience[0] if isinstance(audience, tuple) else audience,
            # The server checks the secret length itself; signing must not be stricter.
        )

    def with_generated_token(self) -> AdminConfig:
        """This config, with a random admin token when enabled and none is set."""
        if not self.enabled or self.admin_token:
            return self
        return replace(self, admin_token=secrets.token_urlsafe(32))


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def admin_router(config: AdminConfig) -> APIRouter:
    """A router serving ``POST /admin/token``; include it in the app.

    Answers: 404 ``Not found`` when disabled; 400 ``Invalid request body`` for a body that is
    not a JSON object or has a bad ``scopes``/``expiresIn``; 401 ``Invalid admin token``;
    200 ``{"token", "expiresAt"}`` (``expiresAt`` in Unix seconds). Issued claims:
    ``{"sub": "admin", "scope": scopes (default ["*"]), "taskIds": "*", "iat", "exp"}``.
    """
    if config.enabled and not config.admin_token:
        config = config.with_generated_token()
        logger.warning("[taskcast] Admin token (auto-generated): %s", config.admin_token)
    expected = _digest(config.admin_token) if config.admin_token else None
    router = APIRouter()

    @router.post(
        "/admin/token",
        include_in_schema=config.enabled,
        summary="Exchange the admin token for a JWT",
        tags=["admin"],
        responses={
            400: {"description": "Invalid request body"},
            401: {"description": "Invalid admin token"},
            404: {"description": "Admin API disabled"},
        },
    )
    async def exchange_admin_token(request: Request) -> JSONResponse:
        if not config.enabled or expected is None:
            return _error(404, "Not found")
        try:
            body: Any = json.loads(await request.body())
        except ValueError:
            return _error(400, "Invalid request body")
        if not isinstance(body, dict):
            return _error(400, "Invalid request body")
        scopes = body.get("scopes", ["*"])
        default = config.default_expires_in
        if config.max_expires_in is not None:
            default = min(default, int(config.max_expires_in))
        expires_in = body.get("expiresIn", default)
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            return _error(400, "Invalid request body")
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not math.isfinite(expires_in)
            or expires_in <= 0
            or (config.max_expires_in is not None and expires_in > config.max_expires_in)
        ):
            return _error(400, "Invalid request body")
        presented = body.get("adminToken")
        # Constant time: compare fixed-length digests so neither content nor length leaks.
        if not isinstance(presented, str) or not hmac.compare_digest(_digest(presented), expected):
            return _error(401, "Invalid admin token")
        now = int(time.time())
        lifetime = max(1, int(expires_in))
        expires_at = now + lifetime
        token = ""
        if config.signing_key:
            token = mint_token(
                config.signing_key,
                scope=scopes,
                task_ids=None,
                ttl_seconds=lifetime,
                algorithm=config.algorithm,
                sub="admin",
                issuer=config.issuer,
                audience=config.audience,
                now=now,
                allow_weak_keys=True,
            )
        return JSONResponse({"token": token, "expiresAt": expires_at})

    return router
