"""``taskcast start`` for real: a subprocess on a loopback port, stopped with signals."""

from __future__ import annotations

import gc
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from ._server import env_for, run, start
from ._threaded import threaded_server

pytestmark = pytest.mark.anyio


def _create_running_task(client: httpx.Client) -> str:
    task = client.post("/tasks", json={"type": "demo"}).json()
    assert (
        client.patch(f"/tasks/{task['id']}/status", json={"status": "running"}).status_code == 200
    )
    return str(task["id"])


def test_start_sqlite_serves_streams_and_stops_cleanly(tmp_path: Path) -> None:
    """Serve on the default storage; SIGTERM ends an open stream with a ``retry:`` hint and
    no ``taskcast.done``, exits 0; the data is still there after a restart."""
    env = env_for(tmp_path)
    server = start(["start", "--port", "0", "--retry-ms", "1234"], cwd=tmp_path, env=env)
    db = tmp_path / "data" / "taskcast.db"
    assert f"(storage: sqlite at {db})" in server.lines[-1]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/health").json()["ok"] is True
        task_id = _create_running_task(client)
        client.post(f"/tasks/{task_id}/events", json={"type": "progress", "data": {"n": 1}})
        body = b""
        with client.stream("GET", f"/tasks/{task_id}/events") as response:
            assert response.status_code == 200
            chunks = response.iter_raw()
            # Read until the replayed event arrived, so the stream is surely live.
            while b"progress" not in body:
                body += next(chunks)
            server.proc.send_signal(signal.SIGTERM)
            for chunk in chunks:
                body += chunk
    code, err = server.stop()
    assert code == 0, err
    assert b"retry: 1234" in body.split(b"progress", 1)[1]
    assert b"taskcast.done" not in body
    assert "Traceback" not in err
    assert db.is_file()

    again = start(["--port", "0"], cwd=tmp_path, env=env)
    with httpx.Client(base_url=again.url, timeout=10) as client:
        assert client.get(f"/tasks/{task_id}").json()["status"] == "running"
    code, err = again.stop(signal.SIGINT)
    assert code == 0, err


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            ["--storage", "memory", "--port", str(port)], cwd=tmp_path, env=env_for(tmp_path)
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"taskcast: cannot listen on 127.0.0.1:{port}: "
        "the address is already in use (is another server running?)"
    ]


def test_unwritable_db_path_is_one_line_and_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run(
        ["--port", "0", "--db-path", str(blocker / "sub" / "t.db")],
        cwd=tmp_path,
        env=env_for(tmp_path),
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"taskcast: cannot create the directory for the database {blocker}")


def test_bad_storage_name_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run(["--storage", "mongo"], cwd=tmp_path, env=env_for(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        'taskcast: invalid value for --storage: expected memory, sqlite or redis, got "mongo"'
    )


def test_workers_need_a_shared_broadcast(tmp_path: Path) -> None:
    result = run(["--workers", "2", "--port", "0"], cwd=tmp_path, env=env_for(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("taskcast: --workers 2 needs storage shared across processes")


def test_config_file_error_in_subprocess_has_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "taskcast.config.yaml").write_text("port: abc\n")
    result = run([], cwd=tmp_path, env=env_for(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        'taskcast: config error in ./taskcast.config.yaml: port: expected an integer, got "abc"'
    )


def test_unset_variable_in_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """An unset ``${VAR}`` used to become the literal HMAC key (long enough to pass the
    32-byte check); it is now a config error, and once the variable is set, tokens signed
    with the literal text are refused."""
    import jwt

    (tmp_path / "cfg.yaml").write_text(
        "auth:\n  mode: jwt\n  jwt:\n    secret: ${TASKCAST_JWT_SECRET_FOR_PRODUCTION}\n"
    )
    args = ["start", "--config", "cfg.yaml", "--storage", "memory", "--port", "0"]
    result = run(args, cwd=tmp_path, env=env_for(tmp_path))
    assert result.returncode == 2
    assert result.stderr == (
        "taskcast: config error in ./cfg.yaml: auth.jwt.secret: environment variable "
        "TASKCAST_JWT_SECRET_FOR_PRODUCTION is not set (set it, or write ${TASKCAST_JWT_SECRET_FOR_PRODUCTION:-default})\n"
    )
    assert result.stdout == ""

    secret = "a-real-secret-of-at-least-32-bytes!!"
    server = start(
        args, cwd=tmp_path, env=env_for(tmp_path, {"TASKCAST_JWT_SECRET_FOR_PRODUCTION": secret})
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for key, expected in (("${TASKCAST_JWT_SECRET_FOR_PRODUCTION}", 401), (secret, 201)):
                token = jwt.encode({"sub": "x", "scope": ["*"]}, key, algorithm="HS256")
                resp = client.post("/tasks", json={}, headers={"Authorization": f"Bearer {token}"})
                assert resp.status_code == expected, resp.text
    finally:
        assert server.stop()[0] == 0


def test_the_server_freezes_its_startup_objects() -> None:
    gc.unfreeze()
    with threaded_server() as base:
        # The first full collection would otherwise walk all of them mid-stream. (The
        # server counts as started just before it freezes; wait for the freeze.)
        deadline = time.monotonic() + 10
        while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gc.get_freeze_count() > 1000
        assert httpx.post(f"{base}/tasks", json={}).status_code == 201
    assert gc.get_freeze_count() == 0
