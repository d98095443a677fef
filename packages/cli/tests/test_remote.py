"""``taskcast ping`` and ``taskcast doctor`` against a real server and scripted answers."""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from taskcast.cli import TaskcastServer, app, build, resolve_settings
from taskcast.cli._client_cmds import logs
from taskcast.cli._output import Output
from taskcast.cli._remote import doctor, ping

runner = CliRunner()


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """A memory-storage server in a thread, built by the CLI's own factory."""
    built = build(resolve_settings(flags={"storage": ("--storage", "memory")}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(built.app, log_config=None, lifespan="on")
    # The CLI's own server class, here outside the main thread (no signal handlers).
    server = TaskcastServer(config, engine=built.engine)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ping_ok_and_fail(server_url: str, clean_env: Path) -> None:
    result = runner.invoke(app, ["ping", "--url", server_url])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"OK \u2014 taskcast at {server_url} (")
    dead = f"http://127.0.0.1:{_closed_port()}"
    result = runner.invoke(app, ["ping"], env={"TASKCAST_URL": dead})
    assert result.exit_code == 1
    assert result.stdout == f"FAIL \u2014 cannot reach {dead}: connection refused\n"


def test_doctor_against_a_real_server(server_url: str, clean_env: Path) -> None:
    result = runner.invoke(app, ["doctor", "--url", server_url])
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Server:    OK   taskcast ") and server_url in lines[0]
    assert lines[1:] == [
        "Auth:      OK   none",
        "Broadcast: OK   memory",
        "ShortTerm: OK   memory",
        "LongTerm:  SKIP not configured",
    ]
    dead = f"http://127.0.0.1:{_closed_port()}"
    result = runner.invoke(app, ["doctor", "--url", dead])
    assert result.exit_code == 1
    assert result.stdout == f"Server:    FAIL cannot reach {dead}: connection refused\n"


def _answer(status: int, body: Any = None, text: str | None = None) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers.get("authorization") in (None, "Bearer t0k")
        if text is not None:
            return httpx.Response(status, text=text)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def test_doctor_reports_failures_and_auth_warnings() -> None:
    body = {
        "version": "9.9",
        "auth": {"mode": "jwt"},
        "adapters": {
            "broadcast": {"provider": "redis", "status": "ok"},
            "shortTermStore": {"provider": "redis", "status": "error"},
            "longTermStore": {"provider": "postgres", "status": "error"},
        },
        "dependencies": {"shortTermStore": {"lastErrorKind": "timeout"}},
    }
    out: list[str] = []
    assert doctor("http://x", echo=out.append, transport=_answer(200, body)) == 1
    assert out == [
        "Server:    OK   taskcast 9.9 at http://x",
        "Auth:      WARN jwt (no token given: use --token)",
        "Broadcast: OK   redis",
        "ShortTerm: FAIL redis (timeout)",
        "LongTerm:  FAIL postgres (error)",
    ]
    out.clear()
    assert doctor("http://x", token="t0k", echo=out.append, transport=_answer(200, body)) == 1
    assert out[1] == "Auth:      OK   jwt"


@pytest.mark.parametrize(
    ("transport", "line"),
    [
        (_answer(500, {"error": "x"}), "Server:    FAIL http://x answered HTTP 500"),
        (_answer(200, text="<html>"), "Server:    FAIL http://x answered HTTP 200"),
        (_answer(200, [1]), "Server:    FAIL http://x answered HTTP 200"),
    ],
)
def test_doctor_on_unexpected_answers(transport: httpx.MockTransport, line: str) -> None:
    out: list[str] = []
    assert doctor("http://x", echo=out.append, transport=transport) == 1
    assert out == [line]


def test_ping_on_errors_and_timeouts() -> None:
    out: list[str] = []
    assert ping("http://x", echo=out.append, transport=_answer(503, {})) == 1

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("bad framing", request=request)

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Name or service not known", request=request)

    for handler in (slow, broken, unreachable):
        ping("http://x", echo=out.append, transport=httpx.MockTransport(handler))
    assert out == [
        "FAIL \u2014 http://x answered HTTP 503",
        "FAIL \u2014 cannot reach http://x: timed out",
        "FAIL \u2014 cannot reach http://x: bad framing",
        "FAIL \u2014 cannot reach http://x: cannot connect",
    ]


def test_logs_prints_history_then_done(server_url: str, clean_env: Path) -> None:
    with httpx.Client(base_url=server_url, timeout=10) as client:
        task_id = client.post("/tasks", json={"type": "t"}).json()["id"]
        client.patch(f"/tasks/{task_id}/status", json={"status": "running"})
        client.post(
            f"/tasks/{task_id}/events",
            json=[
                {"type": "llm.delta", "level": "info", "data": {"text": "hé"}},
                {"type": "progress", "level": "debug", "data": 50},
            ],
        )
        client.patch(f"/tasks/{task_id}/status", json={"status": "completed"})
    result = runner.invoke(app, ["logs", task_id, "--url", server_url])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [re.sub(r"^\[\d\d:\d\d:\d\d\] ", "", line) for line in lines] == [
        'taskcast:status  info  {"status":"running"}',
        'llm.delta        info  {"text":"hé"}',
        "progress         debug 50",
        'taskcast:status  info  {"status":"completed"}',
        "[DONE] completed",
    ]
    only = runner.invoke(
        app, ["logs", task_id, "--url", server_url, "--types", "llm.*,progress", "--levels", "info"]
    )
    first, last = only.stdout.splitlines()
    assert first[11:] == 'llm.delta        info  {"text":"hé"}'
    assert last == "[DONE] completed"


def test_logs_failures(server_url: str, clean_env: Path) -> None:
    result = runner.invoke(app, ["logs", "nope", "--url", server_url])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"FAIL \u2014 no task nope at {server_url}\n"

    def forbidden(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": "Forbidden"})

    out, err = io.StringIO(), io.StringIO()
    output = Output(file=out, err_file=err)
    assert logs("http://x", "t", out=output, transport=httpx.MockTransport(forbidden)) == 1
    assert err.getvalue() == "FAIL \u2014 http://x answered HTTP 403: Forbidden\n"


def test_logs_gives_up_on_an_unreachable_server() -> None:
    from taskcast.client import ReconnectConfig

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    err = io.StringIO()
    fast = ReconnectConfig(max_attempts=2, initial_delay=0.01, max_delay=0.01)
    output = Output(file=io.StringIO(), err_file=err)
    code = logs("http://x", "t", out=output, transport=httpx.MockTransport(refused), reconnect=fast)
    assert code == 1
    assert err.getvalue() == "FAIL \u2014 cannot reach http://x: connection refused\n"
