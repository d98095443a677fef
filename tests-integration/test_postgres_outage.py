"""A PostgreSQL outage under a Redis + PostgreSQL server: requests fail fast, recovery is at once.

The archive is read for a task id the hot store does not hold (an unknown id, or a create with
an explicit id checking for an archived duplicate). Before the circuit breaker, each such
request waited the pool's 10 s timeout during an outage, and the first one after PostgreSQL
came back still took 9.5 s (the pool's reconnection backoff).

Needs Redis (TASKCAST_TEST_REDIS_URL) and PostgreSQL's ``initdb``/``pg_ctl``: the test runs a
PostgreSQL cluster of its own, which it stops and starts (the shared one is never touched).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from itsupport import Server
from private_postgres import PrivatePostgres

REDIS_URL = os.environ.get("TASKCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Far below the 10 s the requests took, generous for a loaded two-core machine.
FAST = 1.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    value = "tcpgout-" + uuid.uuid4().hex
    yield value
    try:
        keys = list(client.scan_iter(match=f"{value}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    try:
        pg = PrivatePostgres()
    except RuntimeError as exc:
        _unavailable(str(exc))
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.remove()


def _timed(
    client: httpx.Client, method: str, path: str, **kwargs: object
) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    return time.monotonic() - started, response


def test_requests_fail_fast_during_an_outage_and_recover_at_once(
    prefix: str, postgres: PrivatePostgres, servers: list[Server]
) -> None:
    env = {
        "TASKCAST_REDIS_URL": REDIS_URL,
        "TASKCAST_REDIS_PREFIX": prefix,
        "TASKCAST_POSTGRES_URL": postgres.url,
        "TASKCAST_AUTO_MIGRATE": "true",
    }
    server = Server(["--storage", "redis"], env=env)
    servers.append(server)
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/tasks", json={"id": "before", "type": "t"}).status_code == 201
        assert client.get("/tasks/never-was").status_code == 404

        postgres.stop()
        for i in range(6):
            elapsed, response = _timed(client, "GET", f"/tasks/unknown-{i}")
            assert response.status_code == 503, response.text
            assert "postgres" in response.json()["error"]
            assert elapsed < FAST, f"lookup {i} took {elapsed:.2f} s during the outage"
            # An explicit id may name a released task, which only the archive can rule
            # out: refused at once rather than created as a shadow whose events the
            # archive would drop.
            elapsed, response = _timed(
                client, "POST", "/tasks", json={"id": f"new-{i}", "type": "t"}
            )
            assert response.status_code == 503, response.text
            assert "postgres" in response.json()["error"]
            assert elapsed < FAST, f"create {i} took {elapsed:.2f} s during the outage"
            # A generated id is new: creation goes on, and is not slowed either.
            elapsed, response = _timed(client, "POST", "/tasks", json={"type": "t"})
            assert response.status_code == 201, response.text
            assert elapsed < FAST, f"create {i} took {elapsed:.2f} s during the outage"

        postgres.start()
        back = time.monotonic()
        statuses = []
        while True:
            elapsed, response = _timed(client, "GET", "/tasks/never-was")
            assert elapsed < FAST, f"a lookup took {elapsed:.2f} s after PostgreSQL returned"
            statuses.append(response.status_code)
            if response.status_code == 404:
                break
            assert response.status_code == 503, response.text
            assert time.monotonic() - back < 3.0, f"not recovered 3 s after restart: {statuses}"
            time.sleep(0.05)
        elapsed, response = _timed(client, "POST", "/tasks", json={"id": "after", "type": "t"})
        assert response.status_code == 201 and elapsed < FAST
