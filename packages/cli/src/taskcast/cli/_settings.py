"""The settings of ``taskcast start``: one frozen model with a section per concern.

:mod:`._resolve` fills it from flags, environment and file; the model itself only validates.
pydantic-settings merges the layers it is given (nested sections key by key) through
:class:`_LayerSource`.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from taskcast.core import (
    DEFAULT_CACHE_BYTES,
    MAX_CHARS_CAP,
    CleanupRule,
    InvalidInputError,
    WebhookConfig,
    WebhookRetry,
    redact_url,
)

from ._urls import check_postgres_url, check_redis_url, normalize_origin

__all__ = [
    "AdapterSettings",
    "AdaptersSettings",
    "AuthSettings",
    "CleanupSettings",
    "JwtSettings",
    "Layer",
    "LimitsSettings",
    "PostgresAdapterSettings",
    "PostgresSettings",
    "RedisAdapterSettings",
    "RedisSettings",
    "SentrySettings",
    "StorageLifecycleSettings",
    "StorageMode",
    "TaskcastSettings",
    "TrustedServiceSettings",
    "WebhookRetrySettings",
    "WebhookSettingsSection",
]

StorageMode = Literal["memory", "sqlite", "redis"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


def _split_commas(value: Any) -> Any:
    # Environment variables and single flags carry lists as "a,b,c".
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _star_is_all(value: Any) -> Any:
    return None if value == "*" else value


def _level(value: Any) -> Any:
    value = _lower(value)
    return "warning" if value == "warn" else value


class _Section(BaseModel):
    """Keys may be written camelCase (as the original's files) or snake_case."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        loc_by_alias=False,
    )


class JwtSettings(_Section):
    """``auth.jwt``: how bearer tokens are verified."""

    algorithm: Literal[
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256",
        "PS384", "PS512", "EdDSA",
    ] | None = None  # fmt: skip
    """Default: HS256 with a secret, inferred from the key type for a public key."""
    secret: str | None = None
    """Shared HMAC secret (takes precedence over a public key)."""
    public_key: str | None = None
    """PEM public key for RS*/ES*/PS*/EdDSA."""
    public_key_file: Path | None = None
    jwks_url: str | None = None
    """JWKS endpoint of an identity provider (keys matched by ``kid``)."""
    issuer: str | None = None
    audience: Annotated[list[str] | None, BeforeValidator(_split_commas)] = None
    """Accepted ``aud`` values (any of); unset: not checked."""


class AuthSettings(_Section):
    """``auth``: who may call the API."""

    mode: Annotated[Literal["none", "jwt", "custom"], BeforeValidator(_lower)] = "none"
    jwt: JwtSettings = JwtSettings()
    custom: str | None = None
    """Mode ``custom``: ``"package.module:function"`` deciding each request (a Python
    configuration file may pass the function itself as ``authenticator``)."""


class TrustedServiceSettings(_Section):
    """One entry of ``trustedServices``: a backend authenticating with a shared key."""

    name: str
    key: str
    scope: list[str] = Field(default_factory=list)
    task_ids: Annotated[list[str] | None, BeforeValidator(_star_is_all)] = None
    """Tasks the service may touch; ``"*"`` (or absent) means all."""


class AdapterSettings(_Section):
    """One storage role in ``adapters``."""

    provider: Annotated[
        Literal["memory", "sqlite", "redis", "postgres"] | None, BeforeValidator(_lower)
    ] = None
    url: str | None = None


class RedisAdapterSettings(AdapterSettings):
    """``adapters.broadcast`` / ``adapters.shortTermStore``: a Redis URL when one is given.

    A malformed URL is a settings error at once (exit 2), not a start that fails later.
    """

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("provider") in (None, "redis"):
            check_redis_url(value)
        return value


class PostgresAdapterSettings(AdapterSettings):
    """``adapters.longTermStore``: a PostgreSQL URL (or libpq key=value string)."""

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("provider") in (None, "postgres"):
            check_postgres_url(value)
        return value


class AdaptersSettings(_Section):
    """``adapters``: the original's per-role storage choice."""

    broadcast: RedisAdapterSettings = RedisAdapterSettings()
    short_term_store: RedisAdapterSettings = RedisAdapterSettings()
    long_term_store: PostgresAdapterSettings = PostgresAdapterSettings()


class LimitsSettings(_Section):
    """``limits``: request and memory bounds (safe defaults, architecture §7)."""

    max_body_bytes: int = Field(1024 * 1024, gt=0)
    """Largest accepted request body (HTTP 413 beyond)."""
    max_data_bytes: int = Field(256 * 1024, gt=0)
    """Largest accepted event ``data`` (JSON-encoded)."""
    max_import_bytes: int = Field(16 * 1024 * 1024, gt=0)
    """Largest ``POST /tasks/import`` body, a whole task archive (HTTP 413 beyond)."""
    max_batch: int = Field(1000, gt=0)
    """Most events in one publish request."""
    max_id_chars: int = Field(256, gt=0, le=MAX_CHARS_CAP)
    """Longest task id or event ``idempotencyKey`` (HTTP 400 beyond)."""
    max_name_chars: int = Field(256, gt=0, le=MAX_CHARS_CAP)
    """Longest name: event and task ``type``, ``seriesId``, ``seriesAccField``, each tag,
    each ``metadata`` key, each filter pattern (HTTP 400 beyond)."""
    max_page_size: int = Field(1000, gt=0)
    """Largest ``limit`` accepted by ``GET /tasks`` (HTTP 400 beyond)."""
    default_page_size: int = Field(100, gt=0)
    """Tasks in one ``GET /tasks`` page when the request gives no ``limit``."""
    queue_limit: int = Field(10_000, gt=0)
    """Events buffered per SSE subscriber before a slow reader is cut (it resumes by cursor)."""
    event_cache_bytes: int = Field(DEFAULT_CACHE_BYTES, ge=0)
    """Memory (estimated) the SQLite or Redis store keeps for events it has decoded, by
    their stored JSON, so a history replayed again is not parsed and encoded again; 0 = off."""
    max_header_bytes: int = Field(64 * 1024, gt=0)
    """Largest request head, request line included (HTTP 431 beyond)."""
    max_headers: int = Field(100, gt=0)
    """Most headers in one request (HTTP 431 beyond)."""
    max_url_bytes: int = Field(8 * 1024, gt=0)
    """Longest request target, path and query (HTTP 414 beyond)."""
    header_timeout_seconds: float = Field(15.0, gt=0)
    """A request head not complete within this long is answered 408 and closed (slowloris)."""
    max_connections: int | None = Field(None, gt=0)
    """Open connections per server process, SSE streams included, beyond which a new one is
    answered 503; None = the open files limit (raised to its hard limit at start) less a
    tenth, at least 64, kept for the stores."""

    @field_validator("default_page_size")
    @classmethod
    def _page_within_maximum(cls, value: int, info: ValidationInfo) -> int:
        # max_page_size is declared first, so it is validated (and in info.data) by now.
        maximum = info.data.get("max_page_size")
        if maximum is not None and value > maximum:
            raise ValueError(f"must not exceed limits.maxPageSize ({maximum})")
        return value


class RedisSettings(_Section):
    """``redis``: options of the Redis adapters (the URL lives in ``adapters``)."""

    prefix: str = "taskcast"


class PostgresSettings(_Section):
    """``postgres``: options of the PostgreSQL long-term store (the URL lives in ``adapters``)."""

    max_connections: int = Field(10, gt=0)
    schema_name: str | None = Field(None, alias="schema")
    """Work inside this schema instead of the default search path (created if absent)."""
    auto_migrate: bool = False
    """Apply pending migrations at startup."""


class StorageLifecycleSettings(_Section):
    """``storageLifecycle``: when tasks leave the hot store for the long-term store.

    Only active with a long-term store (PostgreSQL) and a hot store that can release tasks
    (Redis). Names are the original's; the defaults are :class:`taskcast.core.LifecycleConfig`'s.
    """

    hot_retention_enabled: bool = True
    """Run the release worker (the original's default is off)."""
    hot_retention_terminal_seconds: float = Field(3600.0, ge=0)
    """Release a finished task this long after it finished (0: never)."""
    hot_retention_idle_seconds: float = Field(86400.0, ge=0)
    """Release an unfinished task this long after its last activity (0: never)."""
    ttl_sweep_interval_seconds: float = Field(60.0, gt=0)
    """Seconds between sweeps."""
    ttl_sweep_batch_size: int = Field(500, gt=0)
    """Most tasks released by one sweep."""
    archive_check_interval_seconds: float = Field(5.0, ge=0)
    """Seconds between archive gap checks (Redis + PostgreSQL): every process looks for
    writes another process acknowledged but died before archiving (0: off). Defaults are
    :class:`taskcast.core.ArchiveCheckConfig`'s."""
    archive_check_grace_seconds: float = Field(10.0, gt=0)
    """Age of an unarchived write before the check counts it as missing."""
    # The original's tuning knobs with no counterpart here: accepted so its files load,
    # reported at startup (see TaskcastSettings.unused_keys).
    rehydrate_replay_events: int | None = None
    storage_lock_ttl_seconds: float | None = None


def _webhook_hook(value: dict[str, Any]) -> dict[str, Any]:
    # Checked here so a bad entry is reported with its file and key, like any other value.
    try:
        WebhookConfig.from_dict(value)
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from None
    return value


class WebhookRetrySettings(_Section):
    """``webhook.defaultRetry``: laid over :class:`taskcast.core.WebhookRetry`'s defaults."""

    retries: int | None = None
    backoff: Literal["fixed", "linear", "exponential"] | None = None
    initial_delay_ms: int | None = None
    max_delay_ms: int | None = None
    timeout_ms: int | None = None
    jitter: float | None = None

    @field_validator("*")
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        # Each key is checked on its own (the policy has no rule spanning keys), so an
        # error names the key at fault.
        if value is not None:
            assert info.field_name is not None
            key = cls.model_fields[info.field_name].alias or info.field_name
            try:
                WebhookRetry().merged({key: value})
            except InvalidInputError as exc:
                raise ValueError(str(exc)) from None
        return value

    def policy(self) -> WebhookRetry:
        """The retry policy these keys describe."""
        given = self.model_dump(by_alias=True, exclude_none=True)
        return WebhookRetry().merged(given)


class WebhookSettingsSection(_Section):
    """``webhook``: how the server delivers webhooks (:class:`taskcast.server.WebhookSettings`)."""

    default_retry: WebhookRetrySettings = WebhookRetrySettings()
    global_hooks: list[Annotated[dict[str, Any], AfterValidator(_webhook_hook)]] = Field(
        default_factory=list, alias="global"
    )
    """Webhooks receiving the matching events of every task: ``{url, filter?, secret?,
    wrap?, retry?}`` (the per-task webhook shape)."""
    allow_private: bool = False
    """Allow targets on private, loopback and link-local addresses (refused by default)."""
    poll_seconds: float = Field(0.5, gt=0)
    lease_seconds: float = Field(60.0, ge=2)
    max_in_flight: int = Field(32, ge=1)
    retention_seconds: float = Field(7 * 24 * 3600.0, ge=0)


def _cleanup_rule(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("target", "all") not in ("all", "task", "events"):
        raise ValueError(f"target must be all, task or events, not {value.get('target')!r}")
    try:
        CleanupRule.from_dict(value)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a cleanup rule ({exc})") from None
    return value


class CleanupSettings(_Section):
    """``cleanup``: rules deleting finished tasks (or their events) after a while."""

    rules: list[Annotated[dict[str, Any], AfterValidator(_cleanup_rule)]] = Field(
        default_factory=list
    )
    """``{name?, match?: {taskTypes?, status?}, trigger?: {afterMs?}, target?: all | task |
    events, eventFilter?: {types?, levels?, seriesMode?, olderThanMs?}}`` (the original's)."""
    interval_seconds: float = Field(30.0, gt=0)
    """Seconds between cleanup passes."""


class SentrySettings(_Section):
    """``sentry``: report to Sentry (needs ``taskcast-sentry``); the DSN may also come from
    ``SENTRY_DSN`` / ``sentryDsn``."""

    enabled: bool = True
    """Off: no Sentry even with a DSN."""
    dsn: str | None = None
    environment: str | None = None
    release: str | None = None
    traces_sample_rate: float | None = Field(None, ge=0, le=1)
    capture_task_failures: bool = True
    capture_task_timeouts: bool = True
    capture_webhook_failures: bool = True
    capture_unhandled_errors: bool = True
    capture_dropped_events: bool = True
    capture_archive_failures: bool = True
    include_params: bool = False
    breadcrumbs: bool = True
    # Options of the original that did nothing there either; accepted so its files load.
    capture_storage_errors: bool | None = None
    capture_broadcast_errors: bool | None = None
    trace_sse_connections: bool | None = Field(None, alias="traceSSEConnections")
    trace_event_publish: bool | None = None


class TaskcastSettings(BaseSettings):
    """Everything ``taskcast start`` needs, after flags, environment and file are merged.

    Build it with :func:`resolve_settings`; it is frozen and JSON-serialisable (worker
    processes receive it as JSON), except for :attr:`extras`.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        loc_by_alias=False,
        validate_default=False,
    )

    host: str = "127.0.0.1"
    port: int = Field(3721, ge=0, le=65535)
    log_level: Annotated[LogLevel, BeforeValidator(_level)] = "info"
    access_log: bool = False
    """Log one line per HTTP request (uvicorn's access log)."""
    storage: StorageMode | None = None
    """``memory``, ``sqlite`` or ``redis``; None until resolved (see :func:`resolve_settings`)."""
    db_path: Path | None = None
    """The SQLite file (storage ``sqlite``)."""
    heartbeat_seconds: float = Field(15.0, gt=0)
    """Seconds between SSE keep-alive comments."""
    retry_ms: int = Field(3000, ge=0)
    """The ``retry:`` hint sent to SSE clients."""
    write_timeout_seconds: float = Field(30.0, gt=0)
    """An SSE stream whose client accepts no write for this long is closed (a stalled
    reader must not hold memory forever); the client resumes by cursor."""
    shutdown_timeout_seconds: float = Field(10.0, ge=0)
    """How long a graceful shutdown waits for open requests before cancelling them."""
    startup_timeout_seconds: float = Field(30.0, ge=0, allow_inf_nan=False)
    """How long ``taskcast start`` waits for Redis and PostgreSQL to answer before it gives
    up (0: one attempt): a dependency still starting (a container, a failover) is waited
    for, one that stays away is a one-line error instead of a server that logs for ever."""
    processes: int = Field(1, ge=1)
    """Server processes (``--workers``); more than one needs a shared broadcast (Redis)."""
    cors: Annotated[
        list[Annotated[str, AfterValidator(normalize_origin)]], BeforeValidator(_split_commas)
    ] = Field(default_factory=list)
    """Allowed CORS origins (``scheme://host[:port]``, normalised as browsers send them, or
    ``*``); empty means CORS is off."""
    limits: LimitsSettings = LimitsSettings()
    auth: AuthSettings = AuthSettings()
    adapters: AdaptersSettings = AdaptersSettings()
    redis: RedisSettings = RedisSettings()
    postgres: PostgresSettings = PostgresSettings()
    sentry_dsn: str | None = None
    """Send task failures and errors to Sentry (needs ``taskcast-sentry``); overrides
    ``sentry.dsn``."""
    sentry: SentrySettings = SentrySettings()
    webhook: WebhookSettingsSection = WebhookSettingsSection()
    cleanup: CleanupSettings = CleanupSettings()
    storage_lifecycle: StorageLifecycleSettings = StorageLifecycleSettings()
    metrics: bool = False
    """Serve Prometheus metrics at ``GET /metrics``."""
    opentelemetry: bool = False
    """Report the same metrics through OpenTelemetry's global meter provider (set up by,
    e.g., ``opentelemetry-instrument`` or a ``taskcast.config.py``)."""
    admin_api: bool = False
    admin_token: str | None = None
    admin_token_max_expires_in: int = Field(86_400, gt=0)
    """Longest lifetime (seconds) ``POST /admin/token`` issues; a larger ``expiresIn`` is a
    400, and the default lifetime (24 h) is held to it."""
    admin_token_max_failures: int = Field(10, gt=0)
    """Failed admin token attempts one client (IP address, IPv6 /64) may make per window
    before it is answered 429."""
    admin_token_failure_window_seconds: float = Field(60.0, gt=0, allow_inf_nan=False)
    """The window, from a client's first failure, in which its failures are counted."""
    admin_token_max_clients: int = Field(10_000, gt=0)
    """Clients whose failed attempts are remembered per process (the oldest is forgotten)."""
    trusted_services: list[TrustedServiceSettings] = Field(default_factory=list)
    """Service keys accepted in ``X-Taskcast-Service-Key`` before the auth mode applies."""
    # The original's worker section: worker routes are not provided (architecture §7); the
    # key is accepted so an existing file loads, and reported once at startup.
    workers: dict[str, Any] | None = None
    config_file: Path | None = None
    """The file the settings were read from (informational)."""
    extras: dict[str, Any] = Field(default_factory=dict, exclude=True)
    """Python objects a ``taskcast.config.py`` supplies (never serialised), e.g. hooks."""

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The layers are resolved by resolve_settings() before construction (it needs them
        # to say where a bad value came from); pydantic-settings merges them in priority
        # order. Constructed outside resolve_settings(), only defaults apply: the CLI is the
        # one place that reads the environment.
        layers = _ACTIVE_LAYERS.get()
        return tuple(_LayerSource(settings_cls, layer) for layer in layers)

    @classmethod
    def from_json(cls, raw: str | bytes) -> TaskcastSettings:
        """Rebuild settings from :meth:`to_json` (how worker processes receive them)."""
        data = json.loads(raw)
        token = _ACTIVE_LAYERS.set((Layer(kind="flags", data=data),))
        try:
            return cls()
        finally:
            _ACTIVE_LAYERS.reset(token)

    def to_json(self) -> str:
        """Everything but :attr:`extras` as JSON (secrets included: keep it private)."""
        return self.model_dump_json()

    @property
    def unused_keys(self) -> list[str]:
        """Keys of the original's configuration that were given but have no effect here."""
        unused = ["workers"] if self.workers is not None else []
        for section, alias, names in _NO_EFFECT:
            model: BaseModel = getattr(self, section)
            for name in names:
                if getattr(model, name) is not None:
                    field_alias = type(model).model_fields[name].alias
                    unused.append(f"{alias}.{field_alias or name}")
        return unused

    @property
    def sentry_dsn_in_use(self) -> str | None:
        """The DSN Sentry reports to (``sentryDsn``/``SENTRY_DSN`` over ``sentry.dsn``), or
        None when Sentry is off."""
        if not self.sentry.enabled:
            return None
        return self.sentry_dsn or self.sentry.dsn

    @property
    def long_term_url(self) -> str | None:
        """The PostgreSQL URL when a long-term store is active, else None."""
        lt = self.adapters.long_term_store
        if self.storage == "sqlite" or lt.provider not in (None, "postgres"):
            return None
        return lt.url

    @property
    def redis_url(self) -> str | None:
        return self.adapters.short_term_store.url or self.adapters.broadcast.url

    def redacted(self) -> dict[str, Any]:
        """The settings as camelCase JSON data with secrets replaced by ``"***"``."""
        data = self.model_dump(mode="json", by_alias=True)
        jwt = data["auth"]["jwt"]
        if jwt.get("secret"):
            jwt["secret"] = "***"
        if data.get("adminToken"):
            data["adminToken"] = "***"
        for service in data["trustedServices"]:
            service["key"] = "***"
        for role in data["adapters"].values():
            if role.get("url"):
                role["url"] = _redact_url(role["url"])
        if data.get("sentryDsn"):
            data["sentryDsn"] = _redact_url(data["sentryDsn"])
        if data["sentry"].get("dsn"):
            data["sentry"]["dsn"] = _redact_url(data["sentry"]["dsn"])
        for hook in data["webhook"]["global"]:
            if hook.get("secret"):
                hook["secret"] = "***"
            if isinstance(hook.get("url"), str):
                hook["url"] = redact_url(hook["url"])  # every webhook URL shown: one rule
        return dict(data)


# Keys of the original's sections that this server accepts but has no use for.
_NO_EFFECT: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("storage_lifecycle", "storageLifecycle", (
        "rehydrate_replay_events", "storage_lock_ttl_seconds",
    )),
    ("sentry", "sentry", (
        "capture_storage_errors", "capture_broadcast_errors", "trace_sse_connections",
        "trace_event_publish",
    )),
)  # fmt: skip


def _redact_url(url: str) -> str:
    # scheme://user:password@host → scheme://user:***@host
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _password = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


# -- layers ------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Layer:
    """One source of settings, with keys already normalised to field names.

    ``origins`` maps the path of every value the layer sets to the name a user would
    recognise: a dotted key as written in the file, an environment variable, or a flag.
    """

    kind: Literal["flags", "env", "file"]
    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[tuple[str | int, ...], str] = field(default_factory=dict)
    path: Path | None = None


_ACTIVE_LAYERS: ContextVar[tuple[Layer, ...]] = ContextVar("taskcast_cli_layers", default=())


class _LayerSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], layer: Layer) -> None:
        super().__init__(settings_cls)
        self._layer = layer

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._layer.data.get(field_name), field_name, False  # pragma: no cover

    def __call__(self) -> dict[str, Any]:
        return self._layer.data
