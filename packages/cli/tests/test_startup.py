"""``taskcast start`` with Redis and PostgreSQL that are malformed, absent or late.

The real command in a subprocess: a malformed URL is a one-line settings error at once
(exit 2); a dependency that does not answer is waited for ``startupTimeoutSeconds``, then
one line and exit 1 (it used to start anyway and log warnings for ever); one that comes up
during the wait is used.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ._server import command, env_for, run
from ._services import POSTGRES_URL, REDIS_URL


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    began = time.monotonic()
    result = run(["start", "--port", "0", *args], cwd=tmp_path, env=env_for(tmp_path, env))
    return result.returncode, result.stderr, time.monotonic() - began


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--storage", "redis", "--redis-url", "notaurl"],
            "taskcast: invalid value for --redis-url: expected a Redis URL starting with "
            "redis://, rediss:// or unix:// (e.g. redis://localhost:6379/0)",
        ),
        (
            ["--storage", "redis", "--redis-url", "redis://h/x"],
            "taskcast: invalid value for --redis-url: the Redis URL's path must be a database "
            "number (e.g. /0)",
        ),
        (
            ["--storage", "redis", "--redis-url", REDIS_URL, "--postgres-url", "nonsense"],
            "taskcast: invalid value for --postgres-url: not a PostgreSQL URL (e.g. "
            'postgresql://user@host:5432/db): missing "=" after "nonsense" in connection info '
            "string",
        ),
        (
            ["--storage", "redis", "--redis-url", REDIS_URL, "--postgres-url", "mysql://u:pw@h/d"],
            "taskcast: invalid value for --postgres-url: expected a PostgreSQL URL starting "
            "with postgresql:// or postgres://",
        ),
    ],
)
def test_a_malformed_url_is_a_settings_error_at_once(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, err, took = _start(tmp_path, *args)
    assert code == 2, err
    assert err == message + "\n"
    assert "pw" not in err
    # Only the interpreter's start-up: no connection is tried (it took 22 s).
    assert took < 15


def test_a_malformed_url_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    code, err, _ = _start(
        tmp_path, "--storage", "redis", env={"TASKCAST_REDIS_URL": "http://u:secret@h"}
    )
    assert code == 2
    assert err.startswith("taskcast: invalid environment variable TASKCAST_REDIS_URL: expected")
    assert "secret" not in err


@pytest.mark.parametrize(
    ("postgres", "where", "reason"),
    [
        ("postgresql://nobody@127.0.0.1:1/x", "x on 127.0.0.1:1", "Connection refused"),
        (
            POSTGRES_URL.rsplit("/", 1)[0] + "/taskcast_no_such_db",
            "taskcast_no_such_db on ",
            'database "taskcast_no_such_db" does not exist',
        ),
    ],
)
def test_an_unreachable_postgres_is_waited_for_then_one_line(
    tmp_path: Path, postgres: str, where: str, reason: str
) -> None:
    code, err, took = _start(
        tmp_path,
        "--storage", "redis", "--redis-url", REDIS_URL, "--postgres-url", postgres,
        "--startup-timeout", "3",
    )  # fmt: skip
    assert code == 1, err
    lines = err.splitlines()
    assert "listening" not in err
    # One warning when the wait begins, not one per attempt; then the one-line error.
    assert len(lines) == 2, err
    assert "is not reachable yet" in lines[0] and "retrying for up to 3 s" in lines[0]
    assert lines[1].startswith(f"taskcast: cannot reach PostgreSQL ({where}")
    assert "within 3 s (startupTimeoutSeconds): " in lines[1] and reason in lines[1]
    assert took >= 3


def test_an_unreachable_redis_fails_after_the_startup_timeout(tmp_path: Path) -> None:
    port = _free_port()
    code, err, took = _start(
        tmp_path,
        "--storage", "redis", "--redis-url", f"redis://127.0.0.1:{port}/0",
        env={"TASKCAST_STARTUP_TIMEOUT_SECONDS": "2"},
    )  # fmt: skip
    assert code == 1, err
    assert err.splitlines()[-1].startswith(
        f"taskcast: cannot reach Redis (redis://127.0.0.1:{port}/0) within 2 s "
        "(startupTimeoutSeconds): "
    )
    assert 2 <= took < 20


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_a_redis_that_comes_up_during_the_wait_is_used(tmp_path: Path) -> None:
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = subprocess.Popen(
        command(["start", "--port", "0", "--storage", "redis", "--redis-url", url]),
        cwd=tmp_path,
        env=env_for(tmp_path, {"TASKCAST_STARTUP_TIMEOUT_SECONDS": "60"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    redis_server: subprocess.Popen[bytes] | None = None
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "is not reachable yet" in first, first
        redis_server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 40
        lines = [first]
        while not any("taskcast listening on" in line for line in lines):
            assert time.monotonic() < deadline, lines
            line = proc.stderr.readline()
            assert line, lines
            lines.append(line)
        assert any("is reachable" in line for line in lines), lines
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        if redis_server is not None:
            redis_server.terminate()
            redis_server.wait(timeout=10)
    assert proc.returncode == 0


def test_the_startup_timeout_setting(tmp_path: Path) -> None:
    (tmp_path / "taskcast.config.yaml").write_text("startupTimeoutSeconds: 7\n")
    env = env_for(tmp_path)

    def printed(*args: str, extra: dict[str, str] | None = None) -> str:
        result = run(["start", *args, "--print-config"], cwd=tmp_path, env={**env, **(extra or {})})
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert '"startupTimeoutSeconds": 7.0' in printed()
    assert '"startupTimeoutSeconds": 5.0' in printed(
        extra={"TASKCAST_STARTUP_TIMEOUT_SECONDS": "5"}
    )
    assert '"startupTimeoutSeconds": 0.0' in printed(
        "--startup-timeout", "0", extra={"TASKCAST_STARTUP_TIMEOUT_SECONDS": "5"}
    )
    bad = run(["start", "--startup-timeout", "-1"], cwd=tmp_path, env=env)
    assert bad.returncode == 2
    assert bad.stderr == (
        "taskcast: invalid value for --startup-timeout: expected a number greater than or "
        "equal to 0, got -1.0\n"
    )
