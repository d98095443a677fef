"""Typed records exchanged with a Taskcast server.

The wire form is camelCase JSON in which an unset optional key is absent; these frozen
dataclasses use snake_case and ``None``. ``from_dict`` ignores keys it does not know, so a
newer server never breaks an older SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ArchiveImportResult",
    "BlockedRequest",
    "EventInput",
    "Health",
    "Level",
    "PublishStreamResult",
    "SeriesMode",
    "ServerInfo",
    "Task",
    "TaskError",
    "TaskEvent",
    "TaskPage",
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

_TERMINAL = frozenset({"completed", "failed", "timeout", "cancelled"})


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskError:
    """Why a task failed (``task.error``)."""

    message: str
    code: str | None = None
    details: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.code is not None:
            out["code"] = self.code
        if self.details is not None:
            out["details"] = self.details
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskError:
        return cls(
            message=str(data.get("message", "")),
            code=data.get("code"),
            details=data.get("details"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class BlockedRequest:
    """What a ``blocked`` task waits for (``GET /tasks/{id}/request``)."""

    type: str
    data: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Task:
    """A task as the server returns it."""

    id: str
    status: TaskStatus
    created_at: int
    updated_at: int
    type: str | None = None
    params: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: TaskError | None = None
    metadata: dict[str, Any] | None = None
    completed_at: int | None = None
    ttl: int | None = None
    tags: list[str] | None = None
    assign_mode: str | None = None
    cost: int | None = None
    assigned_worker: str | None = None
    disconnect_policy: str | None = None
    reason: str | None = None
    resume_at: int | None = None
    blocked_request: BlockedRequest | None = None
    auth_config: dict[str, Any] | None = None
    webhooks: list[Any] | None = None
    """As the server shows them: ``{"url", "hasSecret", "filter"?, "wrap"?, "retry"?}`` with
    the URL's credentials and query values masked; a webhook's secret is never returned."""
    cleanup: dict[str, Any] | None = None
    hot: bool | None = None
    """Only on ``get_task``/``list_tasks``: whether the task has live subscribers here."""
    subscriber_count: int | None = None
    """Only on ``get_task``/``list_tasks``: live SSE subscribers on the answering process."""

    @property
    def is_terminal(self) -> bool:
        """Whether the task has reached completed, failed, timeout or cancelled."""
        return self.status in _TERMINAL

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        error = data.get("error")
        blocked = data.get("blockedRequest")
        return cls(
            id=data["id"],
            status=data["status"],
            created_at=data["createdAt"],
            updated_at=data["updatedAt"],
            type=data.get("type"),
            params=data.get("params"),
            result=data.get("result"),
            error=TaskError.from_dict(error) if isinstance(error, Mapping) else None,
            metadata=data.get("metadata"),
            completed_at=data.get("completedAt"),
            ttl=data.get("ttl"),
            tags=data.get("tags"),
            assign_mode=data.get("assignMode"),
            cost=data.get("cost"),
            assigned_worker=data.get("assignedWorker"),
            disconnect_policy=data.get("disconnectPolicy"),
            reason=data.get("reason"),
            resume_at=data.get("resumeAt"),
            blocked_request=(
                BlockedRequest(type=blocked["type"], data=blocked.get("data"))
                if isinstance(blocked, Mapping)
                else None
            ),
            auth_config=data.get("authConfig"),
            webhooks=data.get("webhooks"),
            cleanup=data.get("cleanup"),
            hot=data.get("hot"),
            subscriber_count=data.get("subscriberCount"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskPage:
    """One page of ``list_tasks``; pass ``next_cursor`` back as ``cursor`` for the next."""

    tasks: list[Task]
    next_cursor: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskEvent:
    """One stored event of a task's stream."""

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
    series_snapshot: bool = False
    """True on a collapsed ``accumulate`` snapshot (history with ``series_format="accumulated"``)."""
    idempotency_key: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskEvent:
        return cls(
            id=data["id"],
            task_id=data["taskId"],
            index=data["index"],
            timestamp=data["timestamp"],
            type=data["type"],
            level=data["level"],
            data=data.get("data"),
            series_id=data.get("seriesId"),
            series_mode=data.get("seriesMode"),
            series_acc_field=data.get("seriesAccField"),
            series_snapshot=bool(data.get("seriesSnapshot", False)),
            idempotency_key=data.get("idempotencyKey"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class EventInput:
    """An event to publish (see :meth:`TaskcastServerClient.publish_events`).

    Leave ``idempotency_key`` unset and the SDK generates one, so a retried request never
    stores the event twice.
    """

    type: str
    data: Any = None
    level: Level = "info"
    series_id: str | None = None
    series_mode: SeriesMode | None = None
    series_acc_field: str | None = None
    idempotency_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "level": self.level, "data": self.data}
        if self.series_id is not None:
            out["seriesId"] = self.series_id
        if self.series_mode is not None:
            out["seriesMode"] = self.series_mode
        if self.series_acc_field is not None:
            out["seriesAccField"] = self.series_acc_field
        if self.idempotency_key is not None:
            out["idempotencyKey"] = self.idempotency_key
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerInfo:
    """``GET /``: what the server is."""

    name: str
    version: str
    api_version: str
    links: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerInfo:
        return cls(
            name=data.get("name", ""),
            version=data.get("version", ""),
            api_version=data.get("apiVersion", ""),
            links=dict(data.get("links") or {}),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Health:
    """``GET /health``: liveness."""

    ok: bool
    name: str | None = None
    version: str | None = None
    api_version: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Health:
        return cls(
            ok=bool(data.get("ok")),
            name=data.get("name"),
            version=data.get("version"),
            api_version=data.get("apiVersion"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class PublishStreamResult:
    """What :meth:`TaskcastServerClient.publish_stream` sent."""

    text: str
    """The concatenation of every chunk, i.e. the series' accumulated text."""
    chunks: int
    """Non-empty chunks read from the iterator."""
    events: int
    """Events published (each carries several coalesced chunks)."""
    requests: int
    """HTTP publish calls made (retries not counted)."""
    last_event: TaskEvent | None = None
    """The last event published, or ``None`` if the iterator yielded no text."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ArchiveImportResult:
    """``POST /tasks/import``: what :meth:`TaskcastServerClient.import_task_archive` stored."""

    task_id: str
    event_count: int
    overwritten: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchiveImportResult:
        return cls(
            task_id=data["taskId"],
            event_count=int(data["eventCount"]),
            overwritten=bool(data["overwritten"]),
        )
