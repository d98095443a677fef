"""``/metrics`` under ``taskcast start --workers 2``: one answer for all the processes.

Each scrape reaches one worker; before the processes shared their metrics, counters jumped
between the two workers' own values from one scrape to the next.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ._server import Running, env_for, start
from ._services import REDIS_URL, redis_prefix

__all__ = ["redis_prefix"]  # a fixture, imported for pytest

PUBLISHED = re.compile(
    r'^taskcast_http_requests_total\{route="publish",status="2xx"\} (\d+)$', re.M
)
EVENTS = re.compile(r"^taskcast_events_published_total (\d+)$", re.M)
CONNECTIONS = re.compile(r"^taskcast_sse_connections (\d+)$", re.M)


def fresh(url: str) -> httpx.Client:
    # A new connection for each request, so the kernel spreads them over both workers.
    return httpx.Client(base_url=url, timeout=30, headers={"Connection": "close"})


def scrape(url: str) -> tuple[int, int, str]:
    with fresh(url) as client:
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    text = response.text
    published = PUBLISHED.search(text)
    events = EVENTS.search(text)
    assert events is not None, text
    return (int(published.group(1)) if published else 0), int(events.group(1)), text


def publish(url: str, task_id: str, n: int) -> None:
    with fresh(url) as client:
        r = client.post(f"/tasks/{task_id}/events", json={"type": "n", "data": {"n": n}})
    assert r.status_code == 201, r.text


def wait_until_serving(server: Running) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with fresh(server.url) as client:
                if client.get("/health").status_code == 200:
                    return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def settle(url: str, expected: int) -> tuple[int, int]:
    """Scrape until the publish count is ``expected`` (a worker's snapshot is at most a
    second old), then return (publishes, events)."""
    deadline = time.monotonic() + 30
    while True:
        published, events, _ = scrape(url)
        if published == expected or time.monotonic() > deadline:
            assert published == expected
            return published, events
        time.sleep(0.1)


@pytest.mark.redis
def test_metrics_are_one_total_over_the_workers(tmp_path: Path, redis_prefix: str) -> None:
    env = env_for(tmp_path, {"TASKCAST_REDIS_PREFIX": redis_prefix})
    storage = ["--storage", "redis", "--redis-url", REDIS_URL]
    server = start(
        [*storage, "--workers", "2", "--port", "0", "--metrics"],
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    try:
        wait_until_serving(server)
        workers = [
            child
            for child in psutil.Process(server.proc.pid).children()
            if "spawn_main" in " ".join(child.cmdline())  # not multiprocessing's trackers
        ]
        assert len(workers) == 2, [child.cmdline() for child in workers]
        with fresh(server.url) as client:
            task_id = client.post("/tasks", json={"type": "metrics"}).json()["id"]
        published = 0
        last = (0, 0)
        for round_ in range(6):
            for n in range(5):
                publish(server.url, task_id, round_ * 5 + n)
                published += 1
            # Every scrape, whichever worker answers, counts every publish so far, and the
            # counters never go down between scrapes (so rate() sees no reset).
            current = settle(server.url, published)
            assert current >= last
            last = current
            for _ in range(4):
                again = scrape(server.url)[:2]
                assert again[0] == published
                assert again >= last
                last = again
        assert last[1] >= published

        # A worker killed and replaced: its counts stay in the totals, its gauges go.
        with fresh(server.url) as client, client.stream("GET", f"/tasks/{task_id}/events") as sse:
            assert sse.status_code == 200
            deadline = time.monotonic() + 30
            while max(int(m) for m in CONNECTIONS.findall(scrape(server.url)[2])) != 1:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        os.kill(workers[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            published_now, events_now, text = scrape(server.url)
            assert published_now == published and events_now >= last[1]
            (connections,) = (int(m) for m in CONNECTIONS.findall(text))
            if connections == 0:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        code, err = server.stop(timeout=60)
    assert code == 0, err
