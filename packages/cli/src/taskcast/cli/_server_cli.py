"""``taskcast start`` (the default command) and ``taskcast migrate``: the server side.

Their options are declared here; the settings, the stores and the server are imported only
when one of them runs, so the rest of the command line starts without them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._options import fail

if TYPE_CHECKING:
    from ._settings import TaskcastSettings

__all__ = ["migrate", "run_server", "start", "warn_about"]

logger = logging.getLogger("taskcast.cli")


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


# The settings path each flag sets, and the flag's name for messages.
_FLAG_PATHS: dict[str, tuple[str, str]] = {
    "host": ("host", "--host"),
    "port": ("port", "--port"),
    "storage": ("storage", "--storage"),
    "db_path": ("db_path", "--db-path"),
    "redis_url": ("adapters.broadcast.url", "--redis-url"),
    "postgres_url": ("adapters.long_term_store.url", "--postgres-url"),
    "log_level": ("log_level", "--log-level"),
    "access_log": ("access_log", "--access-log"),
    "heartbeat_seconds": ("heartbeat_seconds", "--heartbeat-seconds"),
    "retry_ms": ("retry_ms", "--retry-ms"),
    "write_timeout": ("write_timeout_seconds", "--write-timeout"),
    "shutdown_timeout": ("shutdown_timeout_seconds", "--shutdown-timeout"),
    "startup_timeout": ("startup_timeout_seconds", "--startup-timeout"),
    "cors_origin": ("cors", "--cors-origin"),
    "max_body_bytes": ("limits.max_body_bytes", "--max-body-bytes"),
    "max_data_bytes": ("limits.max_data_bytes", "--max-data-bytes"),
    "max_import_bytes": ("limits.max_import_bytes", "--max-import-bytes"),
    "max_batch": ("limits.max_batch", "--max-batch"),
    "default_page_size": ("limits.default_page_size", "--default-page-size"),
    "max_page_size": ("limits.max_page_size", "--max-page-size"),
    "queue_limit": ("limits.queue_limit", "--queue-limit"),
    "workers": ("processes", "--workers"),
    "auth_mode": ("auth.mode", "--auth-mode"),
    "metrics": ("metrics", "--metrics"),
}


def _flags(ctx: typer.Context, values: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    flags: dict[str, tuple[str, Any]] = {}
    for param, (path, flag) in _FLAG_PATHS.items():
        if _given(ctx, param):
            flags[path] = (flag, values[param])
    if "redis_url" in values and _given(ctx, "redis_url"):
        flags["adapters.short_term_store.url"] = ("--redis-url", values["redis_url"])
    if values.get("verbose") and "log_level" not in flags:
        flags["log_level"] = ("--verbose", "debug")
    return flags


def start(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "-c",
            "--config",
            metavar="FILE",
            help="Configuration file (.py, .yaml, .yml, .toml, .json). "
            "Default: $TASKCAST_CONFIG, else taskcast.config.* in the working directory.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", metavar="HOST", help="Interface to listen on.  [default: 127.0.0.1]"
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "-p",
            "--port",
            metavar="PORT",
            help="Port to listen on (0: any free port).  [default: 3721]",
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "-s", "--storage", metavar="NAME", help="memory, sqlite or redis.  [default: sqlite]"
        ),
    ] = None,
    db_path: Annotated[
        Path | None,
        typer.Option(
            "--db-path",
            metavar="FILE",
            help="SQLite file.  [default: $XDG_DATA_HOME/taskcast/taskcast.db]",
            show_default=False,
        ),
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", metavar="URL", help="Redis URL (storage redis).")
    ] = None,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            "--postgres-url", metavar="URL", help="PostgreSQL URL of the long-term store."
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            help="debug, info, warning (or warn), error or critical.  [default: info]",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Same as --log-level debug.")
    ] = False,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log", help="Log every HTTP request.  [default: off]"
        ),
    ] = None,
    heartbeat_seconds: Annotated[
        float | None,
        typer.Option(
            "--heartbeat-seconds", metavar="SECONDS", help="SSE keep-alive interval.  [default: 15]"
        ),
    ] = None,
    retry_ms: Annotated[
        int | None,
        typer.Option(
            "--retry-ms", metavar="MS", help="SSE retry: hint for clients.  [default: 3000]"
        ),
    ] = None,
    write_timeout: Annotated[
        float | None,
        typer.Option(
            "--write-timeout",
            metavar="SECONDS",
            help="Close an SSE stream whose client accepts no data for this long.  [default: 30]",
        ),
    ] = None,
    shutdown_timeout: Annotated[
        float | None,
        typer.Option(
            "--shutdown-timeout",
            metavar="SECONDS",
            help="Seconds a graceful stop waits for requests in flight.  [default: 10]",
        ),
    ] = None,
    startup_timeout: Annotated[
        float | None,
        typer.Option(
            "--startup-timeout",
            metavar="SECONDS",
            help="Seconds to wait for Redis and PostgreSQL at start (0: one try).  [default: 30]",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            metavar="ORIGIN",
            help="Allowed CORS origin (repeatable; * for any).  [default: CORS off]",
        ),
    ] = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-body-bytes", metavar="BYTES", help="Request body limit.  [default: 1048576]"
        ),
    ] = None,
    max_data_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-data-bytes", metavar="BYTES", help="Event data limit.  [default: 262144]"
        ),
    ] = None,
    max_import_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-import-bytes",
            metavar="BYTES",
            help="Task archive import body limit.  [default: 16777216]",
        ),
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(
            "--max-batch", metavar="N", help="Events per publish request.  [default: 1000]"
        ),
    ] = None,
    default_page_size: Annotated[
        int | None,
        typer.Option(
            "--default-page-size",
            metavar="N",
            help="Tasks per GET /tasks page without a limit.  [default: 100]",
        ),
    ] = None,
    max_page_size: Annotated[
        int | None,
        typer.Option(
            "--max-page-size", metavar="N", help="Largest GET /tasks limit.  [default: 1000]"
        ),
    ] = None,
    queue_limit: Annotated[
        int | None,
        typer.Option(
            "--queue-limit",
            metavar="N",
            help="Events buffered per SSE subscriber.  [default: 10000]",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "-w",
            "--workers",
            metavar="N",
            help="Server processes; more than 1 needs storage redis.  [default: 1]",
        ),
    ] = None,
    auth_mode: Annotated[
        str | None,
        typer.Option("--auth-mode", metavar="MODE", help="none, jwt or custom.  [default: none]"),
    ] = None,
    metrics: Annotated[
        bool | None,
        typer.Option(
            "--metrics/--no-metrics",
            help="Serve Prometheus metrics at GET /metrics.  [default: off]",
        ),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the resolved settings as JSON (secrets masked) and exit.",
        ),
    ] = False,
) -> None:
    """Run the Taskcast server (the default command)."""
    from ._errors import SettingsError
    from ._logging import configure_logging
    from ._resolve import load_settings

    values = dict(ctx.params)
    try:
        settings = load_settings(
            config_path=config, flags=_flags(ctx, values), environ=dict(os.environ)
        )
    except SettingsError as exc:
        raise fail(exc.message, 2) from None
    if print_config:
        typer.echo(json.dumps(settings.redacted(), indent=2))
        return
    log_config = configure_logging(settings.log_level, access_log=settings.access_log)
    warn_about(settings)
    run_server(settings, log_config)


def warn_about(settings: TaskcastSettings) -> None:
    """Log what is allowed but probably a mistake."""
    for key in settings.unused_keys:
        logger.warning("config key %r is not used by this server; ignored", key)
    if settings.auth.mode == "none" and settings.host not in _LOOPBACK:
        logger.warning(
            "listening on %s without authentication: anyone who can reach it may create, "
            "read and delete tasks (set auth.mode)",
            settings.host,
        )


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def migrate(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            metavar="URL",
            help="PostgreSQL URL. Default: $TASKCAST_POSTGRES_URL, else adapters.longTermStore.url.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "-c", "--config", metavar="FILE", help="Configuration file.", show_default=False
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Apply without asking.")] = False,
) -> None:
    """Apply pending PostgreSQL migrations of the long-term store."""
    from ._errors import SettingsError
    from ._resolve import load_settings

    flags = {"adapters.long_term_store.url": ("--url", url)} if url else {}
    try:
        settings = load_settings(config_path=config, flags=flags, environ=dict(os.environ))
    except SettingsError as exc:
        raise fail(exc.message, 2) from None
    target = settings.adapters.long_term_store.url
    if not target:
        raise fail(
            "no PostgreSQL URL: pass --url, set TASKCAST_POSTGRES_URL or "
            "adapters.longTermStore.url",
            2,
        )
    from taskcast.postgres import run_migrate_command

    code = run_migrate_command(
        target,
        yes=yes,
        interactive=sys.stdin.isatty(),
        echo=typer.echo,
        confirm=lambda question: typer.confirm(question, default=True),
        schema=settings.postgres.schema_name,
        error=lambda message: typer.echo(f"taskcast: {message}", err=True),
    )
    raise typer.Exit(code)


def run_server(settings: TaskcastSettings, log_config: dict[str, Any]) -> None:
    """Serve until stopped; one-line errors and exit codes 1 (startup) / 2 (settings)."""
    from taskcast.core import ConfigError, TaskcastError

    from ._errors import StartupError
    from ._serve import serve

    try:
        serve(settings, log_config=log_config, announce=_announce)
    except ConfigError as exc:
        # SettingsError, or a library refusing a value (e.g. a JWT secret too short).
        raise fail(exc.message, 2) from None
    except (StartupError, TaskcastError) as exc:
        raise fail(exc.message, 1) from None


def _announce(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
