"""The I/O-free part of a subscription: cursors, dedupe and frame handling.

Both the sync and the async subscription drive one :class:`StreamState` per subscription.
It remembers the last delivered event so a reconnect resumes with ``Last-Event-ID``, and
it drops anything already delivered (by index and id), so a replay that overlaps what was
seen — a server that ignores the header, or a race at the resume point — never repeats
an event.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent

from ._models import Resync, StreamEvent, SubscribeOptions

__all__ = [
    "DEFAULT_BASE_URL",
    "DONE",
    "REPLACED",
    "StreamState",
    "make_options",
    "sse_timeout",
    "task_events_url",
]

logger = logging.getLogger(__name__)

DONE: Final[Any] = object()
_SEEN_IDS: Final = 4096

REPLACED: Final = "replaced"
"""The ``taskcast.done`` reason (and then :class:`Resync` reason) of a task overwritten by an
archive import: the subscription starts over on the new history instead of ending."""

DEFAULT_BASE_URL = "http://127.0.0.1:3721"


def sse_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """Connect/write/pool limits with no read timeout: a healthy stream may idle for long."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, read=None)


def make_options(
    *,
    types: Iterable[str] | None,
    levels: Iterable[str] | None,
    include_status: bool,
    wrap: bool,
    series_format: Literal["delta", "accumulated"] | None,
    since_id: str | None,
    since_index: int | None,
    since_timestamp: int | None,
) -> SubscribeOptions:
    return SubscribeOptions(
        types=None if types is None else (types,) if isinstance(types, str) else tuple(types),
        levels=None if levels is None else (levels,) if isinstance(levels, str) else tuple(levels),
        include_status=include_status,
        wrap=wrap,
        series_format=series_format,
        since_id=since_id,
        since_index=since_index,
        since_timestamp=since_timestamp,
    )


def task_events_url(base_url: str, task_id: str) -> str:
    return f"{base_url}/tasks/{quote(task_id, safe='')}/events"


class StreamState:
    """Cursor and dedupe state of one subscription across its connections."""

    def __init__(self, options: SubscribeOptions) -> None:
        self.options = options
        self.last_event_id: str | None = None
        self.done_reason: str | None = None
        self.retry_ms: int | None = None
        self.connections = 0
        self._max_index = -1
        self._ids: set[str] = set()
        self._id_order: deque[str] = deque()
        self._last_fi = -1
        self._fi_offset = 0
        self.restart = False
        """Set by a ``replaced`` done frame: reconnect at once, from the new history's start."""

    # -- requests --------------------------------------------------------------------------

    def begin(self, token: str | None) -> tuple[dict[str, str], dict[str, str]]:
        """Start a connection: its query parameters and headers."""
        self.connections += 1
        self.restart = False
        resuming = self.last_event_id is not None
        # A resumed replay numbers filtered events from 0 again; continue our own count.
        self._fi_offset = self._last_fi + 1 if resuming else 0
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if resuming:
            assert self.last_event_id is not None
            headers["Last-Event-ID"] = self.last_event_id
        return self.options.params(resuming=resuming), headers

    # -- frames ----------------------------------------------------------------------------

    def handle(self, sse: ServerSentEvent) -> StreamEvent | Resync | Any | None:
        """What one SSE message means: an event to deliver, a resync, DONE, or None."""
        if sse.retry is not None:
            self.retry_ms = sse.retry
        name = sse.event
        if name not in ("taskcast.event", "taskcast.done", "taskcast.resync"):
            return None
        try:
            payload = json.loads(sse.data)
        except ValueError:
            logger.warning("Ignoring %s with malformed data: %.200r", name, sse.data)
            return None
        if not isinstance(payload, dict):
            logger.warning("Ignoring %s with non-object data: %.200r", name, sse.data)
            return None
        if name == "taskcast.done":
            reason = str(payload.get("reason", ""))
            if reason == REPLACED:
                return self._replaced(payload)
            self.done_reason = reason
            return DONE
        if name == "taskcast.resync":
            return self._resync(payload)
        try:
            event = StreamEvent.from_wire(payload)
        except (KeyError, TypeError):
            logger.warning("Ignoring taskcast.event without the event fields: %.200r", sse.data)
            return None
        return self._accept(event)

    def _accept(self, event: StreamEvent) -> StreamEvent | None:
        if event.index <= self._max_index or event.id in self._ids:
            logger.debug("Dropping duplicate event %s (index %d)", event.id, event.index)
            return None
        self._max_index = event.index
        self.last_event_id = event.id
        self._ids.add(event.id)
        self._id_order.append(event.id)
        if len(self._id_order) > _SEEN_IDS:
            self._ids.discard(self._id_order.popleft())
        if event.filtered_index is not None:
            fi = event.filtered_index + self._fi_offset
            self._last_fi = fi
            if self._fi_offset:
                event = replace(event, filtered_index=fi)
        return event

    def _replaced(self, payload: dict[str, Any]) -> Resync:
        # An archive import overwrote the task: the ids, indexes and filtered indexes seen so
        # far belong to the old history and mean nothing in the new one, so no cursor is
        # kept — neither the last event id nor the caller's since.* — and the next connection
        # replays the new history from its start.
        cursor = self.last_event_id
        self._forget()
        self.last_event_id = None
        self.options = replace(self.options, since_id=None, since_index=None, since_timestamp=None)
        self.restart = True
        return Resync(reason=REPLACED, cursor=cursor, status=None, data=payload)

    def _forget(self) -> None:
        self._max_index = -1
        self._ids.clear()
        self._id_order.clear()
        self._last_fi = -1
        self._fi_offset = 0

    def _resync(self, payload: dict[str, Any]) -> Resync:
        # A full replay follows: forget what was delivered so it is delivered again.
        self._forget()
        cursor, status = payload.get("cursor"), payload.get("status")
        return Resync(
            reason=str(payload.get("reason", "")),
            cursor=None if cursor is None else str(cursor),
            status=None if status is None else str(status),
            data=payload,
        )
