"""``POST /admin/token``: exchange the admin token for a JWT (reference §7.5).

Not behind the auth dependency: the admin token is the credential. The dashboard and the
CLI's ``node`` entries with ``tokenType: admin`` use it. Unlike the original, failed attempts
are throttled per client (429 with ``Retry-After``) and the lifetime of an issued token is
capped (an ``expiresIn`` above the cap is refused with 400 rather than clamped, so a caller
never holds a token shorter-lived than it asked for without knowing).
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

from ._common import request_body
from ._jwt import HMAC_ALGORITHMS, JWTConfig
from ._schemas import ErrorBody
from ._service_schemas import AdminTokenOut
from ._throttle import FailureThrottle, client_key
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
    """Lifetime in seconds when the request gives no ``expiresIn`` (at most
    :attr:`max_expires_in`)."""
    max_expires_in: int = 86_400
    """Longest lifetime in seconds a request may ask for; a larger ``expiresIn`` is a 400.
    The original had no bound."""
    max_failures: int = 10
    """Failed attempts (wrong or missing admin token) one client may make within
    :attr:`failure_window_seconds`; further attempts get 429 until the window ends."""
    failure_window_seconds: float = 60.0
    """The window, starting at a client's first failure, in which failures are counted."""
    max_tracked_clients: int = 10_000
    """Clients whose failures are remembered (per process); past this many, the one that
    failed longest ago is forgotten."""

    def __post_init__(self) -> None:
        for name in ("default_expires_in", "max_expires_in", "max_failures"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not self.failure_window_seconds > 0 or not math.isfinite(self.failure_window_seconds):
            raise ConfigError(
                f"failure_window_seconds must be positive, got {self.failure_window_seconds!r}"
            )
        if isinstance(self.max_tracked_clients, bool) or self.max_tracked_clients <= 0:
            raise ConfigError(
                f"max_tracked_clients must be a positive integer, got {self.max_tracked_clients!r}"
            )

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

    Answers: 404 ``Not found`` when disabled; 429 (with ``Retry-After``) to a client that
    failed :attr:`AdminConfig.max_failures` times within the window; 400 ``Invalid request
    body`` for a body that is not a JSON object or has a bad ``scopes``/``expiresIn``; 400
    ``expiresIn must be at most N seconds`` above the cap; 401 ``Invalid admin token``;
    200 ``{"token", "expiresAt"}`` (``expiresAt`` in Unix seconds). Issued claims:
    ``{"sub": "admin", "scope": scopes (default ["*"]), "taskIds": "*", "iat", "exp"}``.
    """
    if config.enabled and not config.admin_token:
        config = config.with_generated_token()
        logger.warning("[taskcast] Admin token (auto-generated): %s", config.admin_token)
    expected = _digest(config.admin_token) if config.admin_token else None
    throttle = FailureThrottle(
        max_failures=config.max_failures,
        window_seconds=config.failure_window_seconds,
        max_clients=config.max_tracked_clients,
    )
    router = APIRouter()

    @router.post(
        "/admin/token",
        include_in_schema=config.enabled,
        summary="Exchange the admin token for a JWT",
        tags=["admin"],
        responses={
            200: {"model": AdminTokenOut, "description": "A JWT"},
            400: {
                "model": ErrorBody,
                "description": "Invalid request body, or expiresIn above the maximum",
            },
            401: {"model": ErrorBody, "description": "Invalid admin token"},
            404: {"model": ErrorBody, "description": "Admin API disabled"},
            429: {"model": ErrorBody, "description": "Too many failed attempts from this client"},
        },
        openapi_extra=request_body({"$ref": "#/components/schemas/AdminTokenBody"}),
    )
    async def exchange_admin_token(request: Request) -> JSONResponse:
        if not config.enabled or expected is None:
            return _error(404, "Not found")
        raw = await request.body()
        # From here to the answer nothing awaits: concurrent attempts of one client cannot
        # all pass the check before the first failure is counted.
        client = client_key(request.client.host if request.client else None)
        wait = throttle.retry_after(client)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            return JSONResponse(
                {"error": f"Too many failed admin token attempts; retry in {seconds} s"},
                status_code=429,
                headers={"Retry-After": str(seconds)},
            )
        try:
            body: Any = json.loads(raw)
        except ValueError:
            return _error(400, "Invalid request body")
        if not isinstance(body, dict):
            return _error(400, "Invalid request body")
        scopes = body.get("scopes", ["*"])
        expires_in = body.get("expiresIn", min(config.default_expires_in, config.max_expires_in))
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            return _error(400, "Invalid request body")
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not math.isfinite(expires_in)
            or expires_in <= 0
        ):
            return _error(400, "Invalid request body")
        if expires_in > config.max_expires_in:
            return _error(400, f"expiresIn must be at most {config.max_expires_in} seconds")
        presented = body.get("adminToken")
        # Constant time: compare fixed-length digests so neither content nor length leaks.
        if not isinstance(presented, str) or not hmac.compare_digest(_digest(presented), expected):
            if throttle.failed(client):
                logger.warning(
                    "admin token: %d failed attempts from %s within %g s; refusing it until "
                    "the window ends",
                    config.max_failures,
                    client,
                    config.failure_window_seconds,
                )
            return _error(401, "Invalid admin token")
        throttle.succeeded(client)
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
