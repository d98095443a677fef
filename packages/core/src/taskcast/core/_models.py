"""Tasks, events and the query objects the engine and stores exchange.

Wire form is camelCase JSON in which an unset optional key is absent, never ``null``
(the original's clients rely on that). ``to_dict`` produces the wire form, ``from_dict``
reads it back; stores use the same form to persist records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, Literal, get_args

from ._redact import public_webhook

__all__ = [
    "LEVELS",
    "SERIES_MODES",
    "STATUSES",
    "TERMINAL_STATUSES",
    "CommitResult",
    "EventDraft",
    "EventQuery",
    "Level",
    "SeriesMode",
    "Task",
    "TaskEvent",
    "TaskPage",
    "TaskQuery",
    "TaskStatus",
]

TaskStatus = Literal[
    "pending",
    "assigned",
    "running",
    "paused",
    "blocked",
    "completed",
    "failed",
    "timeout",
    "cancelled",
]
Level = Literal["debug", "info", "warn", "error"]
SeriesMode = Literal["keep-all", "accumulate", "latest"]

STATUSES: Final[tuple[str, ...]] = get_args(TaskStatus)
TERMINAL_STATUSES: Final[frozenset[str]] = frozenset(
    {"completed", "failed", "timeout", "cancelled"}
)
LEVELS: Final[tuple[str, ...]] = get_args(Level)
SERIES_MODES: Final[tuple[str, ...]] = get_args(SeriesMode)

_MISSING: Any = object()
_new_object = object.__new__


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(slots=True, kw_only=True)
class Task:
    """A unit of tracked work with a lifecycle (see :mod:`taskcast.core` state machine)."""

    id: str
    status: TaskStatus = "pending"
    created_at: int
    updated_at: int
    type: str | None = None
    params: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    completed_at: int | None = None
    ttl: int | None = None
    auth_config: dict[str, Any] | None = None
    webhooks: list[Any] | None = None
    cleanup: dict[str, Any] | None = None
    tags: list[str] | None = None
    assign_mode: str | None = None
    cost: int | None = None
    assigned_worker: str | None = None
    disconnect_policy: str | None = None
    reason: str | None = None
    resume_at: int | None = None
    blocked_request: dict[str, Any] | None = None
    deadline_at: int | None = None
    """When ``ttl`` runs out (ms); cleared while paused and once finished."""

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, key in _TASK_KEYS:
            value = getattr(self, name)
            if value is not None:
                out[key] = value
        return out

    def public_dict(self) -> dict[str, Any]:
        """The wire form a reader is shown: :meth:`to_dict` with each webhook's ``secret``
        replaced by ``hasSecret`` and its URL redacted (:func:`taskcast.core.redact_url`).

        Every route answering a task uses this; :meth:`to_dict` (the storage form) keeps the
        secrets that deliveries are signed with.
        """
        out = self.to_dict()
        if self.webhooks is not None:
            out["webhooks"] = [public_webhook(hook) for hook in self.webhooks]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        kwargs = {name: data[key] for name, key in _TASK_KEYS if data.get(key) is not None}
        return cls(**kwargs)

    def copy(self, **changes: Any) -> Task:
        return replace(self, **changes)


_TASK_KEYS: Final = tuple((f.name, _camel(f.name)) for f in fields(Task))


@dataclass(slots=True, kw_only=True)
class TaskEvent:
    """One immutable entry in a task's ordered stream."""

    id: str
    task_id: str
    index: int
    timestamp: int
    type: str
    level: Level
    data: Any = None
    series_id: str | None = None
    series_mode: SeriesMode | None = None
    series_acc_field: str | None = None
    series_snapshot: bool | None = None
    idempotency_key: str | None = None
    # Transient, in one process: the series' accumulated ``data`` after this delta, set on a
    # live event by the first stream in seriesFormat=accumulated that merges it, so the
    # others reuse it (and its encoded frame). Never stored, broadcast or compared.
    accumulated: Any = field(default=_MISSING, compare=False)
    # The encoded SSE envelope without filteredIndex (``_wire.encode_frame`` fills it):
    # an event that is replayed again is not encoded again. Never set it elsewhere.
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def has_accumulated(self) -> bool:
        return self.accumulated is not _MISSING

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "taskId": self.task_id,
            "index": self.index,
            "timestamp": self.timestamp,
            "type": self.type,
            "level": self.level,
            "data": self.data,
        }
        if self.series_id is not None:
            out["seriesId"] = self.series_id
        if self.series_mode is not None:
            out["seriesMode"] = self.series_mode
        if self.series_acc_field is not None:
            out["seriesAccField"] = self.series_acc_field
        if self.series_snapshot:
            out["seriesSnapshot"] = True
        if self.idempotency_key is not None:
            out["idempotencyKey"] = self.idempotency_key
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskEvent:
        # Replay from SQLite and Redis builds one event per stored row: filling the slots of
        # a bare instance takes half the time of the generated keyword __init__.
        event = _new_object(cls)
        event.id = data["id"]
        event.task_id = data["taskId"]
        event.index = data["index"]
        event.timestamp = data["timestamp"]
        event.type = data["type"]
        event.level = data["level"]
        get = data.get
        event.data = get("data")
        event.series_id = get("seriesId")
        event.series_mode = get("seriesMode")
        event.series_acc_field = get("seriesAccField")
        event.series_snapshot = get("seriesSnapshot") or None
        event.idempotency_key = get("idempotencyKey")
        event.accumulated = _MISSING
        event._wire = None
        return event

    def copy(self, **changes: Any) -> TaskEvent:
        # dataclasses.replace was half of the replay CPU (stores and the collapser copy every
        # event); calling the constructor directly gives the same object much faster.
        values: dict[str, Any] = {
            "id": self.id,
            "task_id": self.task_id,
            "index": self.index,
            "timestamp": self.timestamp,
            "type": self.type,
            "level": self.level,
            "data": self.data,
            "series_id": self.series_id,
            "series_mode": self.series_mode,
            "series_acc_field": self.series_acc_field,
            "series_snapshot": self.series_snapshot,
            "idempotency_key": self.idempotency_key,
            "accumulated": self.accumulated,
        }
        if changes:
            values.update(changes)
        return TaskEvent(**values)


@dataclass(slots=True, frozen=True, kw_only=True)
class EventDraft:
    """An event as the engine hands it to a store: everything but the index."""

    id: str
    timestamp: int
    type: str
    level: Level
    data: Any = None
    series_id: str | None = None
    series_mode: SeriesMode | None = None
    series_acc_field: str | None = None
    idempotency_key: str | None = None

    def at(self, task_id: str, index: int) -> TaskEvent:
        return TaskEvent(
            id=self.id,
            task_id=task_id,
            index=index,
            timestamp=self.timestamp,
            type=self.type,
            level=self.level,
            data=self.data,
            series_id=self.series_id,
            series_mode=self.series_mode,
            series_acc_field=self.series_acc_field,
            idempotency_key=self.idempotency_key,
        )


@dataclass(slots=True, frozen=True, kw_only=True)
class CommitResult:
    """What a store's atomic commit produced.

    ``events`` answers the drafts one to one (an idempotent repeat answers with the event
    stored the first time); ``fresh`` are the events actually stored by this commit, in
    index order, which are the ones to broadcast.
    """

    events: list[TaskEvent]
    fresh: list[TaskEvent]


@dataclass(slots=True, frozen=True, kw_only=True)
class EventQuery:
    """Which stored events to read, always in index order.

    ``after_index``/``after_timestamp`` are exclusive lower bounds; ``limit`` keeps the first
    N matches.
    """

    after_index: int | None = None
    after_timestamp: int | None = None
    limit: int | None = None


@dataclass(slots=True, frozen=True, kw_only=True)
class TaskQuery:
    """Filters for listing tasks, ordered by creation time then id."""

    statuses: tuple[str, ...] | None = None
    types: tuple[str, ...] | None = None
    task_ids: frozenset[str] | None = None
    limit: int | None = None
    after: tuple[int, str] | None = None


@dataclass(slots=True, frozen=True, kw_only=True)
class TaskPage:
    tasks: list[Task]
    next_after: tuple[int, str] | None = None
