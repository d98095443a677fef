"""Task archives: one task and its history as a portable document (``taskcast.taskArchive`` v1).

The format is the original Taskcast's, so an archive moves between this server and the
original in both directions::

    {"schema": "taskcast.taskArchive", "version": 1, "exportedAt": <ms>,
     "task": {<Task>}, "events": [<TaskEvent>, ...]}

An export is *compacted*: each ``latest`` or ``accumulate`` series becomes one event holding
its newest state (for ``accumulate`` the merged value), placed where the series first
appeared; indexes are then renumbered contiguously from 0. Importing stores exactly those
events, so a task's replay, history and series snapshots after an import are what they were
at export, compacted.

:func:`parse_task_archive` checks everything before anything is written (the original's
rules and messages, plus this server's input limits), so a bad archive changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._errors import InvalidInputError
from ._models import LEVELS, SERIES_MODES, STATUSES, Task, TaskEvent
from ._series import accumulate
from ._validation import check_name, check_no_nul, task_id_problem
from ._webhooks import parse_webhooks

__all__ = [
    "ARCHIVE_SCHEMA",
    "ARCHIVE_VERSION",
    "ImportResult",
    "InvalidTaskArchiveError",
    "TaskArchive",
    "compact_history",
    "parse_task_archive",
]

ARCHIVE_SCHEMA: Final = "taskcast.taskArchive"
ARCHIVE_VERSION: Final = 1

# Optional task fields and the JSON type each must have (the original's clients send these
# shapes; anything else could not be served back or stored by every backend).
_OBJECT_FIELDS: Final = ("params", "result", "error", "metadata", "authConfig", "cleanup")
_STRING_FIELDS: Final = ("type", "assignMode", "assignedWorker", "disconnectPolicy", "reason")
_INT_FIELDS: Final = ("completedAt", "resumeAt", "deadlineAt")
_MAX_SAFE: Final = 2**53 - 1


class InvalidTaskArchiveError(InvalidInputError):
    """An archive breaks the format's rules (HTTP 400); nothing was stored."""


@dataclass(slots=True, frozen=True, kw_only=True)
class TaskArchive:
    """A parsed, valid archive: the task and its events (indexes 0..n-1 in order)."""

    task: Task
    events: list[TaskEvent]
    exported_at: int

    def to_dict(self) -> dict[str, Any]:
        """The wire form; webhook secrets are never included (``hasSecret`` instead)."""
        return {
            "schema": ARCHIVE_SCHEMA,
            "version": ARCHIVE_VERSION,
            "exportedAt": self.exported_at,
            "task": self.task.public_dict(),
            "events": [e.to_dict() for e in self.events],
        }


@dataclass(slots=True, frozen=True, kw_only=True)
class ImportResult:
    task_id: str
    event_count: int
    overwritten: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "taskId": self.task_id,
            "eventCount": self.event_count,
            "overwritten": self.overwritten,
        }


def compact_history(events: Iterable[TaskEvent]) -> list[TaskEvent]:
    """The archive form of a stored history (in index order; gaps allowed).

    Each ``latest``/``accumulate`` series becomes one event at its first position, carrying
    the newest event's id, timestamp and fields, with the newest state as ``data`` (merged
    for ``accumulate``); indexes are renumbered 0..n-1. Replay-only fields are dropped.
    """
    slots: list[TaskEvent | str] = []  # an event, or a series id standing for its state
    states: dict[str, TaskEvent] = {}
    for event in events:
        sid, mode = event.series_id, event.series_mode
        if sid is not None and mode in ("latest", "accumulate"):
            previous = states.get(sid)
            if previous is None:
                slots.append(sid)
            if mode == "accumulate":
                # Same-series events of another mode reset the merge, as a live publish does.
                base = previous if previous is not None and previous.series_mode == mode else None
                states[sid] = event.copy(data=accumulate(base, event))
            else:
                states[sid] = event
        else:
            slots.append(event)
    out: list[TaskEvent] = []
    for index, slot in enumerate(slots):
        event = states[slot] if isinstance(slot, str) else slot
        out.append(event.copy(index=index, series_snapshot=None))
    return out


def _fail(message: str) -> InvalidTaskArchiveError:
    return InvalidTaskArchiveError(message)


def _whole_ms(value: object, what: str) -> int:
    """A finite JSON number as whole milliseconds (the original writes ``Date.now()``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(f"{what} must be a finite number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(f"{what} must be a finite number")
        if not value.is_integer():
            raise _fail(f"{what} must be a whole number of milliseconds")
        value = int(value)
    if not -_MAX_SAFE <= value <= _MAX_SAFE:
        raise _fail(f"{what} is out of range")
    return value


def _parse_task(raw: object, max_id_chars: int, max_name_chars: int) -> Task:
    if not isinstance(raw, Mapping):
        raise _fail("Archive task must be an object")
    task_id = raw.get("id")
    if not isinstance(task_id, str) or not task_id:
        raise _fail("Archive task.id must be a string")
    problem = task_id_problem(task_id, max_id_chars)
    if problem is not None:
        raise _fail(f"Archive task.id {problem}")
    status = raw.get("status")
    if not isinstance(status, str) or status not in STATUSES:
        raise _fail("Archive task.status is invalid")
    data = dict(raw)
    data["createdAt"] = _whole_ms(raw.get("createdAt"), "Archive task.createdAt")
    data["updatedAt"] = _whole_ms(raw.get("updatedAt"), "Archive task.updatedAt")
    for key in _OBJECT_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], Mapping):
            raise _fail(f"Archive task.{key} must be an object")
    for key in _STRING_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise _fail(f"Archive task.{key} must be a string")
    for key in _INT_FIELDS:
        if data.get(key) is not None:
            data[key] = _whole_ms(data[key], f"Archive task.{key}")
    for key in ("ttl", "cost"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _fail(f"Archive task.{key} must be an integer")
        if value is not None and not 0 <= value <= _MAX_SAFE:
            raise _fail(f"Archive task.{key} is out of range")
    if data.get("blockedRequest") is not None and not isinstance(data["blockedRequest"], Mapping):
        raise _fail("Archive task.blockedRequest must be an object")
    tags = data.get("tags")
    if tags is not None:
        if not isinstance(tags, list):
            raise _fail("Archive task.tags must be a list of strings")
        for i, tag in enumerate(tags):
            check_name(f"Archive task.tags.{i}", tag, max_name_chars)
    if data.get("type") is not None:
        check_name("Archive task.type", data["type"], max_name_chars)
    webhooks = data.get("webhooks")
    if webhooks is not None:
        # An export shows ``hasSecret`` in place of each secret (secrets are write-only):
        # the imported webhook is unsigned until a secret is set again.
        if isinstance(webhooks, list):
            webhooks = [
                {k: v for k, v in hook.items() if k != "hasSecret"}
                if isinstance(hook, Mapping)
                else hook
                for hook in webhooks
            ]
        try:
            parse_webhooks(webhooks)
        except InvalidInputError as exc:
            raise _fail(f"Archive task.{exc.message}") from None
        data["webhooks"] = webhooks
    check_no_nul(data, "Archive task")
    try:
        return Task.from_dict(data)
    except TypeError as exc:  # pragma: no cover - every field's type is checked above
        raise _fail(f"Archive task is invalid: {exc}") from None


def _parse_event(raw: object, max_id_chars: int, max_name_chars: int) -> TaskEvent:
    if not isinstance(raw, Mapping):
        raise _fail("Archive event must be an object")
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise _fail("Archive event.id must be a string")
    if len(event_id) > max_id_chars:
        raise _fail(f"Archive event.id is longer than {max_id_chars} characters")
    where = f"for event {event_id}"
    if not isinstance(raw.get("taskId"), str) or not raw["taskId"]:
        raise _fail(f"Archive event.taskId must be a string {where}")
    index = raw.get("index")
    if isinstance(index, float) and index.is_integer():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise _fail(f"Archive event.index must be a non-negative integer {where}")
    timestamp = _whole_ms(raw.get("timestamp"), f"Archive event.timestamp {where}:")
    if not isinstance(raw.get("type"), str):
        raise _fail(f"Archive event.type must be a string {where}")
    if raw.get("level") not in LEVELS:
        raise _fail(f"Archive event.level is invalid {where}")
    if "data" not in raw:
        raise _fail(f"Archive event.data is required {where}")
    mode = raw.get("seriesMode")
    if mode is not None and mode not in SERIES_MODES:
        raise _fail(f"Archive event.seriesMode is invalid {where}")
    for key in ("seriesId", "seriesAccField", "idempotencyKey"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise _fail(f"Archive event.{key} must be a string {where}")
    if raw.get("seriesSnapshot") is not None:
        raise _fail(
            "Archive events cannot include presentation fields; seriesSnapshot is a "
            f"collapsed presentation field on event {event_id}"
        )
    if raw.get("_accumulatedData") is not None:
        raise _fail(
            "Archive events cannot include transient broadcast fields; _accumulatedData "
            f"is transient on event {event_id}"
        )
    check_name(f"Archive event.type {where}:", raw["type"], max_name_chars)
    if raw.get("seriesId") is not None:
        check_name(f"Archive event.seriesId {where}:", raw["seriesId"], max_name_chars)
    if raw.get("seriesAccField") is not None:
        check_name(f"Archive event.seriesAccField {where}:", raw["seriesAccField"], max_name_chars)
    if raw.get("idempotencyKey") is not None:
        check_name(f"Archive event.idempotencyKey {where}:", raw["idempotencyKey"], max_id_chars)
    check_no_nul(raw.get("data"), f"Archive event.data {where}")
    return TaskEvent(
        id=event_id,
        task_id=raw["taskId"],
        index=index,
        timestamp=timestamp,
        type=raw["type"],
        level=raw["level"],
        data=raw.get("data"),
        series_id=raw.get("seriesId"),
        series_mode=mode,
        series_acc_field=raw.get("seriesAccField"),
        idempotency_key=raw.get("idempotencyKey"),
    )


def parse_task_archive(
    raw: object,
    *,
    max_id_chars: int = 256,
    max_name_chars: int = 256,
    max_events: int | None = None,
) -> TaskArchive:
    """Validate an archive document completely and return it parsed (events in index order).

    Raises:
        InvalidTaskArchiveError: The first rule the archive breaks, worded as the original.
    """
    if not isinstance(raw, Mapping):
        raise _fail("Archive must be an object")
    if raw.get("schema") != ARCHIVE_SCHEMA:
        raise _fail(f"Unsupported archive schema: {_js(raw.get('schema'))}")
    version = raw.get("version")
    if isinstance(version, bool) or version != ARCHIVE_VERSION:
        raise _fail(f"Unsupported archive version: {_js(version)}")
    exported_at = _whole_ms(raw.get("exportedAt"), "Archive exportedAt")
    task = _parse_task(raw.get("task"), max_id_chars, max_name_chars)
    raw_events = raw.get("events")
    if not isinstance(raw_events, list):
        raise _fail("Archive events must be an array")
    if max_events is not None and len(raw_events) > max_events:
        raise _fail(f"Archive holds too many events ({len(raw_events)}, max {max_events})")
    events = sorted(
        (_parse_event(e, max_id_chars, max_name_chars) for e in raw_events),
        key=lambda e: e.index,
    )
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    for expected, event in enumerate(events):
        if event.task_id != task.id:
            raise _fail(f"Archive event taskId mismatch for event {event.id}")
        if event.id in seen_ids:
            raise _fail(f"Archive contains duplicate event id: {event.id}")
        seen_ids.add(event.id)
        if expected > 0 and events[expected - 1].index == event.index:
            raise _fail(f"Archive contains duplicate event index: {event.index}")
        if event.index != expected:
            raise _fail(
                "Archive events must have contiguous indexes from 0; "
                f"expected {expected}, got {event.index}"
            )
        key = event.idempotency_key
        if key is not None:
            if key in seen_keys:
                raise _fail(f"Archive contains duplicate idempotencyKey: {key}")
            seen_keys.add(key)
    return TaskArchive(task=task, events=events, exported_at=exported_at)


def _js(value: object) -> str:
    """``String(value)`` as JavaScript words it, for the original's messages."""
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)[:100]
