"""``taskcast start`` on Redis (several processes) and PostgreSQL, and ``taskcast migrate``."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import typer
from typer.testing import CliRunner

from taskcast.cli import app, resolve_settings
from taskcast.cli._server_cli import run_server

from ._server import env_for, start
from ._services import POSTGRES_URL, REDIS_URL, postgres_schema, redis_prefix

__all__ = ["postgres_schema", "redis_prefix"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.anyio]

runner = CliRunner()


@pytest.mark.redis
def test_workers_on_redis_share_events_and_stop_gracefully(
    tmp_path: Path, redis_prefix: str
) -> None:
    env = env_for(tmp_path, {"TASKCAST_REDIS_PREFIX": redis_prefix, "TASKCAST_RETRY_MS": "2222"})
    # The admin token is generated once, in the parent, and shared by the workers.
    (tmp_path / "taskcast.config.yaml").write_text("adminApi: true\n")
    server = start(
        ["--storage", "redis", "--redis-url", REDIS_URL, "--workers", "2", "--port", "0"],
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert "storage: redis at redis://" in server.lines[-1]
    assert "2 processes" in server.lines[-1]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        # The workers may still be loading: wait until one answers.
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        token_line = next(line for line in server.lines if "Admin token" in line)
        admin_token = token_line.rsplit(" ", 1)[1].strip()
        for _ in range(4):
            with httpx.Client(base_url=server.url, timeout=30) as other:
                exchange = other.post("/admin/token", json={"adminToken": admin_token})
                assert exchange.status_code == 200
        task = client.post("/tasks", json={"type": "multi"}).json()
        task_id = task["id"]
        client.patch(f"/tasks/{task_id}/status", json={"status": "running"})
        body = b""
        with client.stream("GET", f"/tasks/{task_id}/events") as response:
            chunks = response.iter_raw()
            while b"taskcast:status" not in body:
                body += next(chunks)
            # Each publish on a new connection: the kernel spreads them over both processes,
            # and the subscriber sees every one whichever process took it.
            for n in range(10):
                with httpx.Client(base_url=server.url, timeout=30) as other:
                    other.post(f"/tasks/{task_id}/events", json={"type": "n", "data": {"n": n}})
            while b'"n":9' not in body:
                body += next(chunks)
            server.proc.send_signal(signal.SIGTERM)
            for chunk in chunks:
                body += chunk
    code, err = server.stop(timeout=60)
    assert code == 0, err
    positions = [body.index(f'"n":{n}'.encode()) for n in range(10)]
    assert positions == sorted(positions)
    assert b"retry: 2222" in body.split(b'"n":9', 1)[1]
    assert b"taskcast.done" not in body


@pytest.mark.postgres
def test_postgres_long_term_with_auto_migrate(tmp_path: Path, postgres_schema: str) -> None:
    env = env_for(
        tmp_path,
        {
            "TASKCAST_POSTGRES_URL": POSTGRES_URL,
            "TASKCAST_POSTGRES_SCHEMA": postgres_schema,
            "TASKCAST_AUTO_MIGRATE": "true",
        },
    )
    server = start(["--storage", "memory", "--port", "0"], cwd=tmp_path, env=env)
    assert "long-term: postgres at postgresql://" in server.lines[-1]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        task_id = client.post("/tasks", json={"type": "archived"}).json()["id"]
        client.patch(f"/tasks/{task_id}/status", json={"status": "running"})
        client.post(f"/tasks/{task_id}/events", json={"type": "log", "data": "hi"})
        client.patch(f"/tasks/{task_id}/status", json={"status": "completed"})
    code, err = server.stop()
    assert code == 0, err
    # Stopping flushed the archive writer.
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        row = conn.execute(
            f'SELECT status FROM "{postgres_schema}".taskcast_tasks WHERE id = %s', (task_id,)
        ).fetchone()
    assert row == ("completed",)


@pytest.mark.postgres
def test_migrate_command(clean_env: Path, postgres_schema: str) -> None:
    env = {"TASKCAST_POSTGRES_SCHEMA": postgres_schema}
    refused = runner.invoke(app, ["migrate", "--url", POSTGRES_URL], env=env)
    assert refused.exit_code == 1
    assert refused.stderr == (
        "taskcast: not applying without confirmation: pass --yes to apply non-interactively\n"
    )
    # The schema it migrates is named.
    from taskcast.postgres._conn import describe_url

    assert f"{describe_url(POSTGRES_URL)}, schema {postgres_schema}" in refused.stdout
    applied = runner.invoke(app, ["migrate", "--url", POSTGRES_URL, "--yes"], env=env)
    assert applied.exit_code == 0, applied.output
    assert "Applied" in applied.stdout
    env["TASKCAST_POSTGRES_URL"] = POSTGRES_URL
    again = runner.invoke(app, ["migrate", "-y"], env=env)
    assert again.exit_code == 0
    assert "up to date" in again.stdout


def test_migrate_failures_are_one_taskcast_line(clean_env: Path) -> None:
    malformed = runner.invoke(app, ["migrate", "--url", "nonsense", "-y"])
    assert malformed.exit_code == 2
    assert malformed.stderr == (
        "taskcast: invalid value for --url: not a PostgreSQL URL (e.g. "
        'postgresql://user@host:5432/db): missing "=" after "nonsense" in connection info '
        "string\n"
    )
    unreachable = runner.invoke(app, ["migrate", "--url", "postgresql://127.0.0.1:1/x", "-y"])
    assert unreachable.exit_code == 1
    assert unreachable.stderr.startswith("taskcast: cannot reach PostgreSQL (x on 127.0.0.1:1)")
    assert unreachable.stderr.count("\n") == 1 and unreachable.stdout == ""


def test_migrate_without_url_is_a_one_line_error(clean_env: Path) -> None:
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 2
    assert result.stderr == (
        "taskcast: no PostgreSQL URL: pass --url, set TASKCAST_POSTGRES_URL or "
        "adapters.longTermStore.url\n"
    )
    (clean_env / "taskcast.config.json").write_text('{"port": "x"}')
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 2
    assert result.stderr.startswith("taskcast: config error in ./taskcast.config.json: port:")


def test_unreachable_postgres_with_auto_migrate_fails_in_one_line(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = resolve_settings(
        flags={"storage": ("-s", "memory"), "port": ("-p", 0)},
        environ={
            "TASKCAST_POSTGRES_URL": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2",
            "TASKCAST_AUTO_MIGRATE": "1",
            "TASKCAST_STARTUP_TIMEOUT_SECONDS": "0",
        },
    )
    with pytest.raises(typer.Exit) as info:
        run_server(settings, {"version": 1, "disable_existing_loggers": False})
    assert info.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        "taskcast: cannot reach PostgreSQL (none on 127.0.0.1:1) within 0 s (startupTimeoutSeconds): "
    )
