"""``taskcast tasks``, ``tail``, ``logs --json`` and ``node`` against a real server."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from taskcast.cli import app
from taskcast.cli._client_cmds import tail, tasks_list
from taskcast.cli._errors import SettingsError
from taskcast.cli._nodes import NodeStore, exchange_admin_token, resolve_target
from taskcast.cli._output import Output, short_id

from ._threaded import threaded_server

runner = CliRunner()
SECRET = "s" * 32


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with threaded_server() as base:
        yield base


@pytest.fixture(scope="module")
def jwt_url() -> Iterator[str]:
    """A server in jwt mode with the admin token exchange on (admin token ``adm``)."""
    flags = {
        "auth.mode": ("--auth-mode", "jwt"),
        "auth.jwt.secret": ("secret", SECRET),
        "admin_api": ("adminApi", True),
        "admin_token": ("adminToken", "adm"),
    }
    with threaded_server(flags) as base:
        yield base


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def _create(url: str, **body: Any) -> str:
    response = httpx.post(f"{url}/tasks", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _publish(url: str, task_id: str, *events: dict[str, Any]) -> None:
    response = httpx.post(f"{url}/tasks/{task_id}/events", json=list(events), timeout=10)
    assert response.status_code == 201, response.text


def _status(url: str, task_id: str, status: str) -> None:
    response = httpx.patch(f"{url}/tasks/{task_id}/status", json={"status": status}, timeout=10)
    assert response.status_code == 200, response.text


# -- tasks -------------------------------------------------------------------------------


def test_tasks_create_list_inspect_cancel(url: str, clean_env: Path) -> None:
    created = invoke(
        "tasks", "create", "--url", url, "--type", "cli.test", "--params", '{"n": 1}',
        "--ttl", "600", "--id", "cli-task-1",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert created.stdout == "cli-task-1\n"
    as_json = invoke("tasks", "create", "--url", url, "--type", "cli.other", "--json")
    other = json.loads(as_json.stdout)
    assert other["type"] == "cli.other" and other["status"] == "pending"

    _status(url, "cli-task-1", "running")
    _publish(
        url,
        "cli-task-1",
        *(
            {
                "type": "llm.delta",
                "level": "info",
                "data": {"text": f"w{i} "},
                "seriesId": "out",
                "seriesMode": "accumulate",
                "seriesAccField": "text",
            }
            for i in range(10)
        ),
        {"type": "progress", "level": "warn", "data": {"pct": 50}},
    )

    listed = invoke("tasks", "list", "--url", url, "--type", "cli.*")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["cli-task-1", "running", "cli.test"],
        [other["id"], "pending", "cli.other"],
    ]
    # The columns line up although the ids and the types differ in length.
    starts = [[m.start() for m in re.finditer(r"\S+", line)] for line in lines]
    assert starts[0] == starts[1], lines
    newest = invoke("tasks", "list", "--url", url, "--type", "cli.*", "--limit", "1", "--json")
    assert [json.loads(line)["id"] for line in newest.stdout.splitlines()] == [other["id"]]
    running = invoke("tasks", "list", "--url", url, "--status", "running,completed", "--json")
    assert [json.loads(line)["id"] for line in running.stdout.splitlines()] == ["cli-task-1"]
    none = invoke("tasks", "list", "--url", url, "--type", "nothing.here")
    assert none.stdout == "no tasks\n"

    inspected = invoke("tasks", "inspect", "cli-task-1", "--url", url, "--events", "2")
    assert inspected.exit_code == 0, inspected.output
    text = inspected.stdout
    assert "id:          cli-task-1" in text
    assert "status:      running" in text
    assert 'params:      {"n":1}' in text
    assert "ttl:         600" in text
    # The ten deltas are one accumulated snapshot: status, snapshot, progress.
    assert "events:      last 2 of 3" in text
    assert '{"text":"w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 "}' in text
    assert 'progress         warn  {"pct":50}' in text
    data = json.loads(invoke("tasks", "inspect", "cli-task-1", "--url", url, "--json").stdout)
    assert data["task"]["id"] == "cli-task-1"
    assert data["eventCount"] == 3 and len(data["events"]) == 3
    assert data["events"][1]["seriesSnapshot"] is True
    empty = json.loads(
        invoke("tasks", "inspect", "cli-task-1", "--url", url, "-e", "0", "--json").stdout
    )
    assert empty["events"] == []

    cancelled = invoke("tasks", "cancel", "cli-task-1", "--url", url)
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout == "cancelled cli-task-1\n"
    again = invoke("tasks", "cancel", "cli-task-1", "--url", url)
    assert again.exit_code == 1
    assert again.stderr.startswith(f"FAIL \u2014 {url} answered HTTP 409")
    as_json = invoke("tasks", "cancel", other["id"], "--url", url, "--json")
    assert json.loads(as_json.stdout)["status"] == "cancelled"


def test_tasks_errors(url: str, clean_env: Path) -> None:
    missing = invoke("tasks", "inspect", "no-such-task", "--url", url)
    assert missing.exit_code == 1
    assert missing.stderr == f"FAIL \u2014 {url} answered HTTP 404: Task not found\n"
    bad = invoke("tasks", "create", "--url", url, "--params", "{nope")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("taskcast: --params is not JSON:")
    not_object = invoke("tasks", "create", "--url", url, "--params", "[1]")
    assert not_object.exit_code == 2
    assert not_object.stderr == "taskcast: --params must be a JSON object\n"
    invalid = invoke("tasks", "list", "--url", url, "--status", "sleeping")
    assert invalid.exit_code == 1
    assert invalid.stderr == f"FAIL \u2014 {url} answered HTTP 400: Invalid status: sleeping\n"
    bad_url = invoke("tasks", "list", "--url", "ftp://x")
    assert bad_url.exit_code == 2
    assert "invalid URL 'ftp://x'" in bad_url.stderr

    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<h1>Bad gateway</h1>")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    err = io.StringIO()
    out = Output(file=io.StringIO(), err_file=err)
    assert tasks_list("http://x", out=out, transport=httpx.MockTransport(html)) == 1
    assert tasks_list("http://x", out=out, transport=httpx.MockTransport(refused)) == 1
    assert err.getvalue().splitlines() == [
        "FAIL \u2014 http://x answered HTTP 502: <h1>Bad gateway</h1>",
        "FAIL \u2014 cannot reach http://x: connection refused",
    ]


def test_tasks_list_follows_pages() -> None:
    pages = {
        None: {"tasks": [{"id": "a", "status": "pending", "createdAt": 0}], "nextCursor": "c1"},
        "c1": {"tasks": [{"id": "b", "status": "failed", "createdAt": 0, "type": "x"}]},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert "limit" not in request.url.params  # the server's page size, whatever it is
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    stdout = io.StringIO()
    out = Output(json_mode=True, file=stdout)
    assert tasks_list("http://x", out=out, transport=httpx.MockTransport(handler)) == 0
    assert [json.loads(line)["id"] for line in stdout.getvalue().splitlines()] == ["a", "b"]


# -- logs --json and tail ----------------------------------------------------------------


def test_logs_json_lines(url: str, clean_env: Path) -> None:
    task_id = _create(url, type="t")
    _status(url, task_id, "running")
    _publish(url, task_id, {"type": "llm.delta", "level": "info", "data": {"text": "hi"}})
    _status(url, task_id, "failed")
    result = invoke("logs", task_id, "--url", url, "--json", "--types", "llm.*")
    # A task that failed is not a success: exit 3 (1 is "could not follow it").
    assert result.exit_code == 3, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1] == {"done": "failed"}
    (event,) = lines[:-1]
    assert {k: event[k] for k in ("taskId", "type", "level", "data", "filteredIndex")} == {
        "taskId": task_id,
        "type": "llm.delta",
        "level": "info",
        "data": {"text": "hi"},
        "filteredIndex": 0,
    }
    assert event["index"] == 1 and isinstance(event["id"], str)


def test_tail_prints_live_events_of_every_task(url: str) -> None:
    first, second = _create(url, type="a"), _create(url, type="b")
    opened = threading.Event()
    stdout = io.StringIO()
    result: list[int] = []

    def follow() -> None:
        out = Output(file=stdout)
        result.append(tail(url, levels=["info", "warn"], count=3, out=out, on_open=opened.set))

    thread = threading.Thread(target=follow)
    thread.start()
    assert opened.wait(10)
    _publish(url, first, {"type": "one", "level": "info", "data": 1})
    _publish(url, second, {"type": "skipped", "level": "debug", "data": 2})
    _publish(url, second, {"type": "two", "level": "warn", "data": {"x": 2}})
    _status(url, first, "running")
    thread.join(10)
    assert result == [0]
    lines = stdout.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == [
        short_id(first),
        short_id(second),
        short_id(first),
    ]
    assert [line.split(maxsplit=2)[2] for line in lines] == [
        "one              info  1",
        'two              warn  {"x":2}',
        'taskcast:status  info  {"status":"running"}',
    ]


def test_tail_json_and_failures(url: str, jwt_url: str) -> None:
    task_id = _create(url)
    opened = threading.Event()
    stdout = io.StringIO()

    def follow() -> None:
        tail(
            url, types=["x.*"], count=1, out=Output(json_mode=True, file=stdout), on_open=opened.set
        )

    thread = threading.Thread(target=follow)
    thread.start()
    assert opened.wait(10)
    _publish(url, task_id, {"type": "y", "level": "info", "data": 0})
    _publish(url, task_id, {"type": "x.1", "level": "info", "data": 1})
    thread.join(10)
    (line,) = stdout.getvalue().splitlines()
    # The REST event shape, as `logs --json` prints (not the SSE envelope).
    event = json.loads(line)
    history = httpx.get(f"{url}/tasks/{task_id}/events/history").json()
    assert event == {**history[1], "filteredIndex": 0}
    assert set(event) == {
        "id",
        "taskId",
        "index",
        "timestamp",
        "type",
        "level",
        "data",
        "filteredIndex",
    }

    err = io.StringIO()
    assert tail(jwt_url, out=Output(err_file=err)) == 1
    assert err.getvalue() == f"FAIL \u2014 {jwt_url} answered HTTP 401: Missing Bearer token\n"

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    err = io.StringIO()
    code = tail(
        "http://x",
        out=Output(err_file=err),
        transport=httpx.MockTransport(refused),
        give_up_after=0.05,
        retry_delay=0.001,
    )
    assert code == 1
    assert err.getvalue() == "FAIL \u2014 cannot reach http://x: connection refused\n"


def test_tail_reconnects_for_a_time_budget_not_a_count() -> None:
    # Ten quick refusals (a restarting server) used to exhaust 5 attempts in no time.
    calls = []
    frame = (
        'event: taskcast.event\ndata: {"taskId":"t1","type":"a","level":"info",'
        '"timestamp":0,"data":1}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= 10:
            raise httpx.ConnectError("Connection refused", request=request)
        return httpx.Response(200, text=frame, headers={"content-type": "text/event-stream"})

    stdout, err = io.StringIO(), io.StringIO()
    out = Output(file=stdout, err_file=err)
    code = tail("http://x", count=1, out=out, transport=httpx.MockTransport(handler), retry_delay=0)
    assert code == 0, err.getvalue()
    assert len(calls) == 11


def test_tail_reopens_a_stream_the_server_ended() -> None:
    calls = []
    frame = (
        'event: taskcast.event\ndata: {"taskId":"t1","type":"a","level":"info",'
        '"timestamp":0,"data":1}\n\n'
        "event: taskcast.event\ndata: not json\n\n"
        ": keepalive\n\n"
    )

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, text=frame, headers=headers)

    stdout = io.StringIO()
    out = Output(file=stdout)
    code = tail("http://x", count=2, out=out, transport=httpx.MockTransport(handler), retry_delay=0)
    assert code == 0 and len(calls) == 2
    lines = stdout.getvalue().splitlines()
    assert (
        lines[0].startswith("t1 [") and lines[1] == "[RECONNECTED] events in between are not shown"
    )
    assert lines[2].startswith("t1 [")


def test_short_ids() -> None:
    assert short_id("01JD6Q0V4Z3N2T7X8Y9A0B1C2D") == "9A0B1C2D"
    assert short_id("my-task-id-123") == "my-task"


# -- nodes -------------------------------------------------------------------------------


def test_node_commands(clean_env: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = clean_env / "cfg"
    monkeypatch.setenv("TASKCAST_CONFIG_DIR", str(config_dir))
    listed = invoke("node", "list")
    assert listed.stdout == "* default      http://127.0.0.1:3721  (built-in)\n"
    added = invoke("node", "add", "local", "--url", url + "/")
    assert added.exit_code == 0 and added.stdout == f"added node local \u2192 {url}\n"
    invoke("node", "add", "other", "--url", "http://127.0.0.1:9", "--token", "t0k")
    path = config_dir / "nodes.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "current": "local",
        "nodes": {
            "local": {"url": url},
            "other": {"url": "http://127.0.0.1:9", "token": "t0k", "tokenType": "jwt"},
        },
    }
    assert invoke("node", "list").stdout.splitlines() == [
        f"* local        {url}",
        "  other        http://127.0.0.1:9  [jwt token]",
    ]
    # The current node is the default target of every client command.
    assert invoke("ping").stdout.startswith(f"OK \u2014 taskcast at {url}")
    assert invoke("node", "use", "other").stdout == "using node other \u2192 http://127.0.0.1:9\n"
    assert invoke("ping").exit_code == 1
    assert invoke("ping", "--node", "local").exit_code == 0
    assert invoke("ping", "--url", url).exit_code == 0
    # $TASKCAST_URL (set for this shell) wins over the saved current node.
    assert invoke("ping", env={"TASKCAST_URL": url}).exit_code == 0
    assert invoke("node", "remove", "other").stdout == "removed node other\n"
    assert invoke("node", "list").stdout.startswith("* default")
    assert invoke("ping", env={"TASKCAST_URL": url}).exit_code == 0

    for args, message in [
        (("node", "use", "ghost"), "no node named 'ghost' (local)"),
        (("node", "remove", "ghost"), "no node named 'ghost'"),
        (("ping", "--node", "ghost"), "no node named 'ghost'"),
        (("node", "add", "x", "--url", "localhost:1"), "invalid URL 'localhost:1'"),
        (("node", "add", " ", "--url", url), "a node name must not be empty"),
        (("node", "add", "x", "--url", url, "--token-type", "basic"), "--token-type must be"),
        (("node", "add", "x", "--url", url, "--token-type", "admin"), "needs --token"),
    ]:
        result = invoke(*args)
        assert result.exit_code == 2, args
        assert message in result.stderr, (args, result.stderr)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "cannot read"),
        ("[]", "expected {current, nodes}"),
        ('{"nodes": {"a": {}}}', "node 'a' has no url"),
        ('{"nodes": {"a": {"url": "http://x", "tokenType": "basic"}}}', "tokenType 'basic'"),
    ],
)
def test_a_broken_nodes_file_is_one_clear_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, content: str, problem: str
) -> None:
    monkeypatch.setenv("TASKCAST_CONFIG_DIR", str(clean_env))
    (clean_env / "nodes.json").write_text(content)
    result = invoke("node", "list")
    assert result.exit_code == 2
    assert problem in result.stderr
    assert str(clean_env / "nodes.json") in result.stderr


def test_nodes_live_under_home_by_default(clean_env: Path) -> None:
    store = NodeStore.default({"HOME": os.environ["HOME"]})
    assert store.path == Path(os.environ["HOME"]) / ".taskcast" / "nodes.json"
    store.add("a", "http://a:1")
    store.remove("a")
    assert store.nodes() == {} and store.current() is None
    assert json.loads(store.path.read_text()) == {"current": None, "nodes": {}}


def test_target_precedence(clean_env: Path) -> None:
    env = {"TASKCAST_CONFIG_DIR": str(clean_env)}
    store = NodeStore.default(env)
    assert resolve_target(url=None, token=None, node=None, environ=env).url == (
        "http://127.0.0.1:3721"
    )
    env_only = {**env, "TASKCAST_URL": "http://env:1", "TASKCAST_TOKEN": "envtok"}
    target = resolve_target(url=None, token=None, node=None, environ=env_only)
    assert (target.url, target.token, target.node) == ("http://env:1", "envtok", None)
    store.add("n", "http://node:1", token="nodetok")
    store.add("m", "http://m:1")
    target = resolve_target(url=None, token=None, node=None, environ=env)
    assert (target.url, target.token, target.node) == ("http://node:1", "nodetok", "n")
    target = resolve_target(url=None, token="flag", node="n", environ=env_only)
    assert (target.url, target.token) == ("http://node:1", "flag")
    target = resolve_target(url=None, token=None, node="m", environ=env_only)
    assert (target.url, target.token) == ("http://m:1", None)
    target = resolve_target(url="http://flag:1", token=None, node="n", environ=env_only)
    assert (target.url, target.token) == ("http://flag:1", "envtok")


def test_admin_nodes_exchange_their_token(clean_env: Path, jwt_url: str) -> None:
    config_dir = str(clean_env / "cfg")
    env = {"TASKCAST_CONFIG_DIR": config_dir}
    added = invoke(
        "node", "add", "secure", "--url", jwt_url, "--token", "adm", "--token-type", "admin",
        env=env,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert invoke("tasks", "list", env=env).exit_code == 0
    created = invoke("tasks", "create", "--type", "secured", env=env)
    assert created.exit_code == 0, created.output
    # Without the node, the same request is refused.
    refused = invoke("tasks", "list", "--url", jwt_url, env=env)
    assert refused.exit_code == 1
    assert "HTTP 401" in refused.stderr
    doctor = invoke("doctor", env=env)
    assert "Auth:      OK   jwt" in doctor.stdout

    NodeStore.default(env).add("wrong", jwt_url, token="nope", token_type="admin")
    bad = invoke("tasks", "list", "--node", "wrong", env=env)
    assert bad.exit_code == 2
    assert bad.stderr == (
        f"taskcast: {jwt_url} refused the admin token exchange: HTTP 401 Invalid admin token\n"
    )


def test_doctor_checks_the_token_on_an_authenticated_route(jwt_url: str, clean_env: Path) -> None:
    # /health/detail is public: a garbage token used to be reported "Auth: OK".
    garbage = invoke("doctor", "--url", jwt_url, "--token", "garbage")
    assert garbage.exit_code == 1, garbage.output
    assert "Auth:      FAIL jwt (the token was refused)" in garbage.stdout.splitlines()
    good = exchange_admin_token(jwt_url, "adm")
    assert good is not None
    accepted = invoke("doctor", "--url", jwt_url, "--token", good)
    assert accepted.exit_code == 0, accepted.output
    assert "Auth:      OK   jwt" in accepted.stdout.splitlines()


def test_admin_exchange_edge_cases(url: str) -> None:
    # Without adminApi the route answers 404.
    with pytest.raises(SettingsError, match="HTTP 404 Not found"):
        exchange_admin_token(url, "x")

    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"token": "", "expiresAt": 1})

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="oops")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    # Outside jwt mode the exchange gives an empty token: send none.
    assert exchange_admin_token("http://x", "a", transport=httpx.MockTransport(empty)) is None
    with pytest.raises(SettingsError, match=r"HTTP 500$"):
        exchange_admin_token("http://x", "a", transport=httpx.MockTransport(broken))
    with pytest.raises(SettingsError, match="cannot exchange the admin token"):
        exchange_admin_token("http://x", "a", transport=httpx.MockTransport(refused))


def test_tail_command(jwt_url: str, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = invoke("tail", "--url", jwt_url, "--levels", "info")
    assert refused.exit_code == 1
    assert refused.stderr == f"FAIL \u2014 {jwt_url} answered HTTP 401: Missing Bearer token\n"
    calls: list[dict[str, Any]] = []

    def interrupted(url: str, **kwargs: Any) -> int:
        calls.append({"url": url, **kwargs})
        raise KeyboardInterrupt

    import taskcast.cli._client_cmds as commands

    monkeypatch.setattr(commands, "tail", interrupted)
    # Ctrl+C is how tail normally ends: exit 0.
    stopped = invoke("tail", "--url", jwt_url, "--types", "a.*,b", "-n", "3", "--json")
    assert stopped.exit_code == 0
    (call,) = calls
    assert (call["url"], call["types"], call["count"], call["out"].json_mode) == (
        jwt_url,
        ["a.*", "b"],
        3,
        True,
    )
