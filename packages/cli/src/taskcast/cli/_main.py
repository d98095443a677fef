"""The ``taskcast`` command line (typer owns argv; pydantic-settings merges the rest)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from taskcast.core import ConfigError, TaskcastError

from ._errors import SettingsError, StartupError
from ._logging import configure_logging
from ._nodes import DEFAULT_NODE, DEFAULT_URL, NodeStore, Target, resolve_target
from ._output import Output
from ._resolve import load_settings
from ._settings import TaskcastSettings
from ._usage import ArgumentsCommand

__all__ = ["app", "main"]

logger = logging.getLogger("taskcast.cli")


class _DefaultToStart(TyperGroup):
    """``taskcast`` and ``taskcast --port 4000`` mean ``taskcast start ...`` (as the original)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        first = args[0] if args else None
        # Only options imply `start`; an unknown word is reported as an unknown command.
        # While completing (`taskcast <TAB>`), no word yet means a command name is wanted.
        if (first is None and not ctx.resilient_parsing) or (
            first is not None and first.startswith("-") and first not in _ROOT_OPTIONS
        ):
            args = ["start", *args]
        return super().parse_args(ctx, args)

    def _main_shell_completion(
        self, ctx_args: Any, prog_name: str, complete_var: Any = None
    ) -> None:
        # `taskcast completion SHELL` scripts call back with _TASKCAST_COMPLETE set; typer
        # registers its shells' completers only with add_completion, which would add two
        # options to every help page instead of one command.
        if os.environ.get(complete_var or "_TASKCAST_COMPLETE"):
            from typer._completion_classes import completion_init

            completion_init()
        super()._main_shell_completion(ctx_args, prog_name, complete_var)

    # Usage errors (a bad value, an unknown option or command) are one `taskcast:` line
    # like every other error, not typer's four lines: the root's own arguments are parsed
    # in make_context, every subcommand's within invoke.
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        from typer._click.exceptions import ClickException

        try:
            return super().make_context(*args, **kwargs)
        except ClickException as exc:
            from ._usage import one_line

            raise one_line(exc) from None

    def invoke(self, ctx: Any) -> Any:
        from typer._click.exceptions import ClickException

        try:
            return super().invoke(ctx)
        except ClickException as exc:
            from ._usage import one_line

            raise one_line(exc) from None


_ROOT_OPTIONS = {"--help", "-h", "--version"}

app = typer.Typer(
    name="taskcast",
    cls=_DefaultToStart,
    help="Taskcast: long-running task tracking with resumable SSE streams.",
    add_completion=False,
    # Tracebacks with local variables could print secrets; errors are one line instead.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"taskcast {version('taskcast-cli')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Show the version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Taskcast: long-running task tracking with resumable SSE streams.

    Without a command, `taskcast` runs `taskcast start`.
    """


def fail(message: str, code: int) -> typer.Exit:
    """Print ``taskcast: <message>`` on stderr; return the Exit to raise."""
    typer.echo(f"taskcast: {message}", err=True)
    return typer.Exit(code)


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


@app.command(no_args_is_help=False)
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


@app.command()
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


_SHELLS = ("bash", "zsh", "fish")


@app.command(cls=ArgumentsCommand)
def completion(
    shell: Annotated[
        str, typer.Argument(metavar="SHELL", help="bash, zsh or fish.", show_default=False)
    ],
) -> None:
    """Print the shell completion script for bash, zsh or fish.

    bash: eval "$(taskcast completion bash)" in ~/.bashrc; zsh: the same in ~/.zshrc (after
    compinit); fish: save the output as ~/.config/fish/completions/taskcast.fish.
    """
    if shell not in _SHELLS:
        raise fail(f"invalid value for SHELL: expected bash, zsh or fish, got {shell!r}", 2)
    from typer._completion_shared import get_completion_script

    typer.echo(
        get_completion_script(prog_name="taskcast", complete_var="_TASKCAST_COMPLETE", shell=shell)
    )


_URL_OPTION = typer.Option(
    "--url",
    metavar="URL",
    help="Server URL (else --node, $TASKCAST_URL, the current node, http://127.0.0.1:3721).",
    show_default=False,
)
_TOKEN_OPTION = typer.Option(
    "--token",
    metavar="TOKEN",
    help="Bearer token (else the node's, else $TASKCAST_TOKEN).",
    show_default=False,
)
_NODE_OPTION = typer.Option(
    "--node", metavar="NAME", help="A server saved with `taskcast node add`.", show_default=False
)


def _positive(value: float) -> float:
    if not value > 0:  # also refuses NaN
        raise typer.BadParameter(f"expected a number greater than 0, got {value:g}")
    return value


def _at_least(least: int) -> Callable[[int | None], int | None]:
    # A check of our own rather than typer's min=, whose help shows "[x>=1]".
    def check(value: int | None) -> int | None:
        if value is not None and value < least:
            raise typer.BadParameter(f"expected an integer of at least {least}, got {value}")
        return value

    return check


_TIMEOUT_OPTION = typer.Option(
    "--timeout",
    metavar="SECONDS",
    callback=_positive,
    help="Seconds to wait for an answer (more than 0).",
)
_JSON_OPTION = typer.Option("--json", help="One JSON object per line, for machines.")
_TYPES_OPTION = typer.Option(
    "--types", metavar="PATTERNS", help="Event type patterns (llm.*, progress), comma-separated."
)
_LEVELS_OPTION = typer.Option(
    "--levels", metavar="LEVELS", help="Levels (debug, info, warn, error), comma-separated."
)


def _target(url: str | None, token: str | None, node: str | None) -> Target:
    try:
        return resolve_target(url=url, token=token, node=node, environ=dict(os.environ))
    except SettingsError as exc:
        raise fail(exc.message, 2) from None


@app.command()
def ping(
    url: Annotated[str | None, _URL_OPTION] = None,
    token: Annotated[str | None, _TOKEN_OPTION] = None,
    node: Annotated[str | None, _NODE_OPTION] = None,
    timeout: Annotated[float, _TIMEOUT_OPTION] = 5.0,
) -> None:
    """Check that a server answers (GET /health)."""
    from ._remote import ping as run_ping

    target = _target(url, token, node)
    raise typer.Exit(run_ping(target.url, token=target.token, timeout=timeout, echo=typer.echo))


@app.command()
def doctor(
    url: Annotated[str | None, _URL_OPTION] = None,
    token: Annotated[str | None, _TOKEN_OPTION] = None,
    node: Annotated[str | None, _NODE_OPTION] = None,
    timeout: Annotated[float, _TIMEOUT_OPTION] = 5.0,
) -> None:
    """Report a server's auth and storage health (/health/detail)."""
    from ._remote import doctor as run_doctor

    target = _target(url, token, node)
    raise typer.Exit(run_doctor(target.url, token=target.token, timeout=timeout, echo=typer.echo))


@app.command(cls=ArgumentsCommand)
def logs(
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task to follow.")],
    url: Annotated[str | None, _URL_OPTION] = None,
    token: Annotated[str | None, _TOKEN_OPTION] = None,
    node: Annotated[str | None, _NODE_OPTION] = None,
    types: Annotated[list[str] | None, _TYPES_OPTION] = None,
    levels: Annotated[list[str] | None, _LEVELS_OPTION] = None,
    as_json: Annotated[bool, _JSON_OPTION] = False,
) -> None:
    """Follow a task's events live until it ends.

    Exit status: 0 when the task completed, 3 when it failed, timed out, was cancelled or
    deleted, 1 when the server could not be reached for 15 s or refused. A dropped
    connection or a restarted server is resumed from the last event seen.
    """
    from ._client_cmds import logs as run_logs

    target = _target(url, token, node)
    code = run_logs(
        target.url,
        task_id,
        token=target.token,
        types=_comma_list(types),
        levels=_comma_list(levels),
        out=Output(json_mode=as_json),
    )
    raise typer.Exit(code)


@app.command()
def tail(
    url: Annotated[str | None, _URL_OPTION] = None,
    token: Annotated[str | None, _TOKEN_OPTION] = None,
    node: Annotated[str | None, _NODE_OPTION] = None,
    types: Annotated[list[str] | None, _TYPES_OPTION] = None,
    levels: Annotated[list[str] | None, _LEVELS_OPTION] = None,
    count: Annotated[
        int | None,
        typer.Option(
            "--count",
            "-n",
            callback=_at_least(1),
            metavar="N",
            help="Stop after this many events.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, _JSON_OPTION] = False,
) -> None:
    """Follow the live events of every task (GET /events).

    Runs until interrupted (Ctrl+C, exit 0) or --count events were printed.

    Each line starts with a short form of the task id. Only events published after the
    stream opens are shown (the global stream has no history).
    """
    from ._client_cmds import tail as run_tail

    target = _target(url, token, node)
    try:
        code = run_tail(
            target.url,
            token=target.token,
            types=_comma_list(types),
            levels=_comma_list(levels),
            count=count,
            out=Output(json_mode=as_json),
        )
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


tasks_app = typer.Typer(
    name="tasks",
    help="List, inspect, create and cancel tasks.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(tasks_app)


@tasks_app.command("list")
def tasks_list(
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            metavar="STATUSES",
            help="Only these statuses (comma-separated or repeated).",
        ),
    ] = None,
    type: Annotated[
        list[str] | None,
        typer.Option(
            "--type", metavar="PATTERNS", help="Only these types; patterns such as llm.* work."
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", callback=_at_least(1), metavar="N", help="Show the N newest tasks."
        ),
    ] = 20,
    url: Annotated[str | None, _URL_OPTION] = None,
    token: Annotated[str | None, _TOKEN_OPTION] = None,
    node: Annotated[str | None, _NODE_OPTION] = None,
    as_json: Annotated[bool, _JSON_OPTION] = False,
) -> None:
    """List the most recently created tasks (oldest of them first)."""
    from ._client_cmds import tasks_list as run

    target = _target(url, token, node)
    code = run(
        target.url,
        token=target.token,
        status=_comma_list(status),
        type=_comma_list(type),
        limit=limit,
        out=Output(json_mode=as_json),
    )
    raise typer.Exit(code)


@tasks_app.command("inspect", cls=ArgumentsCommand)
def tasks_inspect(
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task.")],
    events: Annotated[
        int,
        typer.Option(
            "--events",
            "-e",
            callback=_at_least(0),
            metavar="N",
            help="How many of the last events to show.",
        ),
    ] = 5,
    url: Annotated[str | None, _URL_OPTION] = None,
    token: Annotated[str | None, _TOKEN_OPTION] = None,
    node: Annotated[str | None, _NODE_OPTION] = None,
    as_json: Annotated[bool, _JSON_OPTION] = False,
) -> None:
    """Show a task and its last events."""
    from ._client_cmds import tasks_inspect as run

    target = _target(url, token, node)
    code = run(
        target.url, task_id, token=target.token, events=events, out=Output(json_mode=as_json)
    )
    raise typer.Exit(code)


@tasks_app.command("create")
def tasks_create(
    type: Annotated[
        str | None, typer.Option("--type", metavar="TYPE", help="The task type.")
    ] = None,
    params: Annotated[
        str | None, typer.Option("--params", metavar="JSON", help="Parameters, a JSON object.")
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option("--ttl", callback=_at_least(1), metavar="SECONDS", help="Time to live."),
    ] = None,
    task_id: Annotated[
        str | None,
        typer.Option("--id", metavar="ID", help="Choose the id (default: a new ULID)."),
    ] = None,
    url: Annotated[str | None, _URL_OPTION] = None,
    token: Annotated[str | None, _TOKEN_OPTION] = None,
    node: Annotated[str | None, _NODE_OPTION] = None,
    as_json: Annotated[bool, _JSON_OPTION] = False,
) -> None:
    """Create a task and print its id."""
    from ._client_cmds import tasks_create as run

    parsed: dict[str, Any] | None = None
    if params is not None:
        try:
            parsed = json.loads(params)
        except ValueError as exc:
            raise fail(f"--params is not JSON: {exc}", 2) from None
        if not isinstance(parsed, dict):
            raise fail("--params must be a JSON object", 2)
    target = _target(url, token, node)
    code = run(
        target.url,
        token=target.token,
        type=type,
        params=parsed,
        ttl=ttl,
        task_id=task_id,
        out=Output(json_mode=as_json),
    )
    raise typer.Exit(code)


@tasks_app.command("cancel", cls=ArgumentsCommand)
def tasks_cancel(
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task.")],
    url: Annotated[str | None, _URL_OPTION] = None,
    token: Annotated[str | None, _TOKEN_OPTION] = None,
    node: Annotated[str | None, _NODE_OPTION] = None,
    as_json: Annotated[bool, _JSON_OPTION] = False,
) -> None:
    """Cancel a task (its subscribers receive the end of the stream)."""
    from ._client_cmds import tasks_cancel as run

    target = _target(url, token, node)
    raise typer.Exit(run(target.url, task_id, token=target.token, out=Output(json_mode=as_json)))


node_app = typer.Typer(
    name="node",
    help="Named servers for the client commands (~/.taskcast/nodes.json).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(node_app)


def _store() -> NodeStore:
    return NodeStore.default(dict(os.environ))


@node_app.command("add", cls=ArgumentsCommand)
def node_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A name for the server.")],
    url: Annotated[str, typer.Option("--url", metavar="URL", help="The server's URL.")],
    token: Annotated[
        str | None, typer.Option("--token", metavar="TOKEN", help="Its token.")
    ] = None,
    token_type: Annotated[
        str,
        typer.Option(
            "--token-type",
            metavar="jwt|admin",
            help="jwt: sent as is; admin: the server's admin token, exchanged for a JWT "
            "(POST /admin/token) before each command.",
        ),
    ] = "jwt",
) -> None:
    """Save a server (the first one saved becomes the current one)."""
    if token_type not in ("jwt", "admin"):
        raise fail(f"--token-type must be jwt or admin, got {token_type!r}", 2)
    try:
        node = _store().add(name, url, token=token, token_type=token_type)  # type: ignore[arg-type]
    except SettingsError as exc:
        raise fail(exc.message, 2) from None
    typer.echo(f"added node {node.name} → {node.url}")


@node_app.command("use", cls=ArgumentsCommand)
def node_use(name: Annotated[str, typer.Argument(metavar="NAME", help="A saved server.")]) -> None:
    """Make a saved server the default of the client commands."""
    try:
        node = _store().use(name)
    except SettingsError as exc:
        raise fail(exc.message, 2) from None
    typer.echo(f"using node {node.name} → {node.url}")


@node_app.command("remove", cls=ArgumentsCommand)
def node_remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A saved server.")],
) -> None:
    """Forget a saved server."""
    try:
        _store().remove(name)
    except SettingsError as exc:
        raise fail(exc.message, 2) from None
    typer.echo(f"removed node {name}")


@node_app.command("list")
def node_list() -> None:
    """The saved servers; * marks the current one."""
    store = _store()
    try:
        nodes = store.nodes()
        current = store.current()
    except SettingsError as exc:
        raise fail(exc.message, 2) from None
    if current is None:
        typer.echo(f"* {DEFAULT_NODE:<12} {DEFAULT_URL}  (built-in)")
    for name, saved in sorted(nodes.items()):
        mark = "*" if current is not None and current.name == name else " "
        auth = f"  [{saved.token_type} token]" if saved.token else ""
        typer.echo(f"{mark} {name:<12} {saved.url}{auth}")


def _comma_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def run_server(settings: TaskcastSettings, log_config: dict[str, Any]) -> None:
    """Serve until stopped; one-line errors and exit codes 1 (startup) / 2 (settings)."""
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


def _add_archive_commands() -> None:
    # `taskcast export` / `import` live in their own module (it reads this one's options).
    from ._archive_cmds import register

    register(app)


_add_archive_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``taskcast`` script."""
    app(args=argv, prog_name="taskcast")
