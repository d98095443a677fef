"""The server's metrics through OpenTelemetry (``ServerConfig(opentelemetry=True)``).

The counters kept for ``GET /metrics`` (:class:`~taskcast.server._metrics.Metrics`) are
reported by observable instruments, read only when the meter provider collects: nothing is
added per event. Distributions cannot be read back that way, so each histogram also feeds a
synchronous OpenTelemetry histogram (one ``record`` per observation).

Names follow the OpenTelemetry conventions (dotted, units in ``unit`` not in the name). An
exporter to Prometheus turns them back into the ``/metrics`` names, e.g.
``taskcast.publish.duration`` (s) into ``taskcast_publish_duration_seconds``.

Instruments are created once per meter provider and report the sum over every app wired to
that provider: the SDK keeps the first callback of a duplicate instrument and drops later
ones, so a second app creating its own would not be reported.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TypeVar

from opentelemetry.metrics import (
    CallbackOptions,
    Meter,
    MeterProvider,
    Observation,
    get_meter_provider,
)

from ._config import _package_version
from ._metrics import _COUNTS, _SECONDS, _WEBHOOK_SECONDS, Metrics

__all__ = ["METER_NAME", "install_opentelemetry"]

METER_NAME = "taskcast.server"

_Callback = Callable[[CallbackOptions], Iterable[Observation]]
_N = TypeVar("_N", int, float)


def _read(fn: Callable[[], _N]) -> _N | None:
    # Collection may run on an exporter's thread while the event loop changes the sets
    # these readings iterate (open streams, queued writes); a reading that hit a change is
    # taken again, and after repeated misses that collection simply skips it.
    for _ in range(3):
        try:
            return fn()
        except RuntimeError:
            continue
    return None


class _Instruments:
    """One meter provider's instruments, fed by every app registered with it."""

    def __init__(self, meter: Meter) -> None:
        self.sources: weakref.WeakSet[Metrics] = weakref.WeakSet()
        self.publish_duration = meter.create_histogram(
            "taskcast.publish.duration",
            unit="s",
            description="Time to answer POST /tasks/{id}/events (validation, commit, fan-out).",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.replay_events = meter.create_histogram(
            "taskcast.sse.replay_events",
            unit="{event}",
            description="Stored events replayed to a new stream before it went live.",
            explicit_bucket_boundaries_advisory=_COUNTS,
        )
        self.fanout_lag = meter.create_histogram(
            "taskcast.sse.fanout_lag",
            unit="s",
            description="Age of the oldest live event when a stream wakes up to send it.",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.webhook_duration = meter.create_histogram(
            "taskcast.webhook.delivery.duration",
            unit="s",
            description="Time of one webhook delivery attempt (address check, POST, status).",
            explicit_bucket_boundaries_advisory=_WEBHOOK_SECONDS,
        )
        meter.create_observable_counter(
            "taskcast.events.published",
            [self._total(lambda m: m.events_published)],
            unit="{event}",
            description="Events committed by this process (status events included).",
        )
        meter.create_observable_counter(
            "taskcast.http.requests",
            [self._http_requests],
            unit="{request}",
            description="HTTP responses by route kind and status class.",
        )
        meter.create_observable_up_down_counter(
            "taskcast.sse.connections",
            [self._total(lambda m: m.sse_connections)],
            unit="{connection}",
            description="Open SSE streams (per-task and global) in this process.",
        )
        meter.create_observable_counter(
            "taskcast.sse.opened",
            [self._total(lambda m: m.sse_opened)],
            unit="{connection}",
            description="SSE streams opened.",
        )
        meter.create_observable_counter(
            "taskcast.sse.stream_ends",
            [self._by("reason", lambda m: m.stream_ends)],
            unit="{stream}",
            description="Per-task SSE streams ended, by reason.",
        )
        meter.create_observable_counter(
            "taskcast.sse.slow_consumers",
            [self._total(lambda m: m.stream_ends.get("slow-consumer", 0))],
            unit="{stream}",
            description="Streams cut because the subscriber fell more than queue_limit "
            "events behind.",
        )
        meter.create_observable_counter(
            "taskcast.sse.resyncs",
            [self._total(lambda m: m.resyncs)],
            unit="{stream}",
            description="Streams that sent taskcast.resync (resume cursor unknown or expired).",
        )
        meter.create_observable_counter(
            "taskcast.storage.errors",
            [self._total(lambda m: m.storage_errors)],
            unit="{error}",
            description="Requests answered 503, streams ended by a storage failure and "
            "failed webhook outbox operations.",
        )
        meter.create_observable_up_down_counter(
            "taskcast.long_term.backlog",
            [self._total(lambda m: m.long_term_backlog)],
            unit="{write}",
            description="Writes queued for the long-term store (0 without one).",
        )
        meter.create_observable_up_down_counter(
            "taskcast.archive.failing_tasks",
            [self._total(lambda m: m.archive_failing_tasks)],
            unit="{task}",
            description="Tasks whose writes the long-term store refuses (not an outage).",
        )
        meter.create_observable_gauge(
            "taskcast.archive.failing_oldest",
            [self._oldest(lambda m: m.archive_failing_oldest_seconds)],
            unit="s",
            description="Age of the oldest failing task's first refused write.",
        )
        meter.create_observable_up_down_counter(
            "taskcast.archive.gap_tasks",
            [self._total(lambda m: m.archive_gap_tasks)],
            unit="{task}",
            description="Tasks with writes not confirmed archived past the archive check's "
            "grace period plus one interval.",
        )
        meter.create_observable_gauge(
            "taskcast.archive.gap_oldest",
            [self._oldest(lambda m: m.archive_gap_oldest_seconds)],
            unit="s",
            description="Age of the oldest write not confirmed archived past the grace period.",
        )
        meter.create_observable_counter(
            "taskcast.archive.requeued",
            [self._total(lambda m: m.archive_requeued)],
            unit="{write}",
            description="Writes re-queued because the archive lacked them past the grace period.",
        )
        meter.create_observable_counter(
            "taskcast.event_cache.hits",
            [self._total(lambda m: m.event_cache.hits)],
            unit="{event}",
            description="Stored events read and found decoded in the store's event cache.",
        )
        meter.create_observable_counter(
            "taskcast.event_cache.misses",
            [self._total(lambda m: m.event_cache.misses)],
            unit="{event}",
            description="Stored events read and decoded (not in the event cache).",
        )
        meter.create_observable_up_down_counter(
            "taskcast.event_cache.size",
            [self._total(lambda m: m.event_cache.bytes)],
            unit="By",
            description="Estimated memory held by the event cache.",
        )
        meter.create_observable_counter(
            "taskcast.webhook.deliveries",
            [self._by("outcome", lambda m: m.webhook_outcomes)],
            unit="{attempt}",
            description="Webhook delivery attempts by outcome (delivered, retried, failed, "
            "refused).",
        )
        meter.create_observable_up_down_counter(
            "taskcast.webhook.in_flight",
            [self._total(lambda m: m.webhooks_in_flight)],
            unit="{delivery}",
            description="Webhook deliveries being attempted by this process.",
        )

    def _total(self, read: Callable[[Metrics], int]) -> _Callback:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            total = 0
            for metrics in list(self.sources):
                value = _read(partial(read, metrics))
                if value is None:
                    return []
                total += value
            return [Observation(total)]

        return callback

    def _oldest(self, read: Callable[[Metrics], float]) -> _Callback:
        """The largest reading over the sources (an age is not summed)."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            oldest = 0.0
            for metrics in list(self.sources):
                value = _read(partial(read, metrics))
                if value is None:
                    return []
                oldest = max(oldest, value)
            return [Observation(oldest)]

        return callback

    def _by(self, attribute: str, read: Callable[[Metrics], Mapping[str, int]]) -> _Callback:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            totals: dict[str, int] = {}
            for metrics in list(self.sources):
                # dict() copies in one step under the GIL: safe against loop-side updates.
                for key, n in dict(read(metrics)).items():
                    totals[key] = totals.get(key, 0) + n
            return [Observation(n, {attribute: key}) for key, n in sorted(totals.items())]

        return callback

    def _http_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[tuple[str, str], int] = {}
        for metrics in list(self.sources):
            for key, n in dict(metrics.requests).items():
                totals[key] = totals.get(key, 0) + n
        return [
            Observation(n, {"route": route, "status": status})
            for (route, status), n in sorted(totals.items())
        ]


_by_provider: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = weakref.WeakKeyDictionary()


def install_opentelemetry(metrics: Metrics, provider: MeterProvider | None = None) -> None:
    """Report ``metrics`` through ``provider`` (default: the global meter provider)."""
    provider = provider if provider is not None else get_meter_provider()
    instruments = _by_provider.get(provider)
    if instruments is None:
        meter = provider.get_meter(METER_NAME, _package_version())
        instruments = _by_provider[provider] = _Instruments(meter)
    instruments.sources.add(metrics)
    metrics.publish_seconds.mirror = instruments.publish_duration.record
    metrics.replay_events.mirror = instruments.replay_events.record
    metrics.fanout_lag_seconds.mirror = instruments.fanout_lag.record
    metrics.webhook_seconds.mirror = instruments.webhook_duration.record
