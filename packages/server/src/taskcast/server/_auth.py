"""Who is calling and what they may do.

Routes depend on :func:`auth_context`, which authenticates the request with the app's
:class:`Authenticator` and returns an :class:`AuthContext`; routes then call
:meth:`AuthContext.require` with the scope they need (and the task id, for task routes).

Authenticators in this package:

* :class:`NoAuth` — mode ``none``: everyone may do everything.
* :class:`~taskcast.server.JWTAuthenticator` (``_jwt.py``) — mode ``jwt``.
* :class:`CustomAuthenticator` — mode ``custom``: the embedding application decides.
* :class:`CompositeAuthenticator` — trusted service keys (``X-Taskcast-Service-Key``) checked
  first, then the mode authenticator; :func:`build_authenticator` assembles it from config.

Status codes: 401 means "who are you?" (no, malformed, invalid or expired credentials);
403 means "I know who you are, and you may not do this" (scope, task restriction, authConfig).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread
from fastapi import Request
from fastapi.responses import JSONResponse

from taskcast.core import ConfigError, InvalidInputError, Task, TaskcastError

if TYPE_CHECKING:
    from ._jwt import JWTConfig

__all__ = [
    "ALL_SCOPES",
    "FULL_ACCESS",
    "SERVICE_KEY_HEADER",
    "AuthContext",
    "AuthError",
    "Authenticator",
    "CompositeAuthenticator",
    "CustomAuthFunction",
    "CustomAuthenticator",
    "NoAuth",
    "TrustedService",
    "auth_context",
    "auth_error_response",
    "build_authenticator",
    "check_task_auth_config",
    "context_from_claims",
    "load_custom_authenticator",
    "require_webhook_scope",
    "task_allowed",
    "validate_auth_config",
]

logger = logging.getLogger(__name__)

ALL_SCOPES = frozenset(
    {
        "task:create",
        "task:manage",
        "event:publish",
        "event:subscribe",
        "event:history",
        "webhook:create",
        "task:resolve",
        "task:signal",
        "worker:connect",
        "worker:manage",
        "*",
    }
)

SERVICE_KEY_HEADER = "X-Taskcast-Service-Key"

AuthSource = Literal["none", "jwt", "service", "custom"]


class AuthError(TaskcastError):
    """Refusal: 401 (who are you?) or 403 (not allowed); rendered as ``{"error": message}``."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def auth_error_response(exc: AuthError) -> JSONResponse:
    """The wire form of a refusal: ``{"error": message}`` with the status code.

    401 answers carry ``WWW-Authenticate: Bearer`` as RFC 6750 asks; clients ignore it.
    """
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse({"error": exc.message}, status_code=exc.status_code, headers=headers)


@dataclass(slots=True, frozen=True, kw_only=True)
class AuthContext:
    """The caller's identity and permissions.

    ``task_ids`` of ``None`` means every task; otherwise only the listed ones.
    """

    sub: str | None = None
    task_ids: frozenset[str] | None = None
    scopes: frozenset[str] = frozenset({"*"})
    claims: dict[str, object] | None = None
    source: AuthSource = "custom"
    """How the caller was authenticated. ``"none"`` (auth disabled) skips per-task authConfig
    rules, since an anonymous caller could never satisfy them."""

    def has_scope(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes

    def can_access(self, task_id: str) -> bool:
        return self.task_ids is None or task_id in self.task_ids

    def require(self, scope: str, task_id: str | None = None) -> None:
        """Raise a 403 :class:`AuthError` unless the caller has ``scope`` (on ``task_id``)."""
        if not self.has_scope(scope) or (task_id is not None and not self.can_access(task_id)):
            raise AuthError(403, "Forbidden")

    @property
    def worker_id(self) -> str | None:
        """The ``workerId`` claim, when the token pins the caller to one worker."""
        value = (self.claims or {}).get("workerId")
        return value if isinstance(value, str) else None


FULL_ACCESS = AuthContext(source="none")


def context_from_claims(claims: Mapping[str, Any], *, source: AuthSource) -> AuthContext:
    """Build a context from JWT-shaped claims (``sub``, ``taskIds``, ``scope``).

    ``taskIds`` is ``"*"`` or a list of ids (absent means ``"*"``); ``scope`` is a list of
    scopes or an OAuth-style space-separated string (absent means no scope at all).

    Raises:
        ValueError: a claim has the wrong type.
    """
    sub = claims.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise ValueError("sub must be a string")
    raw_ids = claims.get("taskIds", "*")
    task_ids: frozenset[str] | None
    if raw_ids == "*":
        task_ids = None
    elif isinstance(raw_ids, list) and all(isinstance(i, str) for i in raw_ids):
        task_ids = frozenset(raw_ids)
    else:
        raise ValueError('taskIds must be "*" or a list of strings')
    raw_scope = claims.get("scope", [])
    if isinstance(raw_scope, str):
        # OAuth 2 access tokens carry scope as one space-separated string (RFC 8693 §4.2).
        scopes = frozenset(raw_scope.split())
    elif isinstance(raw_scope, list) and all(isinstance(s, str) for s in raw_scope):
        scopes = frozenset(raw_scope)
    else:
        raise ValueError("scope must be a list of strings")
    return AuthContext(
        sub=sub, task_ids=task_ids, scopes=scopes, claims=dict(claims), source=source
    )


class Authenticator:
    """Base class: turns a request into an :class:`AuthContext` or raises :class:`AuthError`."""

    mode = "none"

    async def authenticate(self, request: Request) -> AuthContext:
        raise AuthError(401, "Unauthorized")


class NoAuth(Authenticator):
    """Mode ``none``: every caller may do everything."""

    mode = "none"

    async def authenticate(self, request: Request) -> AuthContext:
        return FULL_ACCESS


async def auth_context(request: Request) -> AuthContext:
    """FastAPI dependency: authenticate with the app's authenticator (``app.state.authenticator``)."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.authenticate(request)


# -- custom ------------------------------------------------------------------------------

CustomAuthResult = AuthContext | Mapping[str, Any] | None
CustomAuthFunction = Callable[[Request], CustomAuthResult | Awaitable[CustomAuthResult]]


class CustomAuthenticator(Authenticator):
    """Mode ``custom``: the application's own function decides.

    ``fn(request)`` (plain or ``async``) returns an :class:`AuthContext`, a mapping of
    JWT-shaped claims (``sub``, ``taskIds``, ``scope``, anything else), or ``None`` to refuse
    with 401. It may raise :class:`AuthError` itself for another status or message. Plain
    functions run in a worker thread, as FastAPI runs plain dependencies, so they may block.
    """

    mode = "custom"

    def __init__(self, fn: CustomAuthFunction, *, run_sync_in_thread: bool = True) -> None:
        self._fn = fn
        # Callable objects with an ``async def __call__`` count as async too.
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            type(fn).__call__
        )
        self._thread = run_sync_in_thread

    async def authenticate(self, request: Request) -> AuthContext:
        if self._is_async:
            result = await self._fn(request)  # type: ignore[misc]
        elif self._thread:
            result = await anyio.to_thread.run_sync(self._fn, request)
        else:
            result = self._fn(request)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            raise AuthError(401, "Unauthorized")
        if isinstance(result, AuthContext):
            return result
        if isinstance(result, Mapping):
            try:
                return context_from_claims(result, source="custom")
            except ValueError:
                logger.warning("custom authenticator returned malformed claims")
                raise AuthError(401, "Unauthorized") from None
        raise TypeError(
            f"custom authenticator returned {type(result).__name__}; "
            "expected AuthContext, a mapping of claims or None"
        )


def load_custom_authenticator(path: str) -> CustomAuthenticator:
    """Import ``"package.module:function"`` (the CLI/config form of mode ``custom``).

    Raises:
        ConfigError: the path is malformed, the module cannot be imported or the attribute
            is missing or not callable.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"Custom authenticator must look like 'module:function', got {path!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"Cannot import custom authenticator module {module_name!r}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"Custom authenticator {path!r} not found") from None
    if not callable(target):
        raise ConfigError(f"Custom authenticator {path!r} is not callable")
    return CustomAuthenticator(target)


# -- trusted service keys ----------------------------------------------------------------


@dataclass(slots=True, frozen=True, kw_only=True)
class TrustedService:
    """A backend service that authenticates with a shared key in ``X-Taskcast-Service-Key``."""

    name: str
    """Shown as ``sub = "svc:<name>"``."""
    key: str = field(repr=False)
    """The shared secret; compared in constant time."""
    scope: tuple[str, ...] = ()
    """Scopes granted (``("*",)`` for everything)."""
    task_ids: tuple[str, ...] | None = None
    """Tasks the service may touch; ``None`` (config ``"*"``) means all."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("A trusted service needs a name")
        if not self.key:
            raise ConfigError(f"Trusted service {self.name!r} needs a non-empty key")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrustedService:
        """Build from the config shape ``{name, key, taskIds?, scope}``."""
        name, key = data.get("name"), data.get("key")
        scope = data.get("scope", [])
        task_ids = data.get("taskIds", "*")
        if not isinstance(name, str) or not isinstance(key, str):
            raise ConfigError("trustedServices entries need string 'name' and 'key'")
        if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
            raise ConfigError(f"trustedServices[{name}].scope must be a list of strings")
        if task_ids != "*" and not (
            isinstance(task_ids, list) and all(isinstance(t, str) for t in task_ids)
        ):
            raise ConfigError(f'trustedServices[{name}].taskIds must be "*" or a list of strings')
        return cls(
            name=name,
            key=key,
            scope=tuple(scope),
            task_ids=None if task_ids == "*" else tuple(task_ids),
        )

    def context(self) -> AuthContext:
        return AuthContext(
            sub=f"svc:{self.name}",
            task_ids=None if self.task_ids is None else frozenset(self.task_ids),
            scopes=frozenset(self.scope),
            claims={"sub": f"svc:{self.name}"},
            source="service",
        )


def _digest(value: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison time independent of key lengths.
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class CompositeAuthenticator(Authenticator):
    """Trusted service keys first, then the mode authenticator (reference §7.1).

    A request carrying ``X-Taskcast-Service-Key`` while services are configured either
    matches one (and gets that service's context) or is refused with 401 — even in mode
    ``none``, so a mistyped key never silently falls back to anonymous access.
    """

    def __init__(self, inner: Authenticator, services: Iterable[TrustedService] = ()) -> None:
        self.inner = inner
        self.services = tuple(services)
        self._digests = tuple((_digest(s.key), s) for s in self.services)
        self.mode = inner.mode

    async def authenticate(self, request: Request) -> AuthContext:
        presented = request.headers.get(SERVICE_KEY_HEADER)
        if presented and self._digests:
            candidate = _digest(presented)
            found: TrustedService | None = None
            # Compare against every key, without stopping early, so timing says nothing
            # about which (or whether a) service matched.
            for digest, service in self._digests:
                if hmac.compare_digest(candidate, digest) and found is None:
                    found = service
            if found is None:
                raise AuthError(401, "Invalid service key")
            return found.context()
        return await self.inner.authenticate(request)


def build_authenticator(
    mode: str = "none",
    *,
    jwt: JWTConfig | None = None,
    custom: CustomAuthFunction | str | None = None,
    trusted_services: Iterable[TrustedService | Mapping[str, Any]] = (),
) -> Authenticator:
    """Assemble the authenticator for ``create_app`` from configuration.

    Args:
        mode: ``"none"``, ``"jwt"`` or ``"custom"`` (``TASKCAST_AUTH_MODE`` / ``auth.mode``).
        jwt: Required for mode ``jwt``.
        custom: Required for mode ``custom``: a callable, or ``"module:function"``.
        trusted_services: Service keys checked before the mode (config dicts accepted).

    Raises:
        ConfigError: unknown mode or the mode's settings are missing. (The original starts
            and then refuses every request; failing at startup is kinder.)
    """
    inner: Authenticator
    if mode == "none":
        inner = NoAuth()
    elif mode == "jwt":
        if jwt is None:
            raise ConfigError(
                "Auth mode 'jwt' needs JWT settings (a secret, public key or JWKS URL)"
            )
        from ._jwt import JWTAuthenticator  # here: _jwt imports this module

        inner = JWTAuthenticator(jwt)
    elif mode == "custom":
        if custom is None:
            raise ConfigError("Auth mode 'custom' needs a function ('module:function')")
        inner = (
            load_custom_authenticator(custom)
            if isinstance(custom, str)
            else CustomAuthenticator(custom)
        )
    else:
        raise ConfigError(f"Unknown auth mode {mode!r}; expected none, jwt or custom")
    services = [
        s if isinstance(s, TrustedService) else TrustedService.from_dict(s)
        for s in trusted_services
    ]
    return CompositeAuthenticator(inner, services) if services else inner


# -- per-task authConfig -----------------------------------------------------------------


def validate_auth_config(value: object) -> dict[str, Any]:
    """Check an ``authConfig`` body value; return it unchanged.

    Shape: ``{"rules": [{"match": {"scope": [...]}, "require": {"sub": [...],
    "claims": {...}}}]}``; ``match``, ``match.scope``, ``require.sub`` and
    ``require.claims`` are optional.

    Raises:
        InvalidInputError: the shape is wrong (HTTP 400 on task creation).
    """
    if not isinstance(value, dict):
        raise InvalidInputError("authConfig must be an object")
    rules = value.get("rules", [])
    if not isinstance(rules, list):
        raise InvalidInputError("authConfig.rules must be an array")
    for i, rule in enumerate(rules):
        where = f"authConfig.rules[{i}]"
        if not isinstance(rule, dict):
            raise InvalidInputError(f"{where} must be an object")
        match = rule.get("match", {})
        if not isinstance(match, dict):
            raise InvalidInputError(f"{where}.match must be an object")
        scope = match.get("scope")
        if scope is not None and not _str_list(scope):
            raise InvalidInputError(f"{where}.match.scope must be an array of strings")
        require = rule.get("require", {})
        if not isinstance(require, dict):
            raise InvalidInputError(f"{where}.require must be an object")
        sub = require.get("sub")
        if sub is not None and not _str_list(sub):
            raise InvalidInputError(f"{where}.require.sub must be an array of strings")
        claims = require.get("claims")
        if claims is not None and not isinstance(claims, dict):
            raise InvalidInputError(f"{where}.require.claims must be an object")
    return value


def _str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _claim_satisfied(actual: object, expected: object) -> bool:
    # A list on either side means "any of": expected ["a","b"] accepts "a"; a claim
    # ["x","a"] satisfies expected "a". Otherwise plain JSON equality.
    if isinstance(expected, list):
        if isinstance(actual, list):
            return any(a in expected for a in actual)
        return actual in expected
    if isinstance(actual, list):
        return expected in actual
    return actual == expected


def _rule_applies(rule: Mapping[str, Any], scope: str) -> bool:
    wanted = (rule.get("match") or {}).get("scope")
    return not wanted or scope in wanted or "*" in wanted


def _rule_satisfied(ctx: AuthContext, rule: Mapping[str, Any]) -> bool:
    require = rule.get("require") or {}
    subs = require.get("sub")
    if subs is not None and ctx.sub not in subs:
        return False
    claims = ctx.claims or {}
    for name, expected in (require.get("claims") or {}).items():
        if name not in claims or not _claim_satisfied(claims[name], expected):
            return False
    return True


def check_task_auth_config(
    ctx: AuthContext, task: Task | Mapping[str, Any] | None, scope: str
) -> None:
    """Enforce a task's ``authConfig`` for an operation needing ``scope``.

    ``task`` is a :class:`~taskcast.core.Task`, a task's wire dict (with ``authConfig``) or
    the ``authConfig`` value itself. Every rule whose ``match.scope`` lists ``scope`` (or
    ``"*"``, or has no ``match.scope``) must be satisfied: ``ctx.sub`` in ``require.sub``
    and each ``require.claims`` entry present and equal (lists mean "any of"). No
    ``authConfig`` or no applicable rule allows. Callers with ``source == "none"`` (auth
    disabled) are not checked. A malformed ``authConfig`` refuses (fail closed).

    This runs in addition to :meth:`AuthContext.require`, never instead of it.

    Raises:
        AuthError: 403 when an applicable rule is not satisfied.
    """
    if ctx.source == "none" or task is None:
        return
    config: object
    if isinstance(task, Task):
        config = task.auth_config
    elif "rules" in task:
        config = task
    else:
        config = task.get("authConfig")
    if config is None:
        return
    try:
        rules = validate_auth_config(config).get("rules", [])
    except InvalidInputError:
        logger.warning("refusing access to a task with a malformed authConfig")
        raise AuthError(403, "Forbidden") from None
    for rule in rules:
        if _rule_applies(rule, scope) and not _rule_satisfied(ctx, rule):
            raise AuthError(403, "Forbidden")


def task_allowed(ctx: AuthContext, task: Task, scope: str) -> bool:
    """Whether the per-task rules let ``ctx`` at ``task`` for ``scope``: its ``taskIds``,
    then the task's ``authConfig`` (:func:`check_task_auth_config`).

    The verdict form of the checks the single-task routes make (they answer 403); reads
    over many tasks (``GET /tasks``, ``GET /events``) leave out the tasks it refuses.
    """
    if not ctx.can_access(task.id):
        return False
    try:
        check_task_auth_config(ctx, task, scope)
    except AuthError:
        return False
    return True


def require_webhook_scope(ctx: AuthContext, body: object) -> None:
    """Creating a task that carries webhooks needs ``webhook:create`` as well as ``task:create``.

    ``body`` is the request dict (``webhooks`` key) or any object with a ``webhooks``
    attribute (``TaskInput``). An absent or empty list needs nothing extra.

    Raises:
        AuthError: 403 without the scope.
    """
    webhooks = (
        body.get("webhooks") if isinstance(body, Mapping) else getattr(body, "webhooks", None)
    )
    if webhooks:
        ctx.require("webhook:create")
