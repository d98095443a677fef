"""From resolved settings to an engine and an ASGI application.

Nothing here reads the environment or files; :class:`TaskcastSettings` carries everything.
Adapters are imported only when chosen, so a missing optional backend costs nothing until
it is asked for.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from taskcast.core import (
    ArchiveCheckConfig,
    BroadcastProvider,
    CleanupRule,
    ConfigError,
    EngineLimits,
    LifecycleConfig,
    LongTermStore,
    MemoryShortTermStore,
    SchedulerConfig,
    ShortTermStore,
    TaskcastHooks,
    TaskEngine,
)

from ._errors import SettingsError, StartupError
from ._settings import TaskcastSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from taskcast.server import Authenticator, JWTConfig, WebhookSettings

__all__ = ["Built", "build", "build_engine", "check_db_path", "describe_storage"]

logger = logging.getLogger("taskcast.cli")


@dataclass(slots=True, frozen=True, kw_only=True)
class Built:
    """An application and the engine behind it (the server owns both)."""

    app: FastAPI
    engine: TaskEngine


def describe_storage(settings: TaskcastSettings) -> str:
    """``sqlite at /path``, ``memory``, ``redis at redis://host:6379/0`` (+ long-term)."""
    shown = settings.redacted()["adapters"]
    if settings.storage == "sqlite":
        text = f"sqlite at {settings.db_path}"
    elif settings.storage == "redis":
        text = f"redis at {shown['shortTermStore']['url'] or shown['broadcast']['url']}"
    else:
        text = "memory"
    if settings.long_term_url:
        text += f", long-term: postgres at {shown['longTermStore']['url']}"
    return text


def check_db_path(path: Path) -> None:
    """Create the SQLite file's directory and prove it is writable, or say why not.

    SQLite's own message for an unwritable location ("unable to open database file") does
    not say which path or why; this check does, before anything starts.
    """
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"cannot create the directory for the database {path}: {_reason(exc)}"
        ) from None
    if path.is_dir():
        raise StartupError(f"the database path {path} is a directory")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK):
        raise StartupError(f"the database path {path} is not writable (permission denied)")


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _short_term(settings: TaskcastSettings) -> tuple[ShortTermStore, BroadcastProvider | None]:
    if settings.storage == "memory":
        return MemoryShortTermStore(), None
    if settings.storage == "sqlite":
        from taskcast.sqlite import SQLiteStore

        assert settings.db_path is not None
        return SQLiteStore(settings.db_path, cache_bytes=settings.limits.event_cache_bytes), None
    return _redis(settings)


def _redis(settings: TaskcastSettings) -> tuple[ShortTermStore, BroadcastProvider | None]:
    from taskcast.redis import RedisBroadcast, RedisShortTermStore

    url = settings.redis_url
    assert url is not None  # resolve_settings refuses storage redis without a URL
    # The store's Lua commit publishes on the channels the broadcast listens to; both must
    # use the same key prefix.
    prefix = settings.redis.prefix
    store = RedisShortTermStore(url, prefix=prefix, cache_bytes=settings.limits.event_cache_bytes)
    return store, RedisBroadcast(url, prefix=prefix)


def _long_term(settings: TaskcastSettings) -> LongTermStore | None:
    url = settings.long_term_url
    if not url:
        return None
    from taskcast.postgres import ArchiveWriter, PostgresLongTermStore

    store = PostgresLongTermStore(
        url, schema=settings.postgres.schema_name, max_size=settings.postgres.max_connections
    )
    # Archive writes queue in memory and are retried while PostgreSQL is down, so an
    # outage never fails or slows a publish (architecture §3).
    return ArchiveWriter(store)


def _hooks(settings: TaskcastSettings) -> list[TaskcastHooks]:
    hooks: list[TaskcastHooks] = []
    extra = settings.extras.get("hooks")
    if isinstance(extra, TaskcastHooks):
        hooks.append(extra)
    elif isinstance(extra, list | tuple):
        for item in extra:
            if not isinstance(item, TaskcastHooks):
                raise SettingsError(
                    f"hooks: expected TaskcastHooks instances, got {type(item).__name__}"
                )
            hooks.append(item)
    elif extra is not None:
        raise SettingsError(f"hooks: expected TaskcastHooks instances, got {type(extra).__name__}")
    dsn = settings.sentry_dsn_in_use
    if dsn:
        hooks.extend(_sentry_hooks(settings, dsn))
    return hooks


def _sentry_hooks(settings: TaskcastSettings, dsn: str) -> list[TaskcastHooks]:
    try:
        from taskcast.sentry import SentryOptions, setup_sentry
    except ImportError:  # pragma: no cover - taskcast-sentry is installed in the workspace
        logger.warning(
            "SENTRY_DSN is set but taskcast-sentry is not installed "
            "(pip install 'taskcast-cli[sentry]'); Sentry is off"
        )
        return []
    sentry = settings.sentry
    options = SentryOptions(
        capture_task_failures=sentry.capture_task_failures,
        capture_task_timeouts=sentry.capture_task_timeouts,
        capture_webhook_failures=sentry.capture_webhook_failures,
        capture_unhandled_errors=sentry.capture_unhandled_errors,
        capture_dropped_events=sentry.capture_dropped_events,
        capture_archive_failures=sentry.capture_archive_failures,
        include_params=sentry.include_params,
        breadcrumbs=sentry.breadcrumbs,
    )
    return [
        setup_sentry(
            dsn,
            options=options,
            environment=sentry.environment,
            release=sentry.release,
            traces_sample_rate=sentry.traces_sample_rate,
        )
    ]


def _lifecycle(settings: TaskcastSettings) -> LifecycleConfig:
    lc = settings.storage_lifecycle
    return LifecycleConfig(
        enabled=lc.hot_retention_enabled,
        terminal_release_after_seconds=lc.hot_retention_terminal_seconds,
        idle_release_after_seconds=lc.hot_retention_idle_seconds,
        sweep_interval_seconds=lc.ttl_sweep_interval_seconds,
        batch_size=lc.ttl_sweep_batch_size,
    )


def _archive_check(settings: TaskcastSettings) -> ArchiveCheckConfig:
    lc = settings.storage_lifecycle
    return ArchiveCheckConfig(
        interval_seconds=lc.archive_check_interval_seconds,
        grace_seconds=lc.archive_check_grace_seconds,
    )


def _scheduler(settings: TaskcastSettings) -> SchedulerConfig:
    cleanup = settings.cleanup
    return SchedulerConfig(
        cleanup_rules=tuple(CleanupRule.from_dict(rule) for rule in cleanup.rules),
        cleanup_interval_seconds=cleanup.interval_seconds,
    )


def _webhooks(settings: TaskcastSettings) -> WebhookSettings:
    from taskcast.server import WebhookSettings

    hooks = settings.webhook
    try:
        return WebhookSettings(
            global_hooks=hooks.global_hooks,
            allow_private=hooks.allow_private,
            default_retry=hooks.default_retry.policy(),
            poll_seconds=hooks.poll_seconds,
            lease_seconds=hooks.lease_seconds,
            max_in_flight=hooks.max_in_flight,
            retention_seconds=hooks.retention_seconds,
        )
    except ConfigError as exc:  # pragma: no cover - the settings model checks the same
        raise SettingsError(f"invalid webhook settings: {exc.message}") from None


def build_engine(settings: TaskcastSettings) -> TaskEngine:
    """An engine on the chosen storage (not opened yet)."""
    short_term, broadcast = _short_term(settings)
    return TaskEngine(
        short_term=short_term,
        broadcast=broadcast,
        long_term=_long_term(settings),
        hooks=_hooks(settings),
        limits=EngineLimits(
            max_batch=settings.limits.max_batch,
            max_id_chars=settings.limits.max_id_chars,
            max_name_chars=settings.limits.max_name_chars,
        ),
        queue_limit=settings.limits.queue_limit,
        scheduler=_scheduler(settings),
        lifecycle=_lifecycle(settings),
        archive_check=_archive_check(settings),
    )


def build(settings: TaskcastSettings, *, metrics_dir: str | None = None) -> Built:
    """The engine and the FastAPI application serving it.

    ``metrics_dir``: the directory this process shares its metrics in with the other worker
    processes of ``--workers N`` (``ServerConfig.metrics_dir``).
    """
    from taskcast.server import AdminConfig, ServerConfig, admin_router, create_app

    engine = build_engine(settings)
    config = ServerConfig(
        heartbeat_seconds=settings.heartbeat_seconds,
        retry_ms=settings.retry_ms,
        write_timeout_seconds=settings.write_timeout_seconds,
        max_body_bytes=settings.limits.max_body_bytes,
        max_data_bytes=settings.limits.max_data_bytes,
        max_import_bytes=settings.limits.max_import_bytes,
        max_batch=settings.limits.max_batch,
        default_page_size=settings.limits.default_page_size,
        max_page_size=settings.limits.max_page_size,
        cors_origins=tuple(settings.cors) or None,
        queue_limit=settings.limits.queue_limit,
        metrics=settings.metrics,
        metrics_dir=metrics_dir,
        opentelemetry=settings.opentelemetry,
    )
    jwt = _jwt_config(settings)
    try:
        authenticator = _authenticator(settings, jwt)
        admin = replace(
            AdminConfig.for_jwt(jwt, enabled=settings.admin_api, admin_token=settings.admin_token),
            max_expires_in=settings.admin_token_max_expires_in,
            max_failures=settings.admin_token_max_failures,
            failure_window_seconds=settings.admin_token_failure_window_seconds,
            max_tracked_clients=settings.admin_token_max_clients,
        )
    except SettingsError:
        raise
    except ConfigError as exc:
        # The server checks what it can use (key sizes, algorithms, a loadable function);
        # its message names the problem, this prefix the section.
        raise SettingsError(f"invalid auth settings: {exc.message}") from None
    app = create_app(
        engine, config=config, authenticator=authenticator, webhooks=_webhooks(settings)
    )
    # POST /admin/token: answers 404 unless adminApi is on (as the original).
    app.include_router(admin_router(admin))
    return Built(app=app, engine=engine)


def _jwt_config(settings: TaskcastSettings) -> JWTConfig | None:
    from taskcast.server import JWTConfig

    jwt = settings.auth.jwt
    if settings.auth.mode != "jwt" and not jwt.secret:
        return None
    return JWTConfig(
        algorithm=jwt.algorithm,
        secret=jwt.secret,
        public_key=jwt.public_key,
        public_key_file=jwt.public_key_file,
        jwks_url=jwt.jwks_url,
        issuer=jwt.issuer,
        audience=tuple(jwt.audience) if jwt.audience else None,
    )


def _authenticator(settings: TaskcastSettings, jwt: JWTConfig | None) -> Authenticator:
    from taskcast.server import (
        Authenticator,
        CompositeAuthenticator,
        TrustedService,
        build_authenticator,
    )

    auth = settings.auth
    services = [
        TrustedService(
            name=s.name,
            key=s.key,
            scope=tuple(s.scope),
            task_ids=None if s.task_ids is None else tuple(s.task_ids),
        )
        for s in settings.trusted_services
    ]
    given = settings.extras.get("authenticator")
    if given is not None:
        if auth.mode != "custom":
            raise SettingsError(
                f"authenticator: given, but auth.mode is {auth.mode}; set auth.mode to custom"
            )
        if isinstance(given, Authenticator):
            return CompositeAuthenticator(given, services) if services else given
        if not callable(given):
            raise SettingsError(
                "authenticator: expected a function or a taskcast.server.Authenticator, "
                f"got {type(given).__name__}"
            )
    return build_authenticator(
        auth.mode,
        jwt=jwt if auth.mode == "jwt" else None,
        custom=given if given is not None else auth.custom,
        trusted_services=services,
    )
