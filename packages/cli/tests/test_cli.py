"""Command-line parsing, the default command, configuration output and one-line errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from taskcast.cli import app, resolve_settings
from taskcast.cli._server_cli import run_server

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def printed(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = invoke(*args, "--print-config", env=env)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_help_and_version(clean_env: Path) -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "start" in result.stdout
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("taskcast 0.")
    result = invoke("start", "--help")
    assert result.exit_code == 0
    for flag in ("--config", "--port", "--storage", "--db-path", "--workers", "--log-level"):
        assert flag in result.stdout


def test_start_is_the_default_command(clean_env: Path) -> None:
    assert printed()["port"] == 3721
    assert printed("--port", "4000")["port"] == 4000
    assert printed("start", "-p", "4001")["port"] == 4001
    typo = invoke("strat")
    assert typo.exit_code == 2
    assert typo.stderr == (
        "taskcast: no such command 'strat'; did you mean 'start'? (see 'taskcast -h')\n"
    )


def test_priority_flags_env_file(clean_env: Path) -> None:
    (clean_env / "taskcast.config.yaml").write_text(
        "port: 1000\nhost: 0.0.0.0\nretryMs: 5\nlimits:\n  maxBatch: 9\n"
    )
    env = {"TASKCAST_PORT": "2000", "TASKCAST_RETRY_MS": "6"}
    data = printed("--port", "3000", env=env)
    assert data["port"] == 3000
    assert data["retryMs"] == 6
    assert data["host"] == "0.0.0.0"
    assert data["limits"]["maxBatch"] == 9
    assert data["configFile"].endswith("taskcast.config.yaml")
    assert printed(env=env)["port"] == 2000
    assert printed()["port"] == 1000


def test_every_flag_reaches_the_settings(clean_env: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"heartbeatSeconds": 99}')
    data = printed(
        "-c", str(config),
        "--host", "0.0.0.0",
        "-p", "1",
        "-s", "memory",
        "--db-path", str(tmp_path / "x.db"),
        "--redis-url", "redis://r:1/0",
        "--postgres-url", "postgresql://h/db",
        "--log-level", "warn",
        "--access-log",
        "--heartbeat-seconds", "2",
        "--retry-ms", "3",
        "--write-timeout", "7.5",
        "--shutdown-timeout", "4",
        "--cors-origin", "https://a", "--cors-origin", "https://b",
        "--max-body-bytes", "5",
        "--max-data-bytes", "6",
        "--max-import-bytes", "11",
        "--max-batch", "7",
        "--default-page-size", "9",
        "--max-page-size", "10",
        "--queue-limit", "8",
        "-w", "2",
        "--auth-mode", "jwt",
    )  # fmt: skip
    assert data["host"] == "0.0.0.0"
    assert data["port"] == 1
    assert data["storage"] == "memory"
    assert data["dbPath"] == str(tmp_path / "x.db")
    assert data["adapters"]["broadcast"]["url"] == "redis://r:1/0"
    assert data["adapters"]["shortTermStore"]["url"] == "redis://r:1/0"
    assert data["adapters"]["longTermStore"]["url"] == "postgresql://h/db"
    assert data["logLevel"] == "warning"
    assert data["accessLog"] is True
    assert data["heartbeatSeconds"] == 2
    assert data["retryMs"] == 3
    assert data["writeTimeoutSeconds"] == 7.5
    assert data["shutdownTimeoutSeconds"] == 4
    assert data["cors"] == ["https://a", "https://b"]
    assert data["limits"] == {
        "maxBodyBytes": 5,
        "maxDataBytes": 6,
        "maxImportBytes": 11,
        "maxBatch": 7,
        "maxIdChars": 256,
        "maxNameChars": 256,
        "defaultPageSize": 9,
        "maxPageSize": 10,
        "queueLimit": 8,
        "eventCacheBytes": 32 * 1024 * 1024,
        "maxHeaderBytes": 64 * 1024,
        "maxHeaders": 100,
        "maxUrlBytes": 8 * 1024,
        "headerTimeoutSeconds": 15.0,
        "maxConnections": None,
    }
    assert data["processes"] == 2
    assert data["auth"]["mode"] == "jwt"
    assert data["configFile"] == str(config)


def test_verbose_means_debug_unless_a_level_is_given(clean_env: Path) -> None:
    assert printed("-v")["logLevel"] == "debug"
    assert printed("-v", "--log-level", "error")["logLevel"] == "error"


def test_print_config_masks_secrets(clean_env: Path) -> None:
    (clean_env / "taskcast.config.yaml").write_text(
        "webhook:\n  global:\n    - url: https://u:hookpass@hooks.example/in?key=qk-1\n"
        "      secret: whsec-x\n"
    )
    data = printed(env={"TASKCAST_JWT_SECRET": "hunter2", "TASKCAST_ADMIN_TOKEN": "t0k"})
    assert data["auth"]["jwt"]["secret"] == "***"
    assert data["adminToken"] == "***"
    # A global webhook's URL follows the rule of every webhook URL shown (issue 15 item 1).
    assert data["webhook"]["global"][0]["url"] == "https://***@hooks.example/in?key=***"
    assert data["webhook"]["global"][0]["secret"] == "***"


@pytest.mark.parametrize(
    ("args", "env", "file", "message"),
    [
        ((), {}, "port: abc\n",
         'config error in ./taskcast.config.yaml: port: expected an integer, got "abc"'),
        ((), {}, "auth:\n  mode: magic\n",
         'config error in ./taskcast.config.yaml: auth.mode: expected none, jwt or custom, got "magic"'),
        ((), {}, "limits:\n  maxBatchh: 3\n",
         "config error in ./taskcast.config.yaml: limits.maxBatchh: unknown key"),
        ((), {}, "port: [1,\n",
         "config error in ./taskcast.config.yaml: invalid YAML at line 2, column 1: "
         "expected the node content, but found '<stream end>'"),
        ((), {"TASKCAST_PORT": "x"}, None,
         'invalid environment variable TASKCAST_PORT: expected an integer, got "x"'),
        (("--storage", "mongo"), {}, None,
         'invalid value for --storage: expected memory, sqlite or redis, got "mongo"'),
        (("--port", "-1"), {}, None,
         "invalid value for --port: expected a number greater than or equal to 0, got -1"),
        (("-c", "missing.toml"), {}, None, "config error in ./missing.toml: file not found"),
    ],
)  # fmt: skip
def test_errors_are_one_line_with_exit_2(
    clean_env: Path, args: tuple[str, ...], env: dict[str, str], file: str | None, message: str
) -> None:
    if file is not None:
        (clean_env / "taskcast.config.yaml").write_text(file)
    result = invoke(*args, env=env)
    assert result.exit_code == 2
    assert result.stderr == f"taskcast: {message}\n"
    assert result.stdout == ""


def test_run_server_reports_startup_errors_in_one_line(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        settings = resolve_settings(
            flags={"port": ("--port", port), "storage": ("--storage", "memory")}
        )
        with pytest.raises(typer.Exit) as info:
            run_server(settings, {"version": 1})
    assert info.value.exit_code == 1
    assert capsys.readouterr().err == (
        f"taskcast: cannot listen on 127.0.0.1:{port}: "
        "the address is already in use (is another server running?)\n"
    )
    settings = resolve_settings(
        flags={"processes": ("--workers", 3), "storage": ("--storage", "memory")}
    )
    with pytest.raises(typer.Exit) as info:
        run_server(settings, {"version": 1})
    assert info.value.exit_code == 2
    assert capsys.readouterr().err.startswith(
        "taskcast: --workers 3 needs storage shared across processes (redis): with storage memory"
    )


QUIET = {"version": 1, "disable_existing_loggers": False}


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (
            {
                "storage": ("-s", "redis"),
                "redis_url": ("--redis-url", "redis://127.0.0.1:1/0"),
                "startup_timeout_seconds": ("--startup-timeout", 0),
            },
            1,
            "taskcast: cannot reach Redis (redis://127.0.0.1:1/0) within 0 s "
            "(startupTimeoutSeconds): Error 111 connecting to 127.0.0.1:1. "
            "Connect call failed ('127.0.0.1', 1).\n",
        ),
        (
            {
                "storage": ("-s", "redis"),
                "redis_url": ("--redis-url", "redis://127.0.0.1:1/0"),
                "processes": ("-w", 2),
                "startup_timeout_seconds": ("--startup-timeout", 0),
            },
            1,
            "taskcast: cannot reach Redis (redis://127.0.0.1:1/0) within 0 s "
            "(startupTimeoutSeconds): Error 111 connecting to 127.0.0.1:1. "
            "Connect call failed ('127.0.0.1', 1).\n",
        ),
    ],
)
def test_run_server_backend_failures(
    clean_env: Path,
    capsys: pytest.CaptureFixture[str],
    flags: dict[str, Any],
    code: int,
    message: str,
) -> None:
    import typer

    url = flags.pop("redis_url")
    flags["adapters.broadcast.url"] = url
    settings = resolve_settings(flags={**flags, "port": ("--port", 0)})
    with pytest.raises(typer.Exit) as info:
        run_server(settings, QUIET)
    assert info.value.exit_code == code
    assert capsys.readouterr().err == message


def test_startup_warnings(caplog: pytest.LogCaptureFixture) -> None:
    from taskcast.cli._server_cli import warn_about

    caplog.set_level("WARNING", logger="taskcast.cli")
    warn_about(resolve_settings(file=(Path("f.yaml"), {"workers": {}, "host": "0.0.0.0"})))
    assert [r.getMessage() for r in caplog.records] == [
        "config key 'workers' is not used by this server; ignored",
        "listening on 0.0.0.0 without authentication: anyone who can reach it may create, "
        "read and delete tasks (set auth.mode)",
    ]
    caplog.clear()
    warn_about(
        resolve_settings(flags={"auth.mode": ("--auth-mode", "jwt"), "host": ("--host", "::")})
    )
    warn_about(resolve_settings())
    assert caplog.records == []
