"""Mode ``jwt``: verify Bearer tokens with PyJWT.

The accepted algorithms always come from :class:`JWTConfig`, never from the token header,
so ``alg: none`` and key-confusion tricks (an HMAC token "signed" with a public key) are
refused. Keys: an HMAC secret, a public key (inline PEM or file), or a JWKS URL whose key
set is cached and fetched in a worker thread so the event loop never blocks on it.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from fastapi import Request

from taskcast.core import ConfigError

from ._auth import AuthContext, Authenticator, AuthError, context_from_claims

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "JWTAuthenticator",
    "JWTConfig",
    "hmac_min_key_bytes",
]

logger = logging.getLogger(__name__)

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
ASYMMETRIC_ALGORITHMS = (*_RSA_ALGORITHMS, *_EC_ALGORITHMS.values(), "EdDSA")
_MIN_RSA_BITS = 2048
# A token longer than this is refused before any parsing: nothing legitimate is this big,
# and decoding costs memory and CPU before the signature is checked.
_MAX_TOKEN_CHARS = 16_384

_MISSING = "Missing Bearer token"
_INVALID = "Invalid or expired token"


def hmac_min_key_bytes(algorithm: str) -> int:
    """RFC 7518 §3.2: an HMAC key must be at least as long as the hash output."""
    return {"HS256": 32, "HS384": 48, "HS512": 64}[algorithm]


@dataclass(slots=True, frozen=True, kw_only=True)
class JWTConfig:
    """How ``jwt`` mode verifies tokens. Configure exactly one key source.

    Precedence when several are set (as the original): ``secret``, ``public_key``,
    ``public_key_file``, ``jwks_url``.
    """

    algorithm: str | None = None
    """Signing algorithm. Default: ``HS256`` with a secret, inferred from the key type for a
    public key (RSA ``RS256``, P-256 ``ES256``, P-384 ``ES384``, P-521 ``ES512``, Ed25519
    ``EdDSA``), ``RS256`` for JWKS."""
    algorithms: tuple[str, ...] | None = None
    """Every accepted algorithm, when more than ``algorithm`` (e.g. during a migration).
    All must fit the key: HMAC with a secret, asymmetric otherwise."""
    secret: str | bytes | None = None
    """HMAC secret (UTF-8). At least 32/48/64 bytes for HS256/384/512."""
    public_key: str | bytes | None = None
    """PEM public key (SPKI) or certificate; literal ``\\n`` sequences are accepted."""
    public_key_file: str | Path | None = None
    """File holding the PEM public key or certificate."""
    jwks_url: str | None = None
    """JWKS endpoint of an identity provider; tokens are matched to keys by ``kid``."""
    issuer: str | None = None
    """Required ``iss`` when set."""
    audience: str | tuple[str, ...] | None = None
    """Required ``aud`` (any of) when set; when unset the ``aud`` claim is not checked."""
    leeway_seconds: float = 30.0
    """Clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""
    require_exp: bool = False
    """Refuse header tokens without ``exp`` (the original accepts them). Browser tokens
    (query/cookie) always need ``exp``."""
    query_param: str | None = "token"
    """Query parameter carrying a browser subscribe token on GET requests; ``None`` disables."""
    cookie_name: str | None = "taskcast_token"
    """Cookie carrying a browser subscribe token on GET requests; ``None`` disables."""
    browser_scopes: frozenset[str] = frozenset({"event:subscribe"})
    """Upper bound on the scopes of a token taken from the query string or a cookie."""
    jwks_cache_seconds: float = 300.0
    """How long a fetched key set is used before it is fetched again."""
    jwks_cooldown_seconds: float = 30.0
    """Least time between two fetches (an unknown ``kid`` forces one), so forged ``kid``s
    cannot make every request hit the identity provider."""
    jwks_timeout_seconds: float = 5.0
    """HTTP timeout for fetching the key set."""
    allow_weak_keys: bool = False
    """Accept HMAC secrets shorter than RFC 7518 asks and RSA keys under 2048 bits."""

    def __post_init__(self) -> None:
        for name in ("leeway_seconds", "jwks_cache_seconds", "jwks_cooldown_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0")
        if not (math.isfinite(self.jwks_timeout_seconds) and self.jwks_timeout_seconds > 0):
            raise ConfigError("jwks_timeout_seconds must be positive")


class JWTAuthenticator(Authenticator):
    """Mode ``jwt``: ``Authorization: Bearer <token>``, or a browser token on GET requests.

    Token sources, first found wins: the ``Authorization`` header (must be ``Bearer …``),
    then — only for GET/HEAD and only without an ``Authorization`` header — the
    ``token`` query parameter and the ``taskcast_token`` cookie. A token from the query or
    a cookie must carry ``exp`` and is capped at :attr:`JWTConfig.browser_scopes`, so a
    token leaked through a URL or a cookie can at most read a stream.

    Claims: ``sub``, ``taskIds`` (``"*"`` or a list; absent = all), ``scope`` (list or
    space-separated string; absent = none), anything else kept in ``AuthContext.claims``.

    Raises :class:`ConfigError` at construction when the configuration cannot work.
    """

    mode = "jwt"

    def __init__(self, config: JWTConfig) -> None:
        self.config = config
        self._jwks: _JWKSCache | None = None
        self._key: Any
        self.algorithms: tuple[str, ...]
        if config.secret is not None and config.secret != "":
            secret = config.secret.encode() if isinstance(config.secret, str) else config.secret
            algorithms = _accepted(config, "HS256")
            for alg in algorithms:
                if alg not in HMAC_ALGORITHMS:
                    raise ConfigError(f"JWT algorithm {alg} cannot be used with a secret")
                if len(secret) < hmac_min_key_bytes(alg) and not config.allow_weak_keys:
                    raise ConfigError(
                        f"JWT secret is {len(secret)} bytes; {alg} needs at least "
                        f"{hmac_min_key_bytes(alg)} (or set allow_weak_keys)"
                    )
            self._key = secret
        elif config.public_key or config.public_key_file:
            pem = _read_pem(config)
            key = _load_public_key(pem)
            self._key = key
            algorithms = _accepted(config, _default_algorithm(key))
            allowed = _algorithms_for(key)
            for alg in algorithms:
                if alg not in allowed:
                    raise ConfigError(f"JWT algorithm {alg} does not fit the configured public key")
            if (
                isinstance(key, rsa.RSAPublicKey)
                and key.key_size < _MIN_RSA_BITS
                and not config.allow_weak_keys
            ):
                raise ConfigError(f"JWT RSA key is {key.key_size} bits; at least 2048 required")
        elif config.jwks_url:
            algorithms = _accepted(config, "RS256")
            for alg in algorithms:
                if alg not in ASYMMETRIC_ALGORITHMS:
                    raise ConfigError(f"JWT algorithm {alg} cannot be used with a JWKS URL")
            self._key = None
            self._jwks = _JWKSCache(config)
        else:
            raise ConfigError(
                "JWT auth needs a secret, a public key, a public key file or a JWKS URL"
            )
        self.algorithms = algorithms
        self._options: dict[str, Any] = {
            "require": ["exp"] if config.require_exp else [],
            # PyJWT refuses any token with ``aud`` when no audience is configured; the
            # original (jose) ignores ``aud`` then, and so do we.
            "verify_aud": config.audience is not None,
        }
        self._audience = (
            list(config.audience) if isinstance(config.audience, tuple) else config.audience
        )

    async def authenticate(self, request: Request) -> AuthContext:
        token, source = self._extract(request)
        claims = await self.verify(token)
        try:
            ctx = context_from_claims(claims, source="jwt")
        except ValueError as exc:
            logger.info("JWT refused: %s", exc)
            raise AuthError(401, _INVALID) from None
        if source == "header":
            return ctx
        if "exp" not in claims:
            logger.info("JWT refused: a %s token must carry exp", source)
            raise AuthError(401, _INVALID)
        browser = self.config.browser_scopes
        scopes = browser if "*" in ctx.scopes else ctx.scopes & browser
        return replace(ctx, scopes=frozenset(scopes))

    def _extract(self, request: Request) -> tuple[str, str]:
        header = request.headers.get("authorization")
        if header is not None:
            # Exactly ``Bearer `` (case-sensitive) as the original; anything else is refused
            # rather than falling back to another source.
            token = header[7:].strip() if header.startswith("Bearer ") else ""
            if not token:
                raise AuthError(401, _MISSING)
            return token, "header"
        # WebSocket handshakes have no ``method`` attribute and are GETs.
        if getattr(request, "method", "GET") in ("GET", "HEAD"):
            cfg = self.config
            if cfg.query_param and (from_query := request.query_params.get(cfg.query_param)):
                return from_query, "query"
            if cfg.cookie_name and (from_cookie := request.cookies.get(cfg.cookie_name)):
                return from_cookie, "cookie"
        raise AuthError(401, _MISSING)

    async def verify(self, token: str) -> dict[str, Any]:
        """Verify a token and return its claims.

        Raises:
            AuthError: 401 ``Invalid or expired token`` on any failure; the reason is only
                logged (at INFO), never sent to the caller.
        """
        if len(token) > _MAX_TOKEN_CHARS:
            raise AuthError(401, _INVALID)
        try:
            key = self._key if self._jwks is None else await self._jwks.key_for(token)
            with warnings.catch_warnings():
                # Only reached with allow_weak_keys: the config check already refused
                # short keys otherwise, so PyJWT's per-call warning is noise.
                warnings.simplefilter("ignore", UserWarning)
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=list(self.algorithms),
                    options=self._options,  # type: ignore[arg-type]
                    audience=self._audience,
                    issuer=self.config.issuer,
                    leeway=self.config.leeway_seconds,
                )
        except jwt.PyJWTError as exc:
            logger.info("JWT refused: %s", exc)
            raise AuthError(401, _INVALID) from None
        return claims


def _accepted(config: JWTConfig, default: str) -> tuple[str, ...]:
    algorithms: tuple[str, ...] = config.algorithms or (config.algorithm or default,)
    if config.algorithm and config.algorithm not in algorithms:
        algorithms = (config.algorithm, *algorithms)
    for alg in algorithms:
        if alg not in HMAC_ALGORITHMS and alg not in ASYMMETRIC_ALGORITHMS:
            raise ConfigError(f"Unsupported JWT algorithm: {alg}")
    return tuple(algorithms)


def _read_pem(config: JWTConfig) -> bytes:
    if config.public_key:
        pem = config.public_key
        if isinstance(pem, str):
            # Environment variables often carry PEM with literal "\n" escapes.
            if "\n" not in pem and "\\n" in pem:
                pem = pem.replace("\\n", "\n")
            return pem.encode()
        return pem
    assert config.public_key_file is not None
    try:
        return Path(config.public_key_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read JWT public key file: {exc}") from exc


PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


def _load_public_key(pem: bytes) -> PublicKey:
    try:
        if b"BEGIN CERTIFICATE" in pem:
            key: Any = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ConfigError("JWT public key is not a valid PEM public key or certificate") from exc
    if not isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        raise ConfigError(f"Unsupported JWT public key type: {type(key).__name__}")
    return key


def _algorithms_for(key: PublicKey) -> tuple[str, ...]:
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALGORITHMS.get(key.curve.name)
        if alg is None:
            raise ConfigError(f"Unsupported elliptic curve for JWT: {key.curve.name}")
        return (alg,)
    return ("EdDSA",)


def _default_algorithm(key: PublicKey) -> str:
    return _algorithms_for(key)[0]


class _JWKSCache:
    """The identity provider's key set, fetched off the event loop and cached.

    One fetch at a time (a lock); fetches at most every ``jwks_cooldown_seconds`` whatever
    tokens arrive; when the provider is down the last good key set keeps working.
    """

    def __init__(self, config: JWTConfig) -> None:
        assert config.jwks_url is not None
        self._client = jwt.PyJWKClient(
            config.jwks_url, cache_jwk_set=False, timeout=config.jwks_timeout_seconds
        )
        self._max_age = config.jwks_cache_seconds
        self._cooldown = config.jwks_cooldown_seconds
        self._keys: Sequence[jwt.PyJWK] = ()
        self._fetched_at = -math.inf
        self._next_fetch = -math.inf
        self._lock = anyio.Lock()
        self.fetches = 0

    async def key_for(self, token: str) -> jwt.PyJWK:
        kid = jwt.get_unverified_header(token).get("kid")
        if time.monotonic() - self._fetched_at >= self._max_age:
            await self._refresh()
        key = self._find(kid)
        if key is None:
            # Perhaps the provider rotated keys: look again (subject to the cooldown).
            await self._refresh()
            key = self._find(kid)
        if key is None:
            raise jwt.PyJWKClientError("No JWKS key matches the token")
        return key

    def _find(self, kid: object) -> jwt.PyJWK | None:
        if kid is None:
            return self._keys[0] if len(self._keys) == 1 else None
        return next((k for k in self._keys if k.key_id == kid), None)

    async def _refresh(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if now < self._next_fetch:
                return
            self._next_fetch = now + self._cooldown
            self.fetches += 1
            try:
                jwk_set = await anyio.to_thread.run_sync(self._client.get_jwk_set)
            except jwt.PyJWTError as exc:
                logger.warning(
                    "JWKS fetch failed (keeping %d cached keys): %s", len(self._keys), exc
                )
                return
            self._keys = tuple(k for k in jwk_set.keys if k.public_key_use in (None, "sig"))
            self._fetched_at = time.monotonic()
