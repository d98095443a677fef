"""Prometheus metrics at /metrics: off by default, and what each series counts."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from taskcast.core import (
    EventInput,
    MemoryLongTermStore,
    MemoryShortTermStore,
    MemoryWebhookOutbox,
    StorageUnavailableError,
    TaskEngine,
    WebhookRetry,
)
from taskcast.server import ServerConfig, WebhookSettings, create_app
from taskcast.server._metrics import CONTENT_TYPE, Histogram, Metrics
from taskcast.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def sample(text: str, name: str) -> float:
    """The value of one sample line (``name`` includes any labels)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in metrics"
    return float(match.group(1))


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig(heartbeat_seconds=0.2, retry_ms=1500, metrics=True)


async def test_off_by_default_serves_nothing_and_observes_nothing() -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    app = create_app(engine)
    assert ServerConfig().metrics is False
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        assert (await client.get("/metrics")).status_code == 404
    assert engine.hub.observer is None
    assert app.state.webhooks.observer is None
    assert not hasattr(app.state, "metrics")


async def test_publish_counts_latency_and_statuses(client: httpx.AsyncClient, app: FastAPI) -> None:
    tid = (await client.post("/tasks", json={})).json()["id"]
    await client.patch(f"/tasks/{tid}/status", json={"status": "running"})
    one = {"type": "a", "level": "info", "data": {"x": 1}}
    assert (await client.post(f"/tasks/{tid}/events", json=one)).status_code == 201
    assert (await client.post(f"/tasks/{tid}/events", json=[one, one, one])).status_code == 201
    assert (await client.post("/tasks/nope/events", json=one)).status_code == 404
    res = await client.get("/metrics")
    assert res.status_code == 200
    assert res.headers["content-type"] == CONTENT_TYPE
    text = res.text
    # 4 events plus the running status event.
    assert sample(text, "taskcast_events_published_total") == 5
    assert sample(text, 'taskcast_http_requests_total{route="publish",status="2xx"}') == 2
    assert sample(text, 'taskcast_http_requests_total{route="publish",status="4xx"}') == 1
    assert sample(text, 'taskcast_http_requests_total{route="other",status="2xx"}') == 2
    assert sample(text, "taskcast_publish_duration_seconds_count") == 3
    assert sample(text, 'taskcast_publish_duration_seconds_bucket{le="+Inf"}') == 3
    assert sample(text, "taskcast_publish_duration_seconds_sum") > 0
    assert sample(text, "taskcast_long_term_backlog") == 0
    assert sample(text, "taskcast_sse_connections") == 0
    assert "# TYPE taskcast_publish_duration_seconds histogram" in text
    # Scrapes themselves are not counted.
    again = (await client.get("/metrics")).text
    assert sample(again, 'taskcast_http_requests_total{route="other",status="2xx"}') == 2
    assert "/metrics" in app.openapi()["paths"]


async def test_streams_replay_resync_lag_and_end_reasons(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any, eventually: Any
) -> None:
    task = await engine.create_task()
    await engine.transition_task(task.id, "running")
    await engine.publish_events(task.id, [EventInput(type="log", data=i) for i in range(3)])
    async with open_sse(live, f"/tasks/{task.id}/events", params={"since.id": "unknown"}) as s:
        await s.events_until(lambda f: f.event == "taskcast.event" and f.data["data"] == 2)
        mid = (await live.get("/metrics")).text
        assert sample(mid, "taskcast_sse_connections") == 1
        assert sample(mid, "taskcast_sse_connections_opened_total") == 1
        assert sample(mid, "taskcast_sse_resyncs_total") == 1
        # running status + 3 events replayed after the resync.
        assert sample(mid, "taskcast_sse_replay_events_sum") == 4
        await engine.publish_events(task.id, [EventInput(type="log", data="live")])
        await s.events_until(lambda f: f.event == "taskcast.event" and f.data["data"] == "live")
        await engine.transition_task(task.id, "completed")
        await s.events_until(lambda f: f.event == "taskcast.done")
    text = (await live.get("/metrics")).text
    assert sample(text, 'taskcast_http_requests_total{route="sse",status="2xx"}') == 1
    assert sample(text, "taskcast_sse_fanout_lag_seconds_count") >= 1
    assert sample(text, 'taskcast_sse_stream_ends_total{reason="completed"}') == 1
    assert sample(text, "taskcast_sse_slow_consumers_total") == 0
    # A client that leaves mid-stream is counted as such.
    other = await engine.create_task()
    await engine.transition_task(other.id, "running")
    async with open_sse(live, f"/tasks/{other.id}/events") as s:
        await s.events_until(lambda f: f.event == "taskcast.event")
    await eventually(lambda: engine.hub.count(other.id) == 0)
    text = (await live.get("/metrics")).text
    assert sample(text, 'taskcast_sse_stream_ends_total{reason="client-closed"}') == 1


async def test_event_cache_hits_and_misses(tmp_path: Path, serve_app: Any) -> None:
    engine = TaskEngine(short_term=SQLiteStore(tmp_path / "metrics.db"))
    app = create_app(engine, config=ServerConfig(metrics=True))
    async with serve_app(app, engine) as url, httpx.AsyncClient(base_url=url) as client:
        tid = (await client.post("/tasks", json={})).json()["id"]
        await client.patch(f"/tasks/{tid}/status", json={"status": "running"})
        one = {"type": "a", "level": "info", "data": {"x": 1}}
        assert (await client.post(f"/tasks/{tid}/events", json=[one, one, one])).status_code == 201
        await client.patch(f"/tasks/{tid}/status", json={"status": "completed"})
        before = (await client.get("/metrics")).text
        assert sample(before, "taskcast_event_cache_misses_total") == 0
        # The history decodes the five stored events; the stream's replay finds them.
        assert len((await client.get(f"/tasks/{tid}/events/history")).json()) == 5
        replay = await client.get(f"/tasks/{tid}/events")
        assert replay.text.count("event: taskcast.event") == 5
        text = (await client.get("/metrics")).text
    assert sample(text, "taskcast_event_cache_misses_total") == 5
    assert sample(text, "taskcast_event_cache_hits_total") == 5
    assert sample(text, "taskcast_event_cache_bytes") > 0
    assert "# TYPE taskcast_event_cache_bytes gauge" in text


def test_counters_for_slow_consumers_storage_errors_and_backlog() -> None:
    long_term = MemoryLongTermStore()
    engine = TaskEngine(short_term=MemoryShortTermStore(), long_term=long_term)
    metrics = Metrics(engine)
    metrics.on_stream_end("slow-consumer")
    metrics.on_stream_end("storage-error")
    metrics.on_response("publish", 503, 0.002)
    metrics.on_live_lag(-0.5)  # clock skew between processes: clamped at zero
    text = metrics.render()
    assert sample(text, "taskcast_sse_slow_consumers_total") == 1
    assert sample(text, "taskcast_storage_errors_total") == 2
    assert sample(text, 'taskcast_http_requests_total{route="publish",status="5xx"}') == 1
    assert sample(text, 'taskcast_sse_fanout_lag_seconds_bucket{le="0.0005"}') == 1
    assert sample(text, "taskcast_long_term_backlog") == 0


def test_histogram_buckets_are_cumulative_with_inclusive_bounds() -> None:
    h = Histogram((1.0, 2.5))
    for value in (0.5, 1.0, 2.0, 9.0):
        h.observe(value)
    assert h.lines("h") == [
        'h_bucket{le="1"} 2',
        'h_bucket{le="2.5"} 3',
        'h_bucket{le="+Inf"} 4',
        "h_sum 12.5",
        "h_count 4",
    ]


class _FailingReads(MemoryShortTermStore):
    """Fails history reads once asked to (a store outage in the middle of a stream)."""

    fail = False

    async def get_events(self, task_id: str, query: Any) -> Any:
        if self.fail:
            raise StorageUnavailableError("store down")
        return await super().get_events(task_id, query)


async def test_stream_ended_by_a_storage_error_is_counted(serve_app: Any) -> None:
    store = _FailingReads()
    engine = TaskEngine(short_term=store)
    app = create_app(engine, config=ServerConfig(metrics=True, heartbeat_seconds=0.2))
    async with serve_app(app, engine) as url, httpx.AsyncClient(base_url=url) as client:
        task = await engine.create_task()
        await engine.transition_task(task.id, "running")
        store.fail = True
        async with client.stream("GET", f"/tasks/{task.id}/events") as res:
            body = b"".join([chunk async for chunk in res.aiter_bytes()])
        assert body.startswith(b"retry:")
        text = (await client.get("/metrics")).text
    assert sample(text, 'taskcast_sse_stream_ends_total{reason="storage-error"}') == 1
    assert sample(text, "taskcast_storage_errors_total") == 1


# -- webhooks ---------------------------------------------------------------------------------

FAST = WebhookRetry(retries=1, backoff="fixed", initial_delay_ms=20, jitter=0.0)


@dataclass
class Receiver:
    """A webhook target answering the queued statuses, then 200."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    received: int = 0


@pytest.fixture
async def receiver(serve_app: Any) -> AsyncIterator[Receiver]:
    state = Receiver()

    async def hook(request: Request) -> Response:
        await request.body()
        state.received += 1
        return Response(status_code=state.statuses.pop(0) if state.statuses else 200)

    async with serve_app(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        state.url = url + "/hook"
        yield state


async def new_task(client: httpx.AsyncClient, url: str) -> str:
    body = {"webhooks": [{"url": url, "filter": {"types": ["a"]}}]}
    task_id: str = (await client.post("/tasks", json=body)).json()["id"]
    await client.patch(f"/tasks/{task_id}/status", json={"status": "running"})
    return task_id


async def test_webhook_outcomes_durations_and_in_flight(
    receiver: Receiver, serve_app: Any, eventually: Any
) -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    settings = WebhookSettings(allow_private=True, poll_seconds=0.05, default_retry=FAST)
    app = create_app(engine, config=ServerConfig(metrics=True), webhooks=settings)
    outcomes: dict[str, int] = app.state.metrics.webhook_outcomes
    one = {"type": "a", "level": "info"}
    async with serve_app(app, engine) as url, httpx.AsyncClient(base_url=url) as client:
        # 500 then 200: one attempt retried, then delivered.
        receiver.statuses = [500]
        task_id = await new_task(client, receiver.url)
        await client.post(f"/tasks/{task_id}/events", json=one)
        await eventually(lambda: outcomes.get("delivered") == 1)
        # 500 twice with one retry allowed: retried, then given up.
        receiver.statuses = [500, 500]
        task_id = await new_task(client, receiver.url)
        await client.post(f"/tasks/{task_id}/events", json=one)
        await eventually(lambda: outcomes.get("failed") == 1)
        await eventually(lambda: app.state.webhooks.in_flight == 0)
        text = (await client.get("/metrics")).text
    assert receiver.received == 4
    assert sample(text, 'taskcast_webhook_deliveries_total{outcome="delivered"}') == 1
    assert sample(text, 'taskcast_webhook_deliveries_total{outcome="retried"}') == 2
    assert sample(text, 'taskcast_webhook_deliveries_total{outcome="failed"}') == 1
    assert sample(text, 'taskcast_webhook_deliveries_total{outcome="refused"}') == 0
    assert sample(text, "taskcast_webhook_delivery_duration_seconds_count") == 4
    assert sample(text, "taskcast_webhook_delivery_duration_seconds_sum") > 0
    assert sample(text, "taskcast_webhook_deliveries_in_flight") == 0
    assert sample(text, "taskcast_storage_errors_total") == 0
    assert "# TYPE taskcast_webhook_deliveries_total counter" in text


class _ClaimFailsOnce(MemoryWebhookOutbox):
    failed = False

    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[Any]:
        if not self.failed:
            self.failed = True
            raise OSError("outbox down")
        return await super().claim_due(now, limit, lease_ms)


async def test_refused_targets_and_outbox_errors_are_counted(
    receiver: Receiver, serve_app: Any, eventually: Any
) -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    app = create_app(
        engine,
        config=ServerConfig(metrics=True),
        webhooks=WebhookSettings(poll_seconds=0.05),  # private targets refused
        webhook_outbox=_ClaimFailsOnce(),
    )
    outcomes: dict[str, int] = app.state.metrics.webhook_outcomes
    async with serve_app(app, engine) as url, httpx.AsyncClient(base_url=url) as client:
        task_id = await new_task(client, receiver.url)
        await client.post(f"/tasks/{task_id}/events", json={"type": "a", "level": "info"})
        await eventually(lambda: outcomes.get("refused") == 1)
        text = (await client.get("/metrics")).text
    assert receiver.received == 0
    assert sample(text, 'taskcast_webhook_deliveries_total{outcome="refused"}') == 1
    assert sample(text, 'taskcast_webhook_deliveries_total{outcome="delivered"}') == 0
    # The failed claim (the dispatcher's first poll) is a storage error.
    assert sample(text, "taskcast_storage_errors_total") == 1
