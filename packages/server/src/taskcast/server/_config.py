"""Settings of the HTTP application (a value object; only the CLI reads env and files)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from taskcast.core import ConfigError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

__all__ = ["ServerConfig"]


def _package_version() -> str:
    try:
        return version("taskcast-server")
    except PackageNotFoundError:  # pragma: no cover - only when run from a bare source tree
        return "0.0.0"


@dataclass(slots=True, frozen=True, kw_only=True)
class ServerConfig:
    """How :func:`~taskcast.server.create_app` serves the API."""

    heartbeat_seconds: float = 15.0
    """Seconds between ``: ping`` comments on an idle SSE stream."""
    write_timeout_seconds: float = 30.0
    """A stream whose client has not accepted a write for this long is closed (stalled reader)."""
    retry_ms: int = 3000
    """Reconnect delay suggested to SSE clients with a ``retry:`` field."""
    max_body_bytes: int = 1024 * 1024
    """Largest request body accepted; larger bodies get 413."""
    max_import_bytes: int = 16 * 1024 * 1024
    """Largest ``POST /tasks/import`` body (a whole task archive); larger bodies get 413.
    Separate from ``max_body_bytes`` because an archive holds a task's entire history; the
    server parses it in memory (several times its size), so this bounds that memory."""
    max_data_bytes: int = 256 * 1024
    """Largest JSON encoding of one event's ``data``; larger events get 413."""
    max_batch: int = 1000
    """Most events accepted in one ``POST /tasks/{id}/events``."""
    default_page_size: int = 100
    """Tasks in one ``GET /tasks`` page when the request gives no ``limit``."""
    max_page_size: int = 1000
    """Largest ``limit`` accepted by ``GET /tasks``; a larger one gets 400."""
    cors_origins: tuple[str, ...] | None = None
    """Origins allowed by CORS (``("*",)`` for any); ``None`` leaves CORS off."""
    queue_limit: int | None = None
    """Bound of each subscriber's queue; ``None`` uses the engine's ``queue_limit``."""
    version: str = _package_version()
    """Version reported by ``GET /``, ``/health`` and the OpenAPI document."""
    title: str = "Taskcast API"
    """Title of the OpenAPI document."""
    metrics: bool = False
    """Serve Prometheus metrics at ``GET /metrics``; off (and ``opentelemetry`` off), nothing
    is measured (no cost)."""
    metrics_dir: str | None = None
    """A directory shared by several processes serving the same port (``taskcast start
    --workers N`` makes one): each writes its metrics there and ``GET /metrics`` answers the
    sum over all of them, so counters do not jump between processes from one scrape to the
    next. ``None``: ``/metrics`` reports this process alone."""
    opentelemetry: bool = False
    """Report the same metrics through OpenTelemetry (meter ``taskcast.server``), with or
    without ``metrics``."""
    meter_provider: MeterProvider | None = None
    """The OpenTelemetry meter provider to report to; ``None`` uses the global one
    (``opentelemetry.metrics.get_meter_provider()``, e.g. set by ``opentelemetry-instrument``
    or by the host before or after the app is created)."""

    def __post_init__(self) -> None:
        if self.heartbeat_seconds <= 0:
            raise ConfigError("heartbeat_seconds must be positive")
        if self.write_timeout_seconds <= 0:
            raise ConfigError("write_timeout_seconds must be positive")
        if self.retry_ms < 0:
            raise ConfigError("retry_ms must not be negative")
        for name in (
            "max_body_bytes",
            "max_import_bytes",
            "max_data_bytes",
            "max_batch",
            "max_page_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive")
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise ConfigError("default_page_size must be between 1 and max_page_size")
        if self.queue_limit is not None and self.queue_limit < 1:
            raise ConfigError("queue_limit must be positive")
        if self.meter_provider is not None and not self.opentelemetry:
            # A provider without the switch would silently report nothing.
            raise ConfigError("meter_provider needs opentelemetry=True")
