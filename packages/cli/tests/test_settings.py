"""Resolution: flags > environment > file > defaults, derived values, and where errors point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskcast.cli import (
    ENV_VARS,
    ConfigFileError,
    SettingsError,
    TaskcastSettings,
    default_db_path,
    resolve_settings,
)

FILE = Path("taskcast.config.yaml")


def resolve(
    file: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    flags: dict[str, Any] | None = None,
) -> TaskcastSettings:
    return resolve_settings(
        flags=flags, environ=env or {}, file=(FILE, file) if file is not None else None
    )


def test_defaults() -> None:
    s = resolve(env={"HOME": "/h"})
    assert (s.host, s.port, s.log_level, s.storage) == ("127.0.0.1", 3721, "info", "sqlite")
    assert s.heartbeat_seconds == 15.0
    assert s.retry_ms == 3000
    assert s.limits.max_body_bytes == 1024 * 1024
    assert s.limits.max_data_bytes == 256 * 1024
    assert s.limits.max_import_bytes == 16 * 1024 * 1024
    assert s.limits.max_batch == 1000
    assert s.cors == []
    assert s.auth.mode == "none"
    assert s.processes == 1
    assert s.long_term_url is None
    assert (s.admin_token_max_expires_in, s.admin_token_max_failures) == (86_400, 10)
    assert (s.admin_token_failure_window_seconds, s.admin_token_max_clients) == (60.0, 10_000)


def test_priority_flags_over_env_over_file_over_defaults() -> None:
    file = {"port": 1000, "host": "0.0.0.0", "retryMs": 10, "heartbeatSeconds": 2}
    env = {"TASKCAST_PORT": "2000", "TASKCAST_HOST": "::1"}
    flags = {"port": ("--port", 3000)}
    s = resolve(file, env, flags)
    assert s.port == 3000  # flag
    assert s.host == "::1"  # env
    assert s.retry_ms == 10  # file
    assert s.heartbeat_seconds == 2
    assert s.shutdown_timeout_seconds == 10.0  # default
    assert resolve(file, env).port == 2000
    assert resolve(file).port == 1000


def test_nested_sections_merge_key_by_key() -> None:
    file = {"auth": {"mode": "jwt", "jwt": {"issuer": "file", "secret": "from-file"}}}
    s = resolve(file, {"TASKCAST_JWT_SECRET": "from-env"})
    assert s.auth.mode == "jwt"
    assert s.auth.jwt.issuer == "file"
    assert s.auth.jwt.secret == "from-env"


def test_camel_and_snake_case_keys() -> None:
    camel = resolve({"logLevel": "warn", "limits": {"maxDataBytes": 5}, "dbPath": "/x.db"})
    snake = resolve({"log_level": "warn", "limits": {"max_data_bytes": 5}, "db_path": "/x.db"})
    assert camel == snake
    assert camel.log_level == "warning"
    assert camel.db_path == Path("/x.db")


def test_every_environment_variable_maps_somewhere() -> None:
    values = {
        "TASKCAST_HOST": "0.0.0.0",
        "TASKCAST_PORT": "1",
        "TASKCAST_LOG_LEVEL": "ERROR",
        "TASKCAST_ACCESS_LOG": "true",
        "TASKCAST_STORAGE": "memory",
        "TASKCAST_SQLITE_PATH": "/tmp/x.db",
        "TASKCAST_HEARTBEAT_SECONDS": "2.5",
        "TASKCAST_RETRY_MS": "7",
        "TASKCAST_SSE_WRITE_TIMEOUT": "4.5",
        "TASKCAST_SHUTDOWN_TIMEOUT_SECONDS": "3",
        "TASKCAST_STARTUP_TIMEOUT_SECONDS": "4",
        "TASKCAST_PROCESSES": "2",
        "TASKCAST_CORS_ORIGINS": "https://a.example, https://b.example",
        "TASKCAST_MAX_BODY_BYTES": "11",
        "TASKCAST_MAX_DATA_BYTES": "12",
        "TASKCAST_MAX_IMPORT_BYTES": "17",
        "TASKCAST_MAX_BATCH": "13",
        "TASKCAST_MAX_ID_CHARS": "20",
        "TASKCAST_MAX_NAME_CHARS": "21",
        "TASKCAST_DEFAULT_PAGE_SIZE": "15",
        "TASKCAST_MAX_PAGE_SIZE": "16",
        "TASKCAST_QUEUE_LIMIT": "14",
        "TASKCAST_EVENT_CACHE_BYTES": "0",
        "TASKCAST_MAX_HEADER_BYTES": "15",
        "TASKCAST_MAX_HEADERS": "16",
        "TASKCAST_MAX_URL_BYTES": "17",
        "TASKCAST_HEADER_TIMEOUT_SECONDS": "1.5",
        "TASKCAST_MAX_CONNECTIONS": "18",
        "TASKCAST_AUTH_MODE": "JWT",
        "TASKCAST_JWT_ALGORITHM": "RS256",
        "TASKCAST_JWT_SECRET": "sec",
        "TASKCAST_JWT_PUBLIC_KEY": "pem",
        "TASKCAST_JWT_PUBLIC_KEY_FILE": "/k.pem",
        "TASKCAST_JWT_JWKS_URL": "https://idp/jwks",
        "TASKCAST_JWT_ISSUER": "iss",
        "TASKCAST_JWT_AUDIENCE": "aud,aud2",
        "TASKCAST_REDIS_URL": "redis://r:6379/0",
        "TASKCAST_REDIS_PREFIX": "pfx",
        "TASKCAST_POSTGRES_URL": "postgresql://u:p@h/db",
        "TASKCAST_POSTGRES_MAX_CONNECTIONS": "4",
        "TASKCAST_POSTGRES_SCHEMA": "sch",
        "TASKCAST_AUTO_MIGRATE": "yes",
        "TASKCAST_ADMIN_TOKEN": "tok",
        "TASKCAST_ADMIN_TOKEN_MAX_EXPIRES_IN": "600",
        "TASKCAST_ADMIN_TOKEN_MAX_FAILURES": "3",
        "TASKCAST_ADMIN_TOKEN_FAILURE_WINDOW_SECONDS": "2.5",
        "TASKCAST_ADMIN_TOKEN_MAX_CLIENTS": "50",
        "SENTRY_DSN": "https://k@sentry.example/1",
        "TASKCAST_HOT_RETENTION_ENABLED": "false",
        "TASKCAST_HOT_RETENTION_TERMINAL_SECONDS": "5",
        "TASKCAST_HOT_RETENTION_IDLE_SECONDS": "6.5",
        "TASKCAST_TTL_SWEEP_INTERVAL_SECONDS": "0.25",
        "TASKCAST_TTL_SWEEP_BATCH_SIZE": "7",
        "TASKCAST_ARCHIVE_CHECK_INTERVAL_SECONDS": "1.5",
        "TASKCAST_ARCHIVE_CHECK_GRACE_SECONDS": "2.5",
        "TASKCAST_WEBHOOK_ALLOW_PRIVATE": "true",
        "TASKCAST_METRICS": "1",
        "TASKCAST_OPENTELEMETRY": "true",
    }
    assert set(values) == set(ENV_VARS)
    s = resolve(env=values)
    assert s.host == "0.0.0.0"
    assert s.port == 1
    assert s.log_level == "error"
    assert s.access_log is True
    assert s.write_timeout_seconds == 4.5
    assert s.storage == "memory"
    assert s.db_path == Path("/tmp/x.db")
    assert s.heartbeat_seconds == 2.5
    assert s.retry_ms == 7
    assert s.shutdown_timeout_seconds == 3
    assert s.startup_timeout_seconds == 4
    assert s.processes == 2
    assert s.cors == ["https://a.example", "https://b.example"]
    assert (s.limits.max_body_bytes, s.limits.max_data_bytes) == (11, 12)
    assert s.limits.max_import_bytes == 17
    assert (s.limits.max_batch, s.limits.queue_limit) == (13, 14)
    assert (s.limits.max_id_chars, s.limits.max_name_chars) == (20, 21)
    assert (s.limits.default_page_size, s.limits.max_page_size) == (15, 16)
    assert s.limits.event_cache_bytes == 0
    assert (s.limits.max_header_bytes, s.limits.max_headers, s.limits.max_url_bytes) == (15, 16, 17)
    assert (s.limits.header_timeout_seconds, s.limits.max_connections) == (1.5, 18)
    assert s.auth.mode == "jwt"
    jwt = s.auth.jwt
    assert (jwt.algorithm, jwt.secret, jwt.public_key) == ("RS256", "sec", "pem")
    assert (jwt.public_key_file, jwt.issuer, jwt.audience) == (
        Path("/k.pem"),
        "iss",
        ["aud", "aud2"],
    )
    assert jwt.jwks_url == "https://idp/jwks"
    assert s.adapters.broadcast.url == s.adapters.short_term_store.url == "redis://r:6379/0"
    assert s.redis.prefix == "pfx"
    assert s.long_term_url == "postgresql://u:p@h/db"
    assert s.postgres.max_connections == 4
    assert s.postgres.schema_name == "sch"
    assert s.postgres.auto_migrate is True
    assert s.admin_token == "tok"
    assert (s.admin_token_max_expires_in, s.admin_token_max_failures) == (600, 3)
    assert (s.admin_token_failure_window_seconds, s.admin_token_max_clients) == (2.5, 50)
    assert s.sentry_dsn == "https://k@sentry.example/1"
    lc = s.storage_lifecycle
    assert lc.hot_retention_enabled is False
    assert (lc.hot_retention_terminal_seconds, lc.hot_retention_idle_seconds) == (5, 6.5)
    assert (lc.ttl_sweep_interval_seconds, lc.ttl_sweep_batch_size) == (0.25, 7)
    assert (lc.archive_check_interval_seconds, lc.archive_check_grace_seconds) == (1.5, 2.5)
    assert s.webhook.allow_private is True
    assert s.metrics is True
    assert s.opentelemetry is True


def test_empty_environment_values_are_ignored() -> None:
    s = resolve({"port": 5}, {"TASKCAST_PORT": "", "TASKCAST_STORAGE": "  "})
    assert s.port == 5
    assert s.storage == "sqlite"


def test_storage_resolution() -> None:
    assert resolve({"storage": "memory"}).storage == "memory"
    redis_env = {"TASKCAST_REDIS_URL": "redis://x"}
    assert resolve(env=redis_env).storage == "redis"
    assert resolve({"storage": "sqlite"}, redis_env).storage == "sqlite"
    assert resolve({"adapters": {"broadcast": {"provider": "memory"}}}, redis_env).storage == (
        "memory"
    )
    assert (
        resolve({"adapters": {"shortTermStore": {"provider": "redis", "url": "redis://y"}}}).storage
        == "redis"
    )


def test_sqlite_path_default_and_expansion() -> None:
    assert resolve(env={"XDG_DATA_HOME": "/xdg"}).db_path == Path("/xdg/taskcast/taskcast.db")
    assert default_db_path({}) == Path.home() / ".local/share/taskcast/taskcast.db"
    assert resolve({"dbPath": "~/t.db"}).db_path == Path.home() / "t.db"
    # Memory storage keeps no file unless one was configured.
    assert resolve({"storage": "memory"}).db_path is None


def test_postgres_long_term_is_off_with_sqlite() -> None:
    env = {"TASKCAST_POSTGRES_URL": "postgresql://h/db"}
    assert resolve(env=env).long_term_url is None
    assert resolve({"storage": "memory"}, env).long_term_url == "postgresql://h/db"
    other = {"storage": "memory", "adapters": {"longTermStore": {"provider": "memory"}}}
    assert resolve(other, env).long_term_url is None


def test_redacted_hides_secrets() -> None:
    s = resolve(
        {
            "storage": "memory",
            "adminToken": "t",
            "auth": {"jwt": {"secret": "s"}},
            "adapters": {
                "broadcast": {"url": "redis://:pw@r:6379"},
                "shortTermStore": {"url": "redis://r"},
                "longTermStore": {"url": "postgresql://user:pw@h/db"},
            },
        },
        {"SENTRY_DSN": "https://key:secret@sentry.example/1"},
    )
    data = s.redacted()
    assert data["adminToken"] == "***"
    assert data["auth"]["jwt"]["secret"] == "***"
    assert data["adapters"]["broadcast"]["url"] == "redis://:***@r:6379"
    assert data["adapters"]["shortTermStore"]["url"] == "redis://r"
    assert data["adapters"]["longTermStore"]["url"] == "postgresql://user:***@h/db"
    assert data["sentryDsn"] == "https://key:***@sentry.example/1"
    assert "pw" not in str(data)


def test_unused_original_keys_are_accepted_and_listed() -> None:
    s = resolve(
        {
            "workers": {"enabled": False},
            "storageLifecycle": {"rehydrateReplayEvents": 1000, "storageLockTtlSeconds": 30},
            "sentry": {"dsn": "x", "traceSSEConnections": True, "captureStorageErrors": False},
            "trustedServices": [{"name": "svc", "key": "k", "scope": ["*"]}],
        }
    )
    assert s.unused_keys == [
        "workers",
        "storageLifecycle.rehydrateReplayEvents",
        "storageLifecycle.storageLockTtlSeconds",
        "sentry.captureStorageErrors",
        "sentry.traceSSEConnections",
    ]
    # The wired sections are no longer reported.
    wired = resolve({"webhook": {}, "cleanup": {"rules": []}, "storageLifecycle": {}, "sentry": {}})
    assert wired.unused_keys == []


def test_wired_sections_read_the_originals_keys() -> None:
    s = resolve(
        {
            "storageLifecycle": {
                "hotRetentionEnabled": False,
                "hotRetentionTerminalSeconds": 10,
                "hotRetentionIdleSeconds": 20,
                "ttlSweepIntervalSeconds": 5,
                "ttlSweepBatchSize": 100,
            },
            "webhook": {
                "defaultRetry": {"retries": 5, "backoff": "linear", "initialDelayMs": 10},
                "global": [{"url": "https://hooks.example/x", "secret": "s", "wrap": False}],
                "allowPrivate": True,
                "pollSeconds": 0.1,
                "leaseSeconds": 5,
                "maxInFlight": 4,
                "retentionSeconds": 0,
            },
            "cleanup": {"rules": [{"trigger": {"afterMs": 0}}], "intervalSeconds": 0.5},
            "metrics": True,
            "opentelemetry": True,
        }
    )
    assert s.storage_lifecycle.hot_retention_terminal_seconds == 10
    retry = s.webhook.default_retry.policy()
    assert (retry.retries, retry.backoff, retry.initial_delay_ms) == (5, "linear", 10)
    assert retry.max_delay_ms == 30_000  # unset keys keep the defaults
    assert s.webhook.global_hooks[0]["url"] == "https://hooks.example/x"
    assert (s.webhook.poll_seconds, s.webhook.lease_seconds) == (0.1, 5)
    assert (s.webhook.max_in_flight, s.webhook.retention_seconds) == (4, 0)
    assert s.cleanup.interval_seconds == 0.5 and len(s.cleanup.rules) == 1
    assert s.metrics is True and s.opentelemetry is True
    assert TaskcastSettings.from_json(s.to_json()) == s
    shown = s.redacted()
    assert shown["webhook"]["global"][0]["secret"] == "***"
    assert "storageLifecycle" in shown and shown["cleanup"]["intervalSeconds"] == 0.5


def test_settings_round_trip_as_json() -> None:
    s = resolve({"storage": "memory", "cors": ["*"], "auth": {"mode": "jwt"}})
    assert TaskcastSettings.from_json(s.to_json()) == s


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ({"port": "abc"}, 'port: expected an integer, got "abc"'),
        ({"port": 70000}, "port: expected a number less than or equal to 65535, got 70000"),
        ({"port": None}, "port: expected an integer, got null"),
        ({"heartbeatSeconds": "x"}, 'heartbeatSeconds: expected a number, got "x"'),
        ({"limits": {"maxBatch": 0}}, "limits.maxBatch: expected a number greater than 0, got 0"),
        ({"limits": {"defaultPageSize": 1001}},
         "limits.defaultPageSize: must not exceed limits.maxPageSize (1000), got 1001"),
        ({"limits": {"maxPageSize": 10, "defaultPageSize": 20}},
         "limits.defaultPageSize: must not exceed limits.maxPageSize (10), got 20"),
        ({"limits": []}, "limits: expected a mapping, got a list"),
        ({"cors": ["https://a", 3]}, "cors[1]: expected a string, got 3"),
        ({"cors": {"a": 1}}, "cors: expected a list, got a mapping"),
        ({"auth": "jwt"}, 'auth: expected a mapping, got "jwt"'),
        ({"auth": {"jwt": {"algorithmx": 1}}}, "auth.jwt.algorithmx: unknown key"),
        ({"auth": {"mode": "magic"}}, 'auth.mode: expected none, jwt or custom, got "magic"'),
        ({"prot": 1}, "prot: unknown key"),
        ({"storage": "mongo"}, 'storage: expected memory, sqlite or redis, got "mongo"'),
        ({"accessLog": "maybe"}, 'accessLog: expected true or false, got "maybe"'),
        ({"host": " "}, 'host: must not be empty, got " "'),
        ({"host": 5}, "host: expected a string, got 5"),
        ({"dbPath": 5}, "dbPath: expected a path, got 5"),
        ({"trustedServices": "x"}, 'trustedServices: expected a list, got "x"'),
        ({"trustedServices": [1]}, "trustedServices[0]: expected a mapping, got 1"),
        ({"trustedServices": [{"name": "a"}]}, "trustedServices[0].key: this key is required"),
        ({"trustedServices": [{"name": "a", "key": "k", "taskIds": "some"}]},
         'trustedServices[0].taskIds: expected a list, got "some"'),
        ({"webhook": {"defaultRetry": {"retries": -1}}}, "webhook.defaultRetry.retries: "
         "invalid webhook retry.retries: must be an integer in [0, 20], got -1"),
        ({"webhook": {"defaultRetry": {"backoff": "random"}}}, "webhook.defaultRetry.backoff: "
         'expected fixed, linear or exponential, got "random"'),
        ({"webhook": {"global": [{"url": "https://a.example"}, {"url": "ftp://x"}]}},
         "webhook.global[1]: invalid webhook url (http or https with a host): ftp://x"),
        ({"webhook": {"leaseSeconds": 1}},
         "webhook.leaseSeconds: expected a number greater than or equal to 2, got 1"),
        ({"webhook": {"global": "x"}}, 'webhook.global: expected a list, got "x"'),
        ({"cleanup": {"rules": [{"target": "nope"}]}},
         "cleanup.rules[0]: target must be all, task or events, not 'nope'"),
        ({"cleanup": {"rules": [{"match": "x"}]}},
         "cleanup.rules[0]: not a cleanup rule ('str' object has no attribute 'get')"),
        ({"cleanup": {"intervalSeconds": 0}},
         "cleanup.intervalSeconds: expected a number greater than 0, got 0"),
        ({"storageLifecycle": {"ttlSweepIntervalSeconds": 0}},
         "storageLifecycle.ttlSweepIntervalSeconds: expected a number greater than 0, got 0"),
        ({"storageLifecycle": {"hotRetentionIdleSeconds": -1}},
         "storageLifecycle.hotRetentionIdleSeconds: expected a number greater than or equal "
         "to 0, got -1"),
        ({"sentry": {"tracesSampleRate": 2}},
         "sentry.tracesSampleRate: expected a number less than or equal to 1, got 2"),
        ({"sentry": {"bogus": 1}}, "sentry.bogus: unknown key"),
        ({"limits": {"maxIdChars": 2000}},
         "limits.maxIdChars: expected a number less than or equal to 1024, got 2000"),
        ({"storage": "redis"}, "storage: storage redis needs a Redis URL "
         "(TASKCAST_REDIS_URL or adapters.shortTermStore.url)"),
        ({"adapters": {"broadcast": {"provider": "redis"}}}, "adapters.broadcast.provider: "
         "storage redis needs a Redis URL (TASKCAST_REDIS_URL or adapters.shortTermStore.url)"),
        (
            {"adapters": {"broadcast": {"provider": "redis"}, "shortTermStore": {"provider": "memory"}}},
            'adapters.shortTermStore.provider: shortTermStore.provider "memory" and '
            'broadcast.provider "redis" must match',
        ),
        ({"adapters": {"shortTermStore": {"provider": "postgres"}}},
         "adapters.shortTermStore.provider: postgres can only be the longTermStore provider"),
        ({"storage": "memory", "adapters": {"longTermStore": {"provider": "postgres"}}},
         "adapters.longTermStore.provider: the postgres long-term store needs a URL "
         "(TASKCAST_POSTGRES_URL or adapters.longTermStore.url)"),
    ],
)  # fmt: skip
def test_file_errors_name_file_and_key(file: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        resolve(file)
    assert str(info.value) == f"config error in ./{FILE}: {message}"


def test_error_points_at_the_layer_that_won() -> None:
    # The file's good value is overridden by a bad environment value: blame the variable.
    with pytest.raises(SettingsError) as info:
        resolve({"port": 1}, {"TASKCAST_PORT": "x"})
    assert not isinstance(info.value, ConfigFileError)
    assert (
        str(info.value)
        == 'invalid environment variable TASKCAST_PORT: expected an integer, got "x"'
    )
    with pytest.raises(SettingsError) as info:
        resolve({"port": "bad"}, {"TASKCAST_PORT": "1"}, {"port": ("--port", 70000)})
    assert str(info.value) == (
        "invalid value for --port: expected a number less than or equal to 65535, got 70000"
    )


def test_error_outside_any_layer_and_storage_errors_from_env() -> None:
    with pytest.raises(SettingsError, match=r"^storage redis needs a Redis URL"):
        resolve(env={"TASKCAST_STORAGE": "redis"})
    with pytest.raises(SettingsError) as info:
        resolve(env={"TASKCAST_LOG_LEVEL": "loud"})
    assert str(info.value) == (
        "invalid environment variable TASKCAST_LOG_LEVEL: expected debug, info, warning, "
        'error or critical, got "loud"'
    )


def test_settings_built_directly_use_defaults_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKCAST_PORT", "9")
    assert TaskcastSettings().port == 3721
