"""Response bodies of the service routes, the admin token exchange and the SSE frames, as
pydantic models that only document (``/openapi.json``); the routes write their bodies
themselves."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._schemas import EVENT_ID_EXAMPLE, TASK_ID_EXAMPLE, EventOut

__all__ = [
    "SSE_EXAMPLE",
    "AdminTokenBody",
    "AdminTokenOut",
    "DoneFrame",
    "EventEnvelope",
    "Health",
    "HealthDetail",
    "Readiness",
    "ResyncFrame",
    "ServiceInfo",
    "SseFrame",
]


def _doc(example: Any, *, extra: Literal["allow", "ignore"] = "ignore") -> ConfigDict:
    return ConfigDict(
        use_attribute_docstrings=True, extra=extra, json_schema_extra={"examples": [example]}
    )


class ServiceLinks(BaseModel):
    """Where the other service routes are (with the app's mount prefix)."""

    model_config = _doc({"health": "/health", "docs": "/docs"})
    health: str
    """Liveness."""
    healthReady: str
    """Readiness."""
    healthDetail: str
    """Adapters, dependencies and uptime."""
    openapi: str
    """This document."""
    docs: str
    """The interactive API page."""


class ServiceInfo(BaseModel):
    """``GET /``."""

    model_config = _doc(
        {
            "name": "taskcast",
            "version": "0.1.0",
            "apiVersion": "v1",
            "links": {
                "health": "/health",
                "healthReady": "/health/ready",
                "healthDetail": "/health/detail",
                "openapi": "/openapi.json",
                "docs": "/docs",
            },
        }
    )
    name: Literal["taskcast"]
    """Always `taskcast`."""
    version: str
    """The server's version."""
    apiVersion: str
    """The API's version (`v1`)."""
    links: ServiceLinks
    """The other service routes."""


class Health(BaseModel):
    """``GET /health``: the process answers (it checks no dependency)."""

    model_config = _doc({"ok": True, "name": "taskcast", "version": "0.1.0", "apiVersion": "v1"})
    ok: bool
    """Always `true`."""
    name: Literal["taskcast"]
    """Always `taskcast`."""
    version: str
    """The server's version."""
    apiVersion: str
    """The API's version (`v1`)."""


class Probe(BaseModel):
    """One dependency's probe."""

    model_config = _doc({"state": "healthy"})
    state: Literal["healthy", "unhealthy"]
    """Whether it answered within 2 s."""
    errorKind: str | None = None
    """When unhealthy: `timeout`, `unavailable`, `full`, ... (never the error's text)."""


class Readiness(BaseModel):
    """``GET /health/ready``: 200 while the short-term store and the broadcast answer, 503
    (same body) otherwise."""

    model_config = _doc(
        {
            "ok": True,
            "dependencies": {
                "shortTermStore": {"state": "healthy"},
                "broadcast": {"state": "healthy"},
            },
        }
    )
    ok: bool
    """Whether the server can serve."""
    dependencies: dict[str, Probe]
    """`shortTermStore`, `broadcast` and, when configured, `longTermStore`."""
    degraded: bool | None = None
    """Present (`true`) while the archive falls behind; serving goes on."""
    backlog: int | None = None
    """With `degraded`: writes queued for the long-term store."""


class HealthDetail(BaseModel):
    """``GET /health/detail``: what the server runs on and how it is."""

    model_config = _doc(
        {
            "ok": True,
            "name": "taskcast",
            "version": "0.1.0",
            "apiVersion": "v1",
            "uptime": 3600,
            "auth": {"mode": "jwt"},
            "adapters": {
                "broadcast": {"provider": "redis", "status": "ok"},
                "shortTermStore": {"provider": "redis", "status": "ok"},
            },
            "dependencies": {
                "shortTermStore": {"configured": True, "state": "healthy"},
                "broadcast": {"configured": True, "state": "healthy"},
            },
            "subscribers": 3,
        },
        extra="allow",
    )
    ok: bool
    """Whether every dependency answers."""
    name: Literal["taskcast"]
    """Always `taskcast`."""
    version: str
    """The server's version."""
    apiVersion: str
    """The API's version (`v1`)."""
    uptime: int
    """Seconds since the app was created."""
    auth: dict[str, str]
    """`mode`: `none`, `jwt`, `custom`, ... (never a secret)."""
    adapters: dict[str, dict[str, str]]
    """Per adapter: `provider` (`memory`, `sqlite`, `redis`, `postgres`) and `status` (`ok` or
    `error`)."""
    dependencies: dict[str, dict[str, Any]]
    """Per dependency: `configured`, `state` and, when unhealthy, `lastErrorKind`."""
    subscribers: int
    """Open SSE streams in this process."""
    archive: dict[str, Any] | None = None
    """With a long-term store: the archive writer's backlog, failing tasks and gap check."""


class AdminTokenBody(BaseModel):
    """``POST /admin/token``."""

    model_config = _doc({"adminToken": "<the admin token>", "scopes": ["*"], "expiresIn": 3600})
    adminToken: str
    """The server's admin token (`--admin-token`)."""
    scopes: list[str] = Field(default=["*"])
    """Scopes of the JWT minted."""
    expiresIn: int | None = None
    """Lifetime in seconds (at most the server's maximum, 400 beyond)."""


class AdminTokenOut(BaseModel):
    """A JWT for the API."""

    model_config = _doc(
        {"token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2ln", "expiresAt": 1700003600}
    )
    token: str
    """The JWT (empty when the server has no signing key)."""
    expiresAt: int
    """Unix time in seconds it expires."""


class EventEnvelope(BaseModel):
    """`data` of a `taskcast.event` frame (`wrap=true`, the default); with `wrap=false` it is
    the stored event (:class:`EventOut`)."""

    model_config = _doc(
        {
            "filteredIndex": 1,
            "rawIndex": 1,
            "eventId": EVENT_ID_EXAMPLE,
            "taskId": TASK_ID_EXAMPLE,
            "type": "llm.delta",
            "timestamp": 1700000000500,
            "level": "info",
            "data": {"delta": "Hel"},
            "seriesId": "answer",
            "seriesMode": "accumulate",
        }
    )
    filteredIndex: int
    """Position among the events this subscription lets through (`since.index` resumes after
    it)."""
    rawIndex: int
    """The event's `index` in the task."""
    eventId: str
    """The event's id (also the frame's `id:`)."""
    taskId: str
    """The task."""
    type: str
    """The kind of event (`taskcast:status` for status changes)."""
    timestamp: int
    """Unix time in milliseconds."""
    level: Literal["debug", "info", "warn", "error"]
    """Severity."""
    data: Any = None
    """The payload."""
    seriesId: str | None = None
    """The series, when set."""
    seriesMode: str | None = None
    """The series mode, when set."""
    seriesAccField: str | None = None
    """The accumulated field, when set."""
    seriesSnapshot: bool | None = None
    """`true` on a collapsed accumulate snapshot."""


class DoneFrame(BaseModel):
    """`data` of the `taskcast.done` frame: the stream is over (the response ends)."""

    model_config = _doc({"reason": "completed"})
    reason: str
    """The terminal status, `deleted` or `replaced` (an archive import overwrote the task)."""


class ResyncFrame(BaseModel):
    """`data` of a `taskcast.resync` frame: the resume cursor is unknown; the view restarts."""

    model_config = _doc(
        {"reason": "unknown-cursor", "cursor": EVENT_ID_EXAMPLE, "status": "running"}
    )
    reason: str
    """Why (`unknown-cursor`)."""
    cursor: str
    """The cursor that was not found."""
    status: str
    """The task's status now."""


class SseFrame(BaseModel):
    """One server-sent event of the stream (docs/api/sse.md). Also sent: a `retry:` line
    first and `: ping` comments while idle."""

    model_config = _doc(
        {
            "event": "taskcast.event",
            "id": EVENT_ID_EXAMPLE,
            "data": {
                "filteredIndex": 0,
                "rawIndex": 0,
                "eventId": EVENT_ID_EXAMPLE,
                "taskId": TASK_ID_EXAMPLE,
                "type": "taskcast:status",
                "timestamp": 1700000000000,
                "level": "info",
                "data": {"status": "running"},
            },
        }
    )
    event: Literal["taskcast.event", "taskcast.done", "taskcast.resync"]
    """The `event:` line."""
    id: str | None = None
    """The `id:` line: the event id, on `taskcast.event` frames only."""
    data: EventEnvelope | EventOut | DoneFrame | ResyncFrame
    """The `data:` line, one line of JSON, by `event`."""


SSE_EXAMPLE = (
    "retry: 3000\n\n"
    "event: taskcast.event\n"
    'data: {"filteredIndex":0,"rawIndex":0,"eventId":"01JQ8Z6...","taskId":"01JQ8Z5...",'
    '"type":"taskcast:status","timestamp":1700000000000,"level":"info",'
    '"data":{"status":"running"}}\n'
    "id: 01JQ8Z6...\n\n"
    "event: taskcast.event\n"
    'data: {"filteredIndex":1,"rawIndex":1,"eventId":"01JQ8Z7...","taskId":"01JQ8Z5...",'
    '"type":"llm.delta","timestamp":1700000000500,"level":"info","data":{"delta":"Hel"},'
    '"seriesId":"answer","seriesMode":"accumulate"}\n'
    "id: 01JQ8Z7...\n\n"
    "event: taskcast.done\n"
    'data: {"reason":"completed"}\n\n'
)
"""A stream as it is sent (the ``text/event-stream`` example)."""
