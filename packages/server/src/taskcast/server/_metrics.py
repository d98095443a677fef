"""Prometheus metrics at ``GET /metrics`` (text exposition format 0.0.4), off by default.

Written by hand rather than with ``prometheus-client``: the handful of series below need no
dependency, and an app that leaves metrics off (``ServerConfig(metrics=False)`` and
``opentelemetry=False``, the defaults) installs no middleware, no hook, no observer and no
route, so it pays nothing per request or per event. The same counters feed OpenTelemetry
(``_otel.py``) when ``ServerConfig(opentelemetry=True)``; either can be on without the other.

Where the figures come from:

- publish requests, their latency and every response status: a pure ASGI middleware that
  times ``POST .../events`` and counts responses by route kind and status class;
- events published: the engine's ``on_events_published`` hook;
- SSE streams (opened, active, replay sizes, live fan-out lag, resyncs, slow consumers cut,
  how streams end): the hub's stream observer, called by :class:`taskcast.core.TaskStream`;
- webhook attempts (outcome, duration) and deliveries in flight: the webhook dispatcher's
  observer;
- storage errors: 503 answers, streams ended by a store failure and failed webhook outbox
  operations;
- long-term backlog, tasks whose archive writes the store refuses, and archive gaps (writes
  acknowledged and not archived past the gap check's grace period): read from the engine's
  archive writer and archive check at scrape time.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskcast.core import EventCache, EventCacheStats, TaskcastHooks, TaskEngine, TaskEvent

from ._config import ServerConfig
from ._webhooks import WebhookDispatcher

__all__ = ["CONTENT_TYPE", "Metrics", "install_metrics", "render_number"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_COUNTS = (0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0)
# A webhook attempt is a DNS check plus an HTTP round trip to another service, bounded by its
# timeout (10 s by default): coarser than the in-process latencies above.
_WEBHOOK_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed", "refused")
_NO_CACHE = EventCacheStats(hits=0, misses=0, entries=0, bytes=0)


class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics: ``le`` upper bounds, +Inf last)."""

    __slots__ = ("bounds", "buckets", "count", "mirror", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.buckets = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.mirror: Callable[[float], None] | None = None
        """Also given every value (an OpenTelemetry histogram's ``record``), if set."""

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value
        if self.mirror is not None:
            self.mirror(value)

    def lines(self, name: str) -> list[str]:
        out = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.buckets, strict=True):
            running += n
            out.append(f'{name}_bucket{{le="{render_number(bound)}"}} {running}')
        out.append(f"{name}_sum {render_number(self.sum)}")
        out.append(f"{name}_count {self.count}")
        return out


def render_number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metrics:
    """Counters for one app; also the hub's :class:`~taskcast.core.StreamObserver` and the
    webhook dispatcher's :class:`~taskcast.server.WebhookObserver`."""

    def __init__(self, engine: TaskEngine, webhooks: WebhookDispatcher | None = None) -> None:
        self._engine = engine
        self._webhooks = webhooks
        self.events_published = 0
        self.requests: dict[tuple[str, str], int] = {}
        self.publish_seconds = Histogram(_SECONDS)
        self.sse_opened = 0
        self.replay_events = Histogram(_COUNTS)
        self.fanout_lag_seconds = Histogram(_SECONDS)
        self.resyncs = 0
        self.stream_ends: dict[str, int] = {}
        self.storage_errors = 0
        self.webhook_outcomes: dict[str, int] = {}
        self.webhook_seconds = Histogram(_WEBHOOK_SECONDS)

    # -- engine hook -------------------------------------------------------------------------

    def on_events_published(self, task_id: str, events: Sequence[TaskEvent]) -> None:
        self.events_published += len(events)

    # -- stream observer ---------------------------------------------------------------------

    def on_replay(self, events: int) -> None:
        self.replay_events.observe(events)

    def on_live_lag(self, seconds: float) -> None:
        self.fanout_lag_seconds.observe(max(0.0, seconds))

    def on_resync(self) -> None:
        self.resyncs += 1

    def on_stream_end(self, reason: str) -> None:
        self.stream_ends[reason] = self.stream_ends.get(reason, 0) + 1
        if reason == "storage-error":
            self.storage_errors += 1

    # -- webhook observer --------------------------------------------------------------------

    def on_webhook_attempt(self, outcome: str, seconds: float) -> None:
        self.webhook_outcomes[outcome] = self.webhook_outcomes.get(outcome, 0) + 1
        self.webhook_seconds.observe(seconds)

    def on_webhook_outbox_error(self) -> None:
        self.storage_errors += 1

    # -- scrape-time readings ----------------------------------------------------------------

    @property
    def sse_connections(self) -> int:
        return self._engine.hub.total

    @property
    def long_term_backlog(self) -> int:
        archive = self._engine.archive
        return archive.backlog if archive is not None else 0

    @property
    def archive_failing_tasks(self) -> int:
        archive = self._engine.archive
        return archive.failing()["tasks"] if archive is not None else 0

    @property
    def archive_failing_oldest_seconds(self) -> float:
        archive = self._engine.archive
        age = archive.failing()["oldestAgeSeconds"] if archive is not None else None
        return float(age or 0.0)

    @property
    def archive_gap_tasks(self) -> int:
        checker = self._engine.archive_checker
        return checker.overdue if checker is not None else 0

    @property
    def archive_gap_oldest_seconds(self) -> float:
        checker = self._engine.archive_checker
        return checker.oldest_age_seconds if checker is not None else 0.0

    @property
    def archive_requeued(self) -> int:
        checker = self._engine.archive_checker
        return checker.requeued if checker is not None else 0

    @property
    def event_cache(self) -> EventCacheStats:
        """The short-term store's decoded-event cache (zeros for a store without one)."""
        cache = getattr(self._engine.short_term, "event_cache", None)
        return cache.stats() if isinstance(cache, EventCache) else _NO_CACHE

    @property
    def webhooks_in_flight(self) -> int:
        return self._webhooks.in_flight if self._webhooks is not None else 0

    # -- HTTP --------------------------------------------------------------------------------

    def on_response(self, route: str, status: int, seconds: float | None) -> None:
        key = (route, f"{status // 100}xx")
        self.requests[key] = self.requests.get(key, 0) + 1
        if status == 503:
            self.storage_errors += 1
        if seconds is not None:
            self.publish_seconds.observe(seconds)

    # -- exposition --------------------------------------------------------------------------

    def render(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[str]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)

        metric(
            "taskcast_events_published_total",
            "counter",
            "Events committed by this process (status events included).",
            [f"taskcast_events_published_total {self.events_published}"],
        )
        metric(
            "taskcast_http_requests_total",
            "counter",
            "HTTP responses by route kind and status class.",
            [
                f'taskcast_http_requests_total{{route="{route}",status="{cls}"}} {n}'
                for (route, cls), n in sorted(self.requests.items())
            ],
        )
        metric(
            "taskcast_publish_duration_seconds",
            "histogram",
            "Time to answer POST /tasks/{id}/events (validation, commit, fan-out).",
            self.publish_seconds.lines("taskcast_publish_duration_seconds"),
        )
        metric(
            "taskcast_sse_connections",
            "gauge",
            "Open SSE streams (per-task and global) in this process.",
            [f"taskcast_sse_connections {self.sse_connections}"],
        )
        metric(
            "taskcast_sse_connections_opened_total",
            "counter",
            "SSE streams opened.",
            [f"taskcast_sse_connections_opened_total {self.sse_opened}"],
        )
        metric(
            "taskcast_sse_stream_ends_total",
            "counter",
            "Per-task SSE streams ended, by reason (terminal status, client-closed, "
            "slow-consumer, shutdown, deleted, storage-error).",
            [
                f'taskcast_sse_stream_ends_total{{reason="{reason}"}} {n}'
                for reason, n in sorted(self.stream_ends.items())
            ],
        )
        metric(
            "taskcast_sse_slow_consumers_total",
            "counter",
            "Streams cut because the subscriber fell more than queue_limit events behind.",
            [f"taskcast_sse_slow_consumers_total {self.stream_ends.get('slow-consumer', 0)}"],
        )
        metric(
            "taskcast_sse_resyncs_total",
            "counter",
            "Streams that sent taskcast.resync (resume cursor unknown or expired).",
            [f"taskcast_sse_resyncs_total {self.resyncs}"],
        )
        metric(
            "taskcast_sse_replay_events",
            "histogram",
            "Stored events replayed to a new stream before it went live.",
            self.replay_events.lines("taskcast_sse_replay_events"),
        )
        metric(
            "taskcast_sse_fanout_lag_seconds",
            "histogram",
            "Age of the oldest live event when a stream wakes up to send it.",
            self.fanout_lag_seconds.lines("taskcast_sse_fanout_lag_seconds"),
        )
        metric(
            "taskcast_storage_errors_total",
            "counter",
            "Requests answered 503, streams ended by a storage failure and failed webhook "
            "outbox operations.",
            [f"taskcast_storage_errors_total {self.storage_errors}"],
        )
        metric(
            "taskcast_long_term_backlog",
            "gauge",
            "Writes queued for the long-term store (0 without one).",
            [f"taskcast_long_term_backlog {self.long_term_backlog}"],
        )
        metric(
            "taskcast_archive_failing_tasks",
            "gauge",
            "Tasks whose writes the long-term store refuses (not an outage); each is retried "
            "on its own backoff.",
            [f"taskcast_archive_failing_tasks {self.archive_failing_tasks}"],
        )
        metric(
            "taskcast_archive_failing_oldest_seconds",
            "gauge",
            "Age of the oldest failing task's first refused write (0 when none).",
            [
                "taskcast_archive_failing_oldest_seconds "
                f"{render_number(self.archive_failing_oldest_seconds)}"
            ],
        )
        metric(
            "taskcast_archive_gap_tasks",
            "gauge",
            "Tasks with writes acknowledged longer ago than the archive check's grace period "
            "plus one interval and not confirmed archived, as of the last check (0 without "
            "the check).",
            [f"taskcast_archive_gap_tasks {self.archive_gap_tasks}"],
        )
        metric(
            "taskcast_archive_gap_oldest_seconds",
            "gauge",
            "Age of the oldest such write (0 when none).",
            [
                "taskcast_archive_gap_oldest_seconds "
                f"{render_number(self.archive_gap_oldest_seconds)}"
            ],
        )
        metric(
            "taskcast_archive_requeued_writes_total",
            "counter",
            "Writes this process re-queued because the archive lacked them past the grace "
            "period (another process died with them queued).",
            [f"taskcast_archive_requeued_writes_total {self.archive_requeued}"],
        )
        cache = self.event_cache
        metric(
            "taskcast_event_cache_hits_total",
            "counter",
            "Stored events read (replay, history) and found decoded in the store's event cache.",
            [f"taskcast_event_cache_hits_total {cache.hits}"],
        )
        metric(
            "taskcast_event_cache_misses_total",
            "counter",
            "Stored events read and decoded (not in the event cache).",
            [f"taskcast_event_cache_misses_total {cache.misses}"],
        )
        metric(
            "taskcast_event_cache_bytes",
            "gauge",
            "Estimated memory held by the event cache (limits.eventCacheBytes at most).",
            [f"taskcast_event_cache_bytes {cache.bytes}"],
        )
        outcomes = {outcome: 0 for outcome in WEBHOOK_OUTCOMES}
        outcomes.update(self.webhook_outcomes)
        metric(
            "taskcast_webhook_deliveries_total",
            "counter",
            "Webhook delivery attempts by outcome: delivered (2xx), retried (failed, another "
            "attempt scheduled), failed (last attempt failed, given up), refused (the target "
            "resolves to a non-public address).",
            [
                f'taskcast_webhook_deliveries_total{{outcome="{outcome}"}} {n}'
                for outcome, n in outcomes.items()
            ],
        )
        metric(
            "taskcast_webhook_delivery_duration_seconds",
            "histogram",
            "Time of one webhook delivery attempt (address check, POST, response status).",
            self.webhook_seconds.lines("taskcast_webhook_delivery_duration_seconds"),
        )
        metric(
            "taskcast_webhook_deliveries_in_flight",
            "gauge",
            "Webhook deliveries being attempted by this process.",
            [f"taskcast_webhook_deliveries_in_flight {self.webhooks_in_flight}"],
        )
        return "\n".join(lines) + "\n"


class _MetricsMiddleware:
    """Times publishes and counts responses; SSE streams are counted when they start."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.endswith("/events"):
            route = "publish" if method == "POST" else "sse" if method == "GET" else "other"
        elif path.endswith("/metrics"):
            await self.app(scope, receive, send)
            return
        else:
            route = "other"
        metrics = self.metrics
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if route == "sse" and status == 200:
                    metrics.sse_opened += 1
                elapsed = time.perf_counter() - started if route == "publish" else None
                metrics.on_response(route, status, elapsed)
            await send(message)

        await self.app(scope, receive, send_wrapper)


def install_metrics(app: FastAPI, engine: TaskEngine, config: ServerConfig) -> Metrics:
    """Wire metrics into ``app``, ``engine`` and the app's webhook dispatcher; serve them at
    ``GET /metrics`` if ``config.metrics`` and through OpenTelemetry if
    ``config.opentelemetry``."""
    dispatcher: WebhookDispatcher | None = getattr(app.state, "webhooks", None)
    metrics = Metrics(engine, dispatcher)
    engine.hooks.add(TaskcastHooks(on_events_published=metrics.on_events_published))
    engine.hub.observer = metrics
    if dispatcher is not None:
        dispatcher.observer = metrics
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    app.state.metrics = metrics
    if config.opentelemetry:
        # Imported here so that an app with OpenTelemetry off never loads that module.
        from ._otel import install_opentelemetry

        install_opentelemetry(metrics, config.meter_provider)
    if not config.metrics:
        return metrics
    render = metrics.render
    if config.metrics_dir is not None:
        # Several processes serve this port: answer for all of them (see _metrics_share).
        from ._metrics_share import SharedMetrics

        shared = SharedMetrics(metrics, config.metrics_dir)
        app.state.metrics_share = shared
        render = shared.render

    @app.get(
        "/metrics",
        summary="Prometheus metrics (when enabled)",
        tags=["health"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format 0.0.4",
                "content": {
                    CONTENT_TYPE: {
                        "schema": {
                            "type": "string",
                            "description": "Prometheus text exposition format 0.0.4 (series "
                            "in docs/performance.md).",
                        },
                        "example": "# HELP taskcast_events_published_total Events committed "
                        "by this process (status events included).\n"
                        "# TYPE taskcast_events_published_total counter\n"
                        "taskcast_events_published_total 42\n",
                    }
                },
            }
        },
    )
    async def metrics_endpoint(request: Request) -> Response:
        return Response(render(), media_type=CONTENT_TYPE)

    return metrics
