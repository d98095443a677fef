"""The ``storageLifecycle``, ``cleanup``, ``webhook``, ``metrics`` and ``opentelemetry``
settings reach the engine and the server, and a served process acts on them."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskcast.cli import build, build_engine, resolve_settings
from taskcast.core import ArchiveCheckConfig, CleanupRule, LifecycleConfig, WebhookRetry

from ._server import env_for, start

pytestmark = pytest.mark.anyio

MEMORY = {"storage": ("-s", "memory")}


def test_defaults_are_the_libraries(clean_env: Path) -> None:
    built = build(resolve_settings(flags=MEMORY))
    assert built.engine.lifecycle_config == LifecycleConfig()
    assert built.engine.archive_check_config == ArchiveCheckConfig()
    assert built.engine.scheduler_config.cleanup_rules == ()
    dispatcher = built.app.state.webhooks
    assert dispatcher.settings.default_retry == WebhookRetry()
    assert dispatcher.settings.global_hooks == ()
    assert dispatcher.settings.allow_private is False


def test_sections_reach_engine_and_dispatcher(clean_env: Path) -> None:
    rule = {"name": "r", "match": {"status": ["completed"]}, "trigger": {"afterMs": 5}}
    file = {
        "storageLifecycle": {
            "hotRetentionEnabled": False,
            "hotRetentionTerminalSeconds": 2,
            "hotRetentionIdleSeconds": 3,
            "ttlSweepIntervalSeconds": 0.5,
            "ttlSweepBatchSize": 9,
            "archiveCheckIntervalSeconds": 0.75,
            "archiveCheckGraceSeconds": 4,
        },
        "cleanup": {"rules": [rule], "intervalSeconds": 0.25},
        "webhook": {
            "defaultRetry": {"retries": 1, "timeoutMs": 250},
            "global": [{"url": "https://hooks.example/a", "filter": {"types": ["x.*"]}}],
            "allowPrivate": True,
            "pollSeconds": 0.2,
            "leaseSeconds": 3,
            "maxInFlight": 2,
            "retentionSeconds": 60,
        },
    }
    settings = resolve_settings(flags=MEMORY, file=(clean_env / "c.yaml", file))
    engine = build_engine(settings)
    assert engine.lifecycle_config == LifecycleConfig(
        enabled=False,
        terminal_release_after_seconds=2,
        idle_release_after_seconds=3,
        sweep_interval_seconds=0.5,
        batch_size=9,
    )
    assert engine.archive_check_config == ArchiveCheckConfig(interval_seconds=0.75, grace_seconds=4)
    assert list(engine.scheduler_config.cleanup_rules) == [CleanupRule.from_dict(rule)]
    assert engine.scheduler_config.cleanup_interval_seconds == 0.25
    hooks = build(settings).app.state.webhooks.settings
    assert hooks.default_retry == WebhookRetry(retries=1, timeout_ms=250)
    (hook,) = hooks.global_hooks
    assert hook.url == "https://hooks.example/a"
    assert (hooks.allow_private, hooks.poll_seconds, hooks.lease_seconds) == (True, 0.2, 3)
    assert (hooks.max_in_flight, hooks.retention_seconds) == (2, 60)


async def test_metrics_route_follows_the_setting(clean_env: Path) -> None:
    for env, status in (({}, 404), ({"TASKCAST_METRICS": "1"}, 200)):
        built = build(resolve_settings(flags=MEMORY, environ=env))
        transport = httpx.ASGITransport(app=built.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/metrics")).status_code == status


async def test_opentelemetry_follows_the_setting(clean_env: Path) -> None:
    off = build(resolve_settings(flags=MEMORY)).app
    assert off.state.config.opentelemetry is False and not hasattr(off.state, "metrics")
    settings = resolve_settings(flags=MEMORY, environ={"TASKCAST_OPENTELEMETRY": "1"})
    app = build(settings).app
    assert app.state.config.opentelemetry is True
    # Measured for OpenTelemetry, but /metrics stays off unless asked for.
    assert app.state.metrics.publish_seconds.mirror is not None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/metrics")).status_code == 404


# -- served ---------------------------------------------------------------------------------


class _Receiver:
    """A local webhook receiver recording every POST (headers and body)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.received.append((dict(self.headers.items()), body))
                outer.arrived.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def test_served_global_webhook_posts_signed_status_changes(
    tmp_path: Path, receiver: _Receiver
) -> None:
    secret = "global-hook-secret"
    config = {
        "storage": "memory",
        "webhook": {
            "global": [
                {"url": receiver.url, "secret": secret, "filter": {"types": ["taskcast:status"]}}
            ],
            "pollSeconds": 0.05,
            "defaultRetry": {"retries": 0},
        },
    }
    (tmp_path / "taskcast.config.json").write_text(json.dumps(config))
    env = env_for(tmp_path, {"TASKCAST_WEBHOOK_ALLOW_PRIVATE": "true"})
    server = start(["start", "--port", "0", "--metrics"], cwd=tmp_path, env=env)
    try:
        task = httpx.post(server.url + "/tasks", json={"type": "job"}).json()
        moved = httpx.patch(f"{server.url}/tasks/{task['id']}/status", json={"status": "running"})
        assert moved.status_code == 200
        assert receiver.arrived.wait(10), "no webhook delivery arrived"
        headers, body = receiver.received[0]
        assert headers["X-Taskcast-Event"] == "taskcast:status"
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Taskcast-Signature"] == f"sha256={expected}"
        event = json.loads(body)
        assert (event["taskId"], event["data"]["status"]) == (task["id"], "running")
        # --metrics on the command line: the route answers.
        metrics = httpx.get(server.url + "/metrics")
        assert metrics.status_code == 200 and "taskcast" in metrics.text
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert "not used by this server" not in err


def test_served_webhook_to_private_address_is_refused_by_default(
    tmp_path: Path, receiver: _Receiver
) -> None:
    config = {
        "storage": "memory",
        "webhook": {
            "global": [{"url": receiver.url}],
            "pollSeconds": 0.05,
            "defaultRetry": {"retries": 0},
        },
        "cleanup": {
            "rules": [{"match": {"status": ["completed"]}, "trigger": {"afterMs": 0}}],
            "intervalSeconds": 0.1,
        },
    }
    (tmp_path / "taskcast.config.json").write_text(json.dumps(config))
    server = start(["start", "--port", "0"], cwd=tmp_path, env=env_for(tmp_path))
    try:
        task = httpx.post(server.url + "/tasks", json={"type": "job"}).json()
        url = f"{server.url}/tasks/{task['id']}"
        httpx.patch(url + "/status", json={"status": "running"})
        httpx.patch(url + "/status", json={"status": "completed"})
        # The cleanup rule deletes the finished task at the next pass.
        deadline = time.monotonic() + 10
        while httpx.get(url).status_code != 404:
            assert time.monotonic() < deadline, "the cleanup rule never deleted the task"
            time.sleep(0.05)
        # An unfinished task is kept; its delivery to the loopback receiver is refused
        # (allowPrivate is off) and, with no retries, fails at once.
        live = httpx.post(server.url + "/tasks", json={"type": "job"}).json()["id"]
        httpx.patch(f"{server.url}/tasks/{live}/status", json={"status": "running"})
        deliveries = f"{server.url}/tasks/{live}/webhooks/deliveries"
        while True:
            (delivery,) = httpx.get(deliveries).json()["deliveries"]
            if delivery["status"] != "pending":
                break
            assert time.monotonic() < deadline + 10, "the delivery was never attempted"
            time.sleep(0.05)
        assert delivery["status"] == "failed"
        assert receiver.received == []
        assert httpx.get(server.url + "/metrics").status_code == 404
    finally:
        code, err = server.stop()
    assert code == 0, err
