"""The REST routes as data: each builder returns a :class:`Call` both clients send.

Keeping request building and response parsing free of I/O lets the sync and async clients
stay thin shells over one definition of the wire format.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from ._models import (
    ArchiveImportResult,
    BlockedRequest,
    EventInput,
    Health,
    Level,
    SeriesMode,
    ServerInfo,
    Task,
    TaskError,
    TaskEvent,
    TaskPage,
)

__all__ = ["NO_BODY", "Call", "RetryConfig"]

T = TypeVar("T")

NO_BODY: Any = object()

# Connection never established: the server saw nothing, so even an unsafe call may be resent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryConfig:
    """When the SDK resends a call.

    A call is retried when its request never reached the server (connect errors), or when
    it is *safe* — a GET, or a publish whose events all carry an idempotency key — and it
    failed with a transport error or one of ``statuses``. Creating and transitioning tasks
    are not retried after the request was sent: a resend could answer 409 for a call
    that in fact succeeded.
    """

    attempts: int = 3
    """Total tries per call, including the first (1 disables retries)."""
    backoff: float = 0.2
    """Delay before the first retry, in seconds; doubled each retry, with jitter."""
    max_backoff: float = 5.0
    """Cap on a single delay, in seconds."""
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    """Response statuses that make a safe call retry."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based).

        A numeric ``Retry-After`` header on ``response`` wins, capped at ``max_backoff``.
        """
        if response is not None:
            hint = response.headers.get("retry-after", "")
            try:
                return min(self.max_backoff, max(0.0, float(hint)))
            except ValueError:
                pass
        base = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        # Equal jitter: keeps a floor while spreading clients that failed together.
        return base / 2 + random.uniform(0, base / 2)


@dataclass(frozen=True, kw_only=True, slots=True)
class Call(Generic[T]):
    """One HTTP request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] = field(default_factory=dict)
    body: Any = NO_BODY
    safe: bool = False

    def retryable_error(self, exc: Exception) -> bool:
        return isinstance(exc, _NOT_SENT) or (self.safe and isinstance(exc, httpx.TransportError))

    def retryable_status(self, status: int, retry: RetryConfig) -> bool:
        return self.safe and status in retry.statuses


def _task_path(task_id: str, suffix: str = "") -> str:
    return f"/tasks/{quote(task_id, safe='')}{suffix}"


def _set(out: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


def _parse_task(response: httpx.Response) -> Task:
    return Task.from_dict(response.json())


def _parse_none(response: httpx.Response) -> None:
    return None


def _new_key() -> str:
    return uuid.uuid4().hex


# -- tasks ---------------------------------------------------------------------------------


def create_task(
    *,
    id: str | None,
    type: str | None,
    params: Mapping[str, Any] | None,
    result: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    ttl: int | None,
    tags: Sequence[str] | None,
    extra: Mapping[str, Any] | None,
) -> Call[Task]:
    body: dict[str, Any] = dict(extra or {})
    _set(body, "id", id)
    _set(body, "type", type)
    _set(body, "params", None if params is None else dict(params))
    _set(body, "result", None if result is None else dict(result))
    _set(body, "metadata", None if metadata is None else dict(metadata))
    _set(body, "ttl", ttl)
    _set(body, "tags", None if tags is None else list(tags))
    return Call(method="POST", path="/tasks", body=body, parse=_parse_task)


def get_task(task_id: str) -> Call[Task]:
    return Call(method="GET", path=_task_path(task_id), parse=_parse_task, safe=True)


def _parse_page(response: httpx.Response) -> TaskPage:
    data = response.json()
    return TaskPage(
        tasks=[Task.from_dict(item) for item in data.get("tasks", [])],
        next_cursor=data.get("nextCursor"),
    )


def _csv(value: str | Iterable[str] | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return ",".join(value)


def list_tasks(
    *,
    status: str | Iterable[str] | None,
    type: str | None,
    limit: int | None,
    cursor: str | None,
) -> Call[TaskPage]:
    params: dict[str, Any] = {}
    _set(params, "status", _csv(status))
    _set(params, "type", type)
    _set(params, "limit", None if limit is None else str(limit))
    _set(params, "cursor", cursor)
    return Call(method="GET", path="/tasks", params=params, parse=_parse_page, safe=True)


def delete_task(task_id: str) -> Call[None]:
    # Deleting twice answers 404 the second time, so a resend is not safe.
    return Call(method="DELETE", path=_task_path(task_id), parse=_parse_none)


def transition_task(
    task_id: str,
    status: str,
    *,
    result: Mapping[str, Any] | None,
    error: TaskError | Mapping[str, Any] | str | None,
    reason: str | None,
    ttl: int | None,
    resume_after_ms: int | None,
    blocked_request: BlockedRequest | Mapping[str, Any] | None,
) -> Call[Task]:
    body: dict[str, Any] = {"status": status}
    _set(body, "result", None if result is None else dict(result))
    if isinstance(error, TaskError):
        body["error"] = error.to_dict()
    elif isinstance(error, str):
        body["error"] = {"message": error}
    elif error is not None:
        body["error"] = dict(error)
    _set(body, "reason", reason)
    _set(body, "ttl", ttl)
    _set(body, "resumeAfterMs", resume_after_ms)
    if isinstance(blocked_request, BlockedRequest):
        body["blockedRequest"] = {"type": blocked_request.type, "data": blocked_request.data}
    elif blocked_request is not None:
        body["blockedRequest"] = dict(blocked_request)
    return Call(method="PATCH", path=_task_path(task_id, "/status"), body=body, parse=_parse_task)


def resolve(task_id: str, data: Any) -> Call[Task]:
    return Call(
        method="POST", path=_task_path(task_id, "/resolve"), body={"data": data}, parse=_parse_task
    )


def _parse_request(response: httpx.Response) -> BlockedRequest:
    data = response.json()
    return BlockedRequest(type=data["type"], data=data.get("data"))


def get_request(task_id: str) -> Call[BlockedRequest]:
    return Call(method="GET", path=_task_path(task_id, "/request"), parse=_parse_request, safe=True)


# -- archives ------------------------------------------------------------------------------


def _parse_json_object(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    return data


def export_task_archive(task_id: str) -> Call[dict[str, Any]]:
    return Call(
        method="GET", path=_task_path(task_id, "/archive"), parse=_parse_json_object, safe=True
    )


def _parse_import(response: httpx.Response) -> ArchiveImportResult:
    return ArchiveImportResult.from_dict(response.json())


def import_task_archive(
    archive: Mapping[str, Any], *, overwrite: bool
) -> Call[ArchiveImportResult]:
    # Not resent once sent: a repeat of an import that succeeded answers 409.
    body: dict[str, Any] = {"archive": archive}
    if overwrite:
        body["overwrite"] = True
    return Call(method="POST", path="/tasks/import", body=body, parse=_parse_import)


# -- events --------------------------------------------------------------------------------


def event_input(
    type: str,
    data: Any,
    *,
    level: Level,
    series_id: str | None,
    series_mode: SeriesMode | None,
    series_acc_field: str | None,
    idempotency_key: str | None,
) -> EventInput:
    return EventInput(
        type=type,
        data=data,
        level=level,
        series_id=series_id,
        series_mode=series_mode,
        series_acc_field=series_acc_field,
        idempotency_key=idempotency_key,
    )


def _event_body(item: EventInput | Mapping[str, Any]) -> dict[str, Any]:
    body = item.to_dict() if isinstance(item, EventInput) else dict(item)
    body.setdefault("level", "info")
    if not body.get("idempotencyKey"):
        body["idempotencyKey"] = _new_key()
    return body


def _parse_event(response: httpx.Response) -> TaskEvent:
    return TaskEvent.from_dict(response.json())


def _parse_events(response: httpx.Response) -> list[TaskEvent]:
    return [TaskEvent.from_dict(item) for item in response.json()]


def publish_event(task_id: str, item: EventInput | Mapping[str, Any]) -> Call[TaskEvent]:
    # Every published event carries an idempotency key, which makes the POST safe to resend.
    return Call(
        method="POST",
        path=_task_path(task_id, "/events"),
        body=_event_body(item),
        parse=_parse_event,
        safe=True,
    )


def publish_events(
    task_id: str, items: Iterable[EventInput | Mapping[str, Any]], max_batch: int
) -> list[Call[list[TaskEvent]]]:
    """One call per ``max_batch`` events (the server rejects bigger batches)."""
    bodies = [_event_body(item) for item in items]
    return [
        Call(
            method="POST",
            path=_task_path(task_id, "/events"),
            body=bodies[start : start + max_batch],
            parse=_parse_events,
            safe=True,
        )
        for start in range(0, len(bodies), max_batch)
    ]


def get_history(
    task_id: str,
    *,
    since_id: str | None,
    since_index: int | None,
    since_timestamp: int | None,
    limit: int | None,
    series_format: str | None,
    types: str | Iterable[str] | None,
    levels: str | Iterable[str] | None,
) -> Call[list[TaskEvent]]:
    params: dict[str, Any] = {}
    _set(params, "since.id", since_id)
    _set(params, "since.index", None if since_index is None else str(since_index))
    _set(params, "since.timestamp", None if since_timestamp is None else str(since_timestamp))
    _set(params, "limit", None if limit is None else str(limit))
    _set(params, "seriesFormat", series_format)
    _set(params, "types", _csv(types))
    _set(params, "levels", _csv(levels))
    return Call(
        method="GET",
        path=_task_path(task_id, "/events/history"),
        params=params,
        parse=_parse_events,
        safe=True,
    )


# -- server --------------------------------------------------------------------------------


def health() -> Call[Health]:
    return Call(method="GET", path="/health", parse=lambda r: Health.from_dict(r.json()), safe=True)


def server_info() -> Call[ServerInfo]:
    return Call(method="GET", path="/", parse=lambda r: ServerInfo.from_dict(r.json()), safe=True)
