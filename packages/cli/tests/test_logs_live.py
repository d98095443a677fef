"""``taskcast logs`` as a user runs it: a real server process, a live task, a terminal.

The issue's criterion: ``taskcast logs`` follows a live task in a terminal and exits 0 when
the task completes, riding out a server that is killed and restarted mid-stream.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from ._server import Running, command, env_for, start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(tmp_path: Path, port: int) -> Running:
    # A short retry: hint, so that `logs` comes back quickly after the restart.
    args = ["start", "--port", str(port), "--storage", "sqlite", "--retry-ms", "200"]
    return start(args, cwd=tmp_path, env=env_for(tmp_path))


def _api(url: str, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(method, url + path, json=body, timeout=10)
    assert response.is_success, response.text
    return response.json()


def _publish(url: str, task_id: str, *texts: str) -> None:
    events = [{"type": "llm.delta", "level": "info", "data": {"text": t}} for t in texts]
    _api(url, "POST", f"/tasks/{task_id}/events", events)


def _logs(tmp_path: Path, task_id: str, url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(["logs", task_id, "--url", url, *args]),
        cwd=tmp_path,
        env=env_for(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_json_lines(stream: IO[str], n: int, timeout: float = 20) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(lines) < n:
        assert time.monotonic() < deadline, f"only {lines}"
        line = stream.readline()
        assert line, f"logs ended early after {lines}"
        lines.append(json.loads(line))
    return lines


def test_logs_follows_a_live_task_across_a_server_restart(tmp_path: Path) -> None:
    port = _free_port()
    server = _server(tmp_path, port)
    url = server.url
    task_id = _api(url, "POST", "/tasks", {"type": "llm.chat"})["id"]
    _api(url, "PATCH", f"/tasks/{task_id}/status", {"status": "running"})
    _publish(url, task_id, "a", "b")
    logs = _logs(tmp_path, task_id, url, "--json")
    # The same for people, through a pipe (no terminal: no colour codes).
    plain = _logs(tmp_path, task_id, url)
    try:
        assert logs.stdout is not None
        seen = _read_json_lines(logs.stdout, 3)  # running, a, b
        _publish(url, task_id, "c")
        seen += _read_json_lines(logs.stdout, 1)
        # A crash, not a graceful stop: the connection just drops.
        server.stop(signal.SIGKILL)
        server = _server(tmp_path, port)
        _publish(url, task_id, "d", "e")
        _api(url, "PATCH", f"/tasks/{task_id}/status", {"status": "completed"})
        out, err = logs.communicate(timeout=30)
        plain_out, plain_err = plain.communicate(timeout=30)
    finally:
        for proc in (logs, plain):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        code, log = server.stop()
    assert code == 0, log
    assert logs.returncode == 0, err
    assert plain.returncode == 0, plain_err
    assert "\x1b[" not in plain_out
    lines = plain_out.splitlines()
    assert lines[-1] == "[DONE] completed"
    assert [line[11:] for line in lines[:-1]] == [
        'taskcast:status  info  {"status":"running"}',
        *(f'llm.delta        info  {{"text":"{t}"}}' for t in "abcde"),
        'taskcast:status  info  {"status":"completed"}',
    ]
    seen += [json.loads(line) for line in out.splitlines()]
    assert seen[-1] == {"done": "completed"}
    events = seen[:-1]
    # Every event exactly once, in order, across the restart.
    assert [e["index"] for e in events] == list(range(7))
    assert [e["data"] for e in events] == [
        {"status": "running"},
        {"text": "a"},
        {"text": "b"},
        {"text": "c"},
        {"text": "d"},
        {"text": "e"},
        {"status": "completed"},
    ]


def test_logs_waits_out_a_server_down_longer_than_5_short_retries(tmp_path: Path) -> None:
    # With a 200 ms retry: hint, 5 attempts used to be spent within ~3-6 s although the docs
    # promise ~15 s: a server down for 8 s ended `logs` with exit 1.
    port = _free_port()
    server = _server(tmp_path, port)
    url = server.url
    task_id = _api(url, "POST", "/tasks", {"type": "llm.chat"})["id"]
    _api(url, "PATCH", f"/tasks/{task_id}/status", {"status": "running"})
    logs = _logs(tmp_path, task_id, url, "--json")
    try:
        assert logs.stdout is not None
        _read_json_lines(logs.stdout, 1)  # running
        server.stop(signal.SIGKILL)
        down_until = time.monotonic() + 8
        while time.monotonic() < down_until:
            assert logs.poll() is None, logs.communicate()
            time.sleep(0.2)
        server = _server(tmp_path, port)
        _api(url, "PATCH", f"/tasks/{task_id}/status", {"status": "failed"})
        out, err = logs.communicate(timeout=30)
    finally:
        if logs.poll() is None:
            logs.kill()
            logs.communicate()
        server.stop()
    # Followed to the end; a failed task is exit 3, not 0 and not 1 ("could not follow").
    assert logs.returncode == 3, err
    assert [json.loads(line) for line in out.splitlines()][-1] == {"done": "failed"}


def test_logs_gives_up_on_a_server_that_stays_away(tmp_path: Path) -> None:
    server = _server(tmp_path, _free_port())
    task_id = _api(server.url, "POST", "/tasks", {})["id"]
    _api(server.url, "PATCH", f"/tasks/{task_id}/status", {"status": "running"})
    logs = _logs(tmp_path, task_id, server.url, "--json")
    try:
        assert logs.stdout is not None
        _read_json_lines(logs.stdout, 1)
        server.stop(signal.SIGKILL)
        gone = time.monotonic()
        _, err = logs.communicate(timeout=40)
        waited = time.monotonic() - gone
    finally:
        if logs.poll() is None:
            logs.kill()
            logs.communicate()
    assert logs.returncode == 1
    assert err == f"FAIL \u2014 cannot reach {server.url}: connection refused\n"
    # The documented budget: about 15 s (plus at most one delay of up to 5 s).
    assert 15 <= waited < 25


def _tmux(socket_path: Path, *args: str) -> str:
    return subprocess.run(
        ["tmux", "-S", str(socket_path), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_logs_in_a_terminal_is_coloured_and_exits_0(tmp_path: Path) -> None:
    server = _server(tmp_path, 0)
    sock = tmp_path / "tmux.sock"
    status_file = tmp_path / "status"
    env = env_for(tmp_path)
    try:
        task_id = _api(server.url, "POST", "/tasks", {})["id"]
        _api(server.url, "PATCH", f"/tasks/{task_id}/status", {"status": "running"})
        line = shlex.join(command(["logs", task_id, "--url", server.url]))
        exports = " ".join(f"{k}={shlex.quote(env[k])}" for k in ("HOME", "PATH") if k in env)
        script = f"env -u NO_COLOR TERM=xterm-256color {exports} {line}; echo $? > {status_file}"
        _tmux(sock, "new-session", "-d", "-x", "200", "-y", "50", "sh", "-c", f"{script}; sleep 60")
        # The command is waiting on the stream; publish while it follows.
        deadline = time.monotonic() + 20
        while "taskcast:status" not in _tmux(sock, "capture-pane", "-p"):
            assert time.monotonic() < deadline, "logs printed nothing"
            time.sleep(0.1)
        _publish(server.url, task_id, "live")
        _api(server.url, "PATCH", f"/tasks/{task_id}/status", {"status": "completed"})
        while not status_file.exists() or not status_file.read_text().strip():
            assert time.monotonic() < deadline + 10, _tmux(sock, "capture-pane", "-p")
            time.sleep(0.1)
        plain = _tmux(sock, "capture-pane", "-p")
        coloured = _tmux(sock, "capture-pane", "-p", "-e")
    finally:
        subprocess.run(["tmux", "-S", str(sock), "kill-server"], capture_output=True, timeout=10)
        server.stop()
    assert status_file.read_text().strip() == "0"
    assert 'llm.delta        info  {"text":"live"}' in plain
    assert "[DONE] completed" in plain
    assert "\x1b[" in coloured  # levels and types are coloured on a terminal


def test_logs_follows_a_task_replaced_by_an_import(tmp_path: Path) -> None:
    """An overwrite import ends the old stream with `replaced`; `logs` says so on stderr and
    prints exactly the new history, then exits 0 when it is completed."""
    server = _server(tmp_path, 0)
    proc: subprocess.Popen[str] | None = None
    try:
        task_id = _api(server.url, "POST", "/tasks", {})["id"]
        _api(server.url, "PATCH", f"/tasks/{task_id}/status", {"status": "running"})
        _publish(server.url, task_id, "old0", "old1")
        proc = _logs(tmp_path, task_id, server.url, "--json")
        assert proc.stdout is not None
        old = _read_json_lines(proc.stdout, 3)  # status + 2 deltas
        assert [e.get("data") for e in old][1:] == [{"text": "old0"}, {"text": "old1"}]
        events = [
            {"id": f"new-{i}", "taskId": task_id, "index": i, "timestamp": 10 + i,
             "type": "llm.delta", "level": "info", "data": {"text": f"new{i}"}}
            for i in range(2)
        ]  # fmt: skip
        events.append(
            {"id": "new-end", "taskId": task_id, "index": 2, "timestamp": 20,
             "type": "taskcast:status", "level": "info", "data": {"status": "completed"}}
        )  # fmt: skip
        archive = {
            "schema": "taskcast.taskArchive",
            "version": 1,
            "exportedAt": 1,
            "task": {"id": task_id, "status": "completed", "createdAt": 1, "updatedAt": 20},
            "events": events,
        }
        assert _api(server.url, "POST", "/tasks/import", {"archive": archive, "overwrite": True})[
            "overwritten"
        ]
        out, err = proc.communicate(timeout=20)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.stop()
    rest = [json.loads(line) for line in out.splitlines()]
    assert rest[0] == {"resync": "replaced"}
    new = [("new-0", 0), ("new-1", 1), ("new-end", 2)]
    assert [(e["id"], e["index"]) for e in rest[1:-1]] == new
    assert rest[-1] == {"done": "completed"}
    assert proc.returncode == 0
    assert f"Task {task_id} was replaced (archive import); following its new history" in err
    assert len(err.strip().splitlines()) == 1
