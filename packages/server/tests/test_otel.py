"""The server's metrics through OpenTelemetry, read back with the SDK's in-memory reader."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.metrics import CallbackOptions
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from taskcast.core import ConfigError, MemoryShortTermStore, TaskEngine, WebhookRetry
from taskcast.server import ServerConfig, WebhookSettings, _otel, create_app
from taskcast.server._metrics import Metrics

pytestmark = pytest.mark.anyio

ONE = {"type": "a", "level": "info", "data": 1}


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider
    provider.shutdown()


@pytest.fixture
def config(provider: MeterProvider) -> ServerConfig:
    return ServerConfig(heartbeat_seconds=0.2, opentelemetry=True, meter_provider=provider)


@pytest.fixture
def app(engine: TaskEngine, config: ServerConfig) -> FastAPI:
    settings = WebhookSettings(
        allow_private=True, poll_seconds=0.05, default_retry=WebhookRetry(retries=0)
    )
    return create_app(engine, config=config, webhooks=settings)


class Points:
    """One collection: instrument name → data points (``taskcast.server`` meter only)."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.points: dict[str, list[Any]] = {}
        self.units: dict[str, str] = {}
        data = reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                if scope.scope.name != _otel.METER_NAME:
                    continue
                for metric in scope.metrics:
                    self.points[metric.name] = list(metric.data.data_points)
                    self.units[metric.name] = metric.unit or ""

    def point(self, name: str, **attributes: str) -> Any:
        for point in self.points[name]:
            if dict(point.attributes or {}) == attributes:
                return point
        raise AssertionError(f"{name} {attributes} not reported: {self.points.get(name)}")

    def value(self, name: str, **attributes: str) -> float:
        return float(self.point(name, **attributes).value)


@pytest.fixture
async def hook_url(serve_app: Any) -> AsyncIterator[str]:
    async def hook(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    async with serve_app(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        yield url + "/hook"


async def test_publish_streams_and_webhooks_are_reported(
    live: httpx.AsyncClient,
    app: FastAPI,
    reader: InMemoryMetricReader,
    open_sse: Any,
    hook_url: str,
    eventually: Any,
) -> None:
    # OpenTelemetry on, /metrics off: the route is not served.
    assert (await live.get("/metrics")).status_code == 404
    body = {"webhooks": [{"url": hook_url, "filter": {"types": ["a"]}}]}
    task_id = (await live.post("/tasks", json=body)).json()["id"]
    await live.patch(f"/tasks/{task_id}/status", json={"status": "running"})
    assert (await live.post(f"/tasks/{task_id}/events", json=ONE)).status_code == 201
    assert (await live.post(f"/tasks/{task_id}/events", json=[ONE, ONE])).status_code == 201
    outcomes = app.state.metrics.webhook_outcomes
    await eventually(lambda: outcomes.get("delivered") == 3)
    async with open_sse(live, f"/tasks/{task_id}/events") as stream:
        await stream.events_until(lambda f: f.event == "taskcast.event" and f.data["rawIndex"] == 3)
        during = Points(reader)
        await live.patch(f"/tasks/{task_id}/status", json={"status": "completed"})
        await stream.events_until(lambda f: f.event == "taskcast.done")
    await eventually(lambda: app.state.webhooks.in_flight == 0)
    after = Points(reader)

    # 3 events plus the running status event.
    assert during.value("taskcast.events.published") == 4
    assert during.value("taskcast.http.requests", route="publish", status="2xx") == 2
    duration = during.point("taskcast.publish.duration")
    assert duration.count == 2 and duration.sum > 0
    assert during.units["taskcast.publish.duration"] == "s"
    assert during.value("taskcast.sse.connections") == 1
    assert during.value("taskcast.sse.opened") == 1
    replay = during.point("taskcast.sse.replay_events")
    assert (replay.count, replay.sum) == (1, 4)
    assert during.value("taskcast.webhook.deliveries", outcome="delivered") == 3
    assert during.point("taskcast.webhook.delivery.duration").count == 3

    assert after.value("taskcast.events.published") == 5
    assert after.value("taskcast.sse.connections") == 0
    assert after.value("taskcast.sse.stream_ends", reason="completed") == 1
    assert after.value("taskcast.sse.slow_consumers") == 0
    assert after.value("taskcast.sse.resyncs") == 0
    assert after.point("taskcast.sse.fanout_lag").count >= 1
    assert after.value("taskcast.storage.errors") == 0
    assert after.value("taskcast.long_term.backlog") == 0
    assert after.value("taskcast.webhook.in_flight") == 0
    # The memory store keeps events decoded anyway: it has no event cache to report.
    assert after.value("taskcast.event_cache.hits") == 0
    assert after.value("taskcast.event_cache.misses") == 0
    assert after.value("taskcast.event_cache.size") == 0
    assert after.units["taskcast.event_cache.size"] == "By"


async def test_both_exports_read_the_same_counters(
    engine: TaskEngine, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    config = ServerConfig(metrics=True, opentelemetry=True, meter_provider=provider)
    app = create_app(engine, config=config)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        task_id = (await client.post("/tasks", json={})).json()["id"]
        await client.patch(f"/tasks/{task_id}/status", json={"status": "running"})
        await client.post(f"/tasks/{task_id}/events", json=[ONE, ONE, ONE])
        text = (await client.get("/metrics")).text
    assert re.search(r"^taskcast_events_published_total 4$", text, re.MULTILINE)
    assert Points(reader).value("taskcast.events.published") == 4


async def test_apps_sharing_a_provider_are_summed(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    config = ServerConfig(opentelemetry=True, meter_provider=provider)
    apps = []  # both stay alive, as apps do while they serve (sources are weakly held)
    for events in (1, 2):
        engine = TaskEngine(short_term=MemoryShortTermStore())
        app = create_app(engine, config=config)
        apps.append(app)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            task_id = (await client.post("/tasks", json={})).json()["id"]
            await client.patch(f"/tasks/{task_id}/status", json={"status": "running"})
            await client.post(f"/tasks/{task_id}/events", json=[ONE] * events)
    # (1 + 1 status event) + (2 + 1 status event), and both publishes timed.
    points = Points(reader)
    assert points.value("taskcast.events.published") == 5
    assert points.point("taskcast.publish.duration").count == 2


async def test_global_meter_provider_by_default(
    engine: TaskEngine,
    provider: MeterProvider,
    reader: InMemoryMetricReader,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The process-wide provider can be set only once, so this test hands its own provider
    # out as the global one rather than setting it.
    monkeypatch.setattr(_otel, "get_meter_provider", lambda: provider)
    app = create_app(engine, config=ServerConfig(opentelemetry=True))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        await client.post("/tasks", json={})
    assert Points(reader).value("taskcast.http.requests", route="other", status="2xx") == 1


def test_a_provider_needs_the_switch(provider: MeterProvider) -> None:
    with pytest.raises(ConfigError, match="meter_provider needs opentelemetry=True"):
        ServerConfig(meter_provider=provider)


class _Changing:
    """Raises what iterating a set changed by another thread raises, ``misses`` times."""

    def __init__(self, misses: int) -> None:
        self.misses = misses

    def __call__(self) -> int:
        if self.misses:
            self.misses -= 1
            raise RuntimeError("Set changed size during iteration")
        return 7


def test_readings_hit_by_a_concurrent_change_are_retried_then_skipped(
    engine: TaskEngine, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    assert _otel._read(_Changing(misses=2)) == 7
    assert _otel._read(_Changing(misses=3)) is None
    metrics = Metrics(engine)
    _otel.install_opentelemetry(metrics, provider)
    instruments = _otel._by_provider[provider]
    callback = instruments._total(lambda m: _Changing(misses=5)())
    assert list(callback(CallbackOptions())) == []
