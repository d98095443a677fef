"""SSE frames, encoded once per event and wire shape.

A committed event fans out to every subscriber of its task. :class:`WireEvent` caches the
encoded frame per shape (``wrap`` x ``seriesFormat``), so N subscribers with the same
shape cost one JSON encode; the per-subscriber ``filteredIndex`` is spliced in as bytes.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic_core import to_json

from ._filters import DELETED_EVENT, terminal_status
from ._models import TaskEvent

__all__ = [
    "HEARTBEAT",
    "WireEvent",
    "done_frame",
    "encode_count",
    "encode_frame",
    "envelope_dict",
    "resync_frame",
    "retry_frame",
]

HEARTBEAT: Final = b": ping\n\n"
_EVENT_PREFIX: Final = b"event: taskcast.event\ndata: "
_ENVELOPE_PREFIX: Final = b'event: taskcast.event\ndata: {"filteredIndex":'

_encodes = 0


def encode_count() -> int:
    """How many event JSON encodes the wire layer has performed (for tests and metrics)."""
    return _encodes


def envelope_dict(event: TaskEvent, filtered_index: int, data: Any) -> dict[str, Any]:
    """The SSE envelope (``wrap=true``) of an event."""
    out: dict[str, Any] = {
        "filteredIndex": filtered_index,
        "rawIndex": event.index,
        "eventId": event.id,
        "taskId": event.task_id,
        "type": event.type,
        "timestamp": event.timestamp,
        "level": event.level,
        "data": data,
    }
    if event.series_id is not None:
        out["seriesId"] = event.series_id
    if event.series_mode is not None:
        out["seriesMode"] = event.series_mode
    if event.series_acc_field is not None:
        out["seriesAccField"] = event.series_acc_field
    if event.series_snapshot:
        out["seriesSnapshot"] = True
    return out


# JSON of the short strings that repeat from event to event (task ids, types, levels).
_strings: dict[str, bytes] = {}
_STRINGS_MAX: Final = 4096


def _json_str(text: str) -> bytes:
    out = _strings.get(text)
    if out is None:
        out = to_json(text)
        if len(_strings) >= _STRINGS_MAX:
            _strings.clear()
        _strings[text] = out
    return out


# The envelope after ``{"filteredIndex":N`` and the frame's id line, as one format: replay
# formats every stored event it sends, and building a dict to encode (or several pieces to
# join) was most of its time. Every string goes through pydantic-core's encoder, so the
# bytes are those of ``to_json(envelope_dict(...))``.
_TAIL: Final = (
    b',"rawIndex":%d,"eventId":%b,"taskId":%b,"type":%b,"timestamp":%d,"level":%b,"data":%b'
    b"%b}\nid: %b\n\n"
)

# JSON of the series fields of an envelope, by (seriesId, seriesMode, seriesAccField,
# seriesSnapshot): a handful per task.
_series: dict[tuple[str | None, str | None, str | None, bool], bytes] = {}


def _series_json(event: TaskEvent) -> bytes:
    key = (event.series_id, event.series_mode, event.series_acc_field, bool(event.series_snapshot))
    out = _series.get(key)
    if out is None:
        out = b""
        if event.series_id is not None:
            out += b',"seriesId":' + to_json(event.series_id)
        if event.series_mode is not None:
            out += b',"seriesMode":' + to_json(event.series_mode)
        if event.series_acc_field is not None:
            out += b',"seriesAccField":' + to_json(event.series_acc_field)
        if event.series_snapshot:
            out += b',"seriesSnapshot":true'
        if len(_series) >= _STRINGS_MAX:
            _series.clear()
        _series[key] = out
    return out


def _envelope(event: TaskEvent, data: Any) -> bytes:
    """The wrapped frame after its ``filteredIndex`` (see :func:`_splice`)."""
    eid = event.id
    raw_id = eid.encode()
    # Server-made ids are ULIDs; anything else is encoded (and escaped) in full.
    id_json = b'"' + raw_id + b'"' if eid.isascii() and eid.isalnum() else to_json(eid)
    return _TAIL % (
        event.index,
        id_json,
        _json_str(event.task_id),
        _json_str(event.type),
        event.timestamp,
        _json_str(event.level),
        to_json(data),
        _series_json(event),
        raw_id,
    )


def _splice(filtered_index: int, envelope: bytes) -> bytes:
    """A subscriber's wrapped frame: its ``filteredIndex`` put before a shared envelope."""
    return _ENVELOPE_PREFIX + b"%d" % filtered_index + envelope


def _encode(event: TaskEvent, wrap: bool, accumulated: bool) -> bytes:
    """The frame of ``event``; wrapped, everything after its ``filteredIndex``."""
    global _encodes
    _encodes += 1
    data = event.accumulated if accumulated else event.data
    if wrap:
        return _envelope(event, data)
    payload = event.to_dict()
    if accumulated:
        payload["data"] = data
    return _EVENT_PREFIX + to_json(payload) + b"\nid: " + event.id.encode() + b"\n\n"


def encode_frame(event: TaskEvent, *, wrap: bool, accumulated: bool, filtered_index: int) -> bytes:
    """One subscriber's frame of ``event`` (replay); the wrapped envelope is kept."""
    acc = accumulated and event.has_accumulated
    if not wrap:
        return _encode(event, False, acc)
    if acc:
        return _splice(filtered_index, _encode(event, True, True))
    # Kept on the event: stores that hand out the same object for the same stored event
    # (the memory store; the others through their EventCache) let a history that is
    # replayed again skip the encode.
    envelope = event._wire
    if envelope is None:
        envelope = event._wire = _encode(event, True, False)
    return _splice(filtered_index, envelope)


class WireEvent:
    """A committed event plus its lazily encoded SSE frames."""

    __slots__ = ("_frames", "_last", "event", "plain")

    def __init__(self, event: TaskEvent) -> None:
        self.event = event
        self._frames: dict[tuple[bool, bool], bytes] = {}
        # The last spliced envelope: subscribers that have seen the same events share a
        # filteredIndex, and handing them the same bytes object lets a server frame it once.
        self._last: tuple[bool, int, bytes] | None = None  # (accumulated, index, envelope)
        self.plain = event.type != DELETED_EVENT and terminal_status(event) is None
        """Neither a deletion nor a terminal status: a live stream just sends it on."""

    def frame(self, *, wrap: bool, accumulated: bool, filtered_index: int) -> bytes:
        acc = accumulated and self.event.has_accumulated
        if wrap:
            last = self._last
            if last is not None and last[1] == filtered_index and last[0] is acc:
                return last[2]
        key = (wrap, acc)
        cached = self._frames.get(key)
        if cached is None:
            cached = self._frames[key] = _encode(self.event, wrap, acc)
        if wrap:
            out = _splice(filtered_index, cached)
            self._last = (acc, filtered_index, out)
            return out
        return cached


def done_frame(reason: str) -> bytes:
    return b"event: taskcast.done\ndata: " + to_json({"reason": reason}) + b"\n\n"


def resync_frame(payload: dict[str, Any]) -> bytes:
    return b"event: taskcast.resync\ndata: " + to_json(payload) + b"\n\n"


def retry_frame(ms: int) -> bytes:
    return b"retry: " + str(ms).encode() + b"\n\n"
