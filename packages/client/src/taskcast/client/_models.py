"""What a subscription yields, and how it is configured."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ReconnectConfig", "Resync", "StreamEvent", "SubscribeOptions"]


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamEvent:
    """One task event as delivered on the stream (``taskcast.event``).

    The same record whichever wire shape was requested: with ``wrap=True`` (the default)
    ``filtered_index`` is set, with ``wrap=False`` it is ``None``.
    """

    id: str
    task_id: str
    index: int
    """The event's position in the task's stream (``rawIndex``); strictly increasing."""
    type: str
    level: str
    timestamp: int
    data: Any = None
    filtered_index: int | None = None
    """Position among the events that pass this subscription's filter, continuous across
    reconnects (0 at the first delivered event of a replay from the start)."""
    series_id: str | None = None
    series_mode: str | None = None
    series_acc_field: str | None = None
    series_snapshot: bool = False
    """True when this is a collapsed ``accumulate`` snapshot (``data`` holds the whole text)."""

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> StreamEvent:
        """Read an SSE envelope (``wrap=true``) or a full TaskEvent (``wrap=false``)."""
        if "eventId" in data:
            event_id, index, fi = data["eventId"], data["rawIndex"], data.get("filteredIndex")
        else:
            event_id, index, fi = data["id"], data["index"], None
        return cls(
            id=event_id,
            task_id=data["taskId"],
            index=index,
            type=data["type"],
            level=data["level"],
            timestamp=data["timestamp"],
            data=data.get("data"),
            filtered_index=fi,
            series_id=data.get("seriesId"),
            series_mode=data.get("seriesMode"),
            series_acc_field=data.get("seriesAccField"),
            series_snapshot=bool(data.get("seriesSnapshot", False)),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Resync:
    """The server could not resume from the cursor (``taskcast.resync``), or the task was
    replaced by an archive import.

    What follows is a full replay of the retained history: drop whatever you built from
    earlier events and rebuild from the next ones.
    """

    reason: str
    """Why: e.g. ``"unknown-cursor"`` (the event was never seen or has expired), or
    ``"replaced"`` — an archive import overwrote the task (``taskcast.done`` with that
    reason); the subscription reconnects without a cursor and what follows is the new
    history from its first event (``cursor`` is then the last id of the old history)."""
    cursor: str | None = None
    status: str | None = None
    """The task's status when the resync was sent."""
    data: dict[str, Any] = field(default_factory=dict)
    """The full ``taskcast.resync`` payload."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SubscribeOptions:
    """Filters and cursor of one subscription (the query of ``GET /tasks/{id}/events``)."""

    types: tuple[str, ...] | None = None
    """Type patterns (``llm.*``, ``*``, exact names); None for all."""
    levels: tuple[str, ...] | None = None
    include_status: bool = True
    """Whether ``taskcast:status`` events are delivered."""
    wrap: bool = True
    series_format: Literal["delta", "accumulated"] | None = None
    since_id: str | None = None
    since_index: int | None = None
    """A *filtered* index: events up to and including it are skipped."""
    since_timestamp: int | None = None

    def params(self, *, resuming: bool) -> dict[str, str]:
        """Query parameters; a resumed connection drops ``since.*`` for ``Last-Event-ID``
        (an explicit ``since.*`` would win over the header on the server)."""
        out: dict[str, str] = {}
        if self.types is not None:
            out["types"] = ",".join(self.types)
        if self.levels is not None:
            out["levels"] = ",".join(self.levels)
        if not self.include_status:
            out["includeStatus"] = "false"
        if not self.wrap:
            out["wrap"] = "false"
        if self.series_format is not None:
            out["seriesFormat"] = self.series_format
        if not resuming:
            if self.since_id is not None:
                out["since.id"] = self.since_id
            if self.since_index is not None:
                out["since.index"] = str(self.since_index)
            if self.since_timestamp is not None:
                out["since.timestamp"] = str(self.since_timestamp)
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ReconnectConfig:
    """How a dropped stream is re-established.

    The n-th consecutive failed attempt waits ``min(max_delay, base * multiplier**(n-1))``
    seconds, less up to ``jitter`` of that at random, where ``base`` is the server's
    ``retry:`` hint when it sent one, else ``initial_delay``. Any delivered event resets
    the count.
    """

    enabled: bool = True
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    """Fraction of each delay drawn at random, so clients cut together do not return together."""
    max_attempts: int | None = None
    """Consecutive failed attempts before :class:`StreamInterruptedError`; None retries forever."""
    max_elapsed: float | None = None
    """Seconds since the first of the current run of failures before
    :class:`StreamInterruptedError`; None retries forever. A time budget, unlike
    ``max_attempts``, does not shrink when the server's ``retry:`` hint is short."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("delays must be non-negative and multiplier at least 1")
        if self.max_elapsed is not None and self.max_elapsed < 0:
            raise ValueError("max_elapsed must be non-negative")

    def delay(self, failures: int, server_retry_ms: int | None) -> float:
        base = self.initial_delay if server_retry_ms is None else server_retry_ms / 1000
        delay: float = min(self.max_delay, base * self.multiplier ** (failures - 1))
        return delay * (1 - self.jitter * random.random())

    def gives_up(self, failures: int, elapsed: float = 0.0) -> bool:
        """Whether to stop after ``failures`` consecutive failures spanning ``elapsed`` seconds."""
        if not self.enabled:
            return True
        if self.max_elapsed is not None and elapsed >= self.max_elapsed:
            return True
        return self.max_attempts is not None and failures > self.max_attempts
