"""Readiness tells the truth: a Redis that refuses writes, or is gone, makes an instance unready.

Each test runs its own ``redis-server`` (filled to its ``maxmemory``, or killed) under a real
``taskcast start --storage redis``. Before: with Redis at ``maxmemory`` ``POST /tasks``
answered a plain-text 500, publishes said ``redis unavailable (unavailable)``, and
``/health/ready`` stayed 200 (PING still answers); with Redis killed, the broadcast was
reported healthy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from itsupport import Server, free_port


class _Redis:
    """A private ``redis-server`` without persistence, with a small ``maxmemory``."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(directory),
                "--maxmemory-policy", "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def fill(self) -> None:
        """Write 4 MB, then put ``maxmemory`` 1 MB below what is used: Redis is full.

        (Writing until the first refusal is not enough: memory then hovers at the limit,
        and a later write may pass as buffers are freed.)
        """
        for i in range(1000):
            self.client.set(f"filler:{i}", b"x" * 4096)
        used = int(self.client.info("memory")["used_memory"])
        self.client.config_set("maxmemory", used - 1024 * 1024)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            self.client.set("one-more", b"x")

    def free(self) -> None:
        self.client.config_set("maxmemory", 0)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[_Redis]:
    if shutil.which("redis-server") is None:
        reason = "redis-server is not on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server = _Redis(tmp_path)
    yield server
    server.kill()


def _start(servers: list[Server], url: str) -> Server:
    env = {"TASKCAST_REDIS_URL": url, "TASKCAST_REDIS_PREFIX": "tc"}
    server = Server(["--storage", "redis"], env=env)
    servers.append(server)
    return server.start()


def _ready(client: httpx.Client, expected: int, timeout: float = 10.0) -> dict[str, object]:
    """Poll ``/health/ready`` until it answers ``expected`` (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/health/ready")
        if response.status_code == expected:
            body: dict[str, object] = response.json()
            return body
        assert time.monotonic() < deadline, (expected, response.status_code, response.text)
        time.sleep(0.05)


def test_redis_at_maxmemory_answers_503_with_the_reason_and_is_not_ready(
    own_redis: _Redis, servers: list[Server]
) -> None:
    server = _start(servers, own_redis.url)
    with httpx.Client(base_url=server.url, timeout=20) as client:
        assert client.post("/tasks", json={"id": "t", "type": "x"}).status_code == 201
        assert client.patch("/tasks/t/status", json={"status": "running"}).status_code == 200
        _ready(client, 200)

        own_redis.fill()
        writes = [
            ("POST", "/tasks", {"type": "x"}),
            ("POST", "/tasks", {"id": "explicit", "type": "x"}),
            ("POST", "/tasks/t/events", {"type": "log", "data": {"n": 1}}),
            ("POST", "/tasks/t/events", [{"type": "log"}, {"type": "log"}]),
            ("PATCH", "/tasks/t/status", {"status": "completed"}),
        ]
        for method, path, body in writes:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (method, path, response.text)
            error = response.json()["error"]
            assert error.startswith("redis is out of memory (OOM command not allowed"), error
        ready = _ready(client, 503)
        assert ready["dependencies"]["shortTermStore"] == {  # type: ignore[index]
            "state": "unhealthy",
            "errorKind": "out_of_memory",
        }
        # Nothing half-written: the task is as it was.
        task = client.get("/tasks/t").json()
        assert task["status"] == "running"
        assert client.get("/tasks/t/events/history").json()[-1]["data"]["status"] == "running"

        own_redis.free()
        _ready(client, 200)
        assert client.post("/tasks/t/events", json={"type": "log"}).status_code == 201


def test_a_killed_redis_makes_the_broadcast_unhealthy(
    own_redis: _Redis, servers: list[Server]
) -> None:
    server = _start(servers, own_redis.url)
    with httpx.Client(base_url=server.url, timeout=20) as client:
        _ready(client, 200)
        own_redis.kill()
        ready = _ready(client, 503)
        deps = ready["dependencies"]
        assert deps["shortTermStore"]["state"] == "unhealthy"  # type: ignore[index]
        assert deps["broadcast"]["state"] == "unhealthy"  # type: ignore[index]
        detail = client.get("/health/detail").json()
        assert detail["adapters"]["broadcast"]["status"] == "error"
