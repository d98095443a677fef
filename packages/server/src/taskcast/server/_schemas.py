"""Request and response bodies, as pydantic models (they also feed ``/openapi.json``).

Request models are strict (``"5"`` is not a number, ``1`` is not ``true``) and ignore
unknown keys, as the original does. Response models only document: routes encode the
core dataclasses' own wire form, in which unset optional keys are absent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter
from pydantic.alias_generators import to_camel

from taskcast.core import Level, SeriesMode, TaskStatus

__all__ = [
    "BATCH_ADAPTER",
    "CREATE_ADAPTER",
    "EVENT_ADAPTER",
    "RESOLVE_ADAPTER",
    "TRANSITION_ADAPTER",
    "BlockedRequest",
    "CleanupSpec",
    "CreateTaskBody",
    "ErrorBody",
    "EventBody",
    "EventOut",
    "PublishBody",
    "ResolveBody",
    "TaskErrorBody",
    "TaskList",
    "TaskOut",
    "TransitionBody",
    "WebhookOut",
]

# The wire vocabularies are core's (one definition for the engine and the OpenAPI schema).
Status = TaskStatus
LevelName = Level
SeriesModeName = SeriesMode
# Integers are bounded so every backend can store them (PostgreSQL INTEGER / BIGINT columns)
# and JavaScript clients can read them exactly.
MAX_INT32 = 2**31 - 1
MAX_SAFE = 2**53 - 1
PositiveInt32 = Annotated[int, Field(gt=0, le=MAX_INT32)]
PositiveSafeInt = Annotated[int, Field(gt=0, le=MAX_SAFE)]
# The engine checks ids and names (taskcast.core._validation), with its configurable limits
# (EngineLimits, 256 characters by default): one rule for HTTP and in-process callers.
TaskId = Annotated[
    str,
    Field(
        min_length=1,
        description="Up to `maxIdChars` (256) characters; no control characters, no `/`, "
        "not `.` or `..`.",
    ),
]
Name = Annotated[str, Field(description="Up to `maxNameChars` (256) characters.")]


TASK_ID_EXAMPLE = "01JD6Q0V4Z3N2T7X8Y9A0B1C2D"
EVENT_ID_EXAMPLE = "01JD6Q1A7K2M3N4P5Q6R7S8T9V"


def _example(value: Any) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [value]})


class _In(BaseModel):
    # Field docstrings are the schema's descriptions (``/openapi.json``).
    model_config = ConfigDict(
        strict=True, alias_generator=to_camel, extra="ignore", use_attribute_docstrings=True
    )


class _Out(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, extra="allow", use_attribute_docstrings=True
    )


class CleanupSpec(BaseModel):
    """Cleanup rules, stored as given."""

    model_config = ConfigDict(
        strict=True,
        extra="allow",
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [{"rules": [{"match": {"status": ["completed"]}}]}]},
    )
    rules: list[Any]
    """Rules applied when the task ends (see docs/guide/configuration.md, Cleanup rules)."""


class TaskErrorBody(_In):
    """Why a task failed."""

    model_config = _example({"code": "E_MODEL", "message": "model overloaded"})
    code: str | None = None
    """A machine-readable error code."""
    message: str
    """What went wrong, for people."""
    details: dict[str, Any] | None = None
    """Anything else worth keeping about the failure."""


class BlockedRequest(_In):
    """What a blocked task waits for (answered with ``POST /tasks/{id}/resolve``)."""

    model_config = _example({"type": "approval", "data": {"question": "Send the email?"}})
    type: str
    """What kind of answer is needed."""
    data: Any = None
    """What the answerer needs to know."""


class CreateTaskBody(_In):
    """``POST /tasks``; every field is optional."""

    model_config = _example(
        {"type": "llm.chat", "params": {"prompt": "Hello"}, "ttl": 600, "tags": ["demo"]}
    )
    id: TaskId | None = None
    """The task's id; a new ULID when absent (409 if the id exists)."""
    type: Name | None = None
    """The kind of task (free text; filters match it with patterns such as `llm.*`)."""
    params: dict[str, Any] | None = None
    """The task's input, stored as given."""
    result: dict[str, Any] | None = None
    """An initial result, stored as given."""
    metadata: dict[str, Any] | None = None
    """Anything the caller wants kept with the task."""
    ttl: PositiveInt32 | None = None
    """Seconds until the task times out."""
    auth_config: dict[str, Any] | None = None
    """Per-task access rules (`rules`: who may read, publish, manage it); see
    docs/api/authentication.md."""
    webhooks: list[Any] | None = None
    """Webhooks called on this task's events (`url`, `secret`, `filter`, `wrap`, `retry`);
    secrets are write-only."""
    cleanup: CleanupSpec | None = None
    """What to delete once the task ends."""
    tags: list[Name] | None = None
    """Labels to filter tasks by."""
    assign_mode: Literal["external", "pull", "ws-offer", "ws-race"] | None = None
    """How workers get the task (stored for the original's clients)."""
    cost: PositiveInt32 | None = None
    """Worker capacity the task takes (stored for the original's clients)."""
    disconnect_policy: Literal["reassign", "mark", "fail"] | None = None
    """What happens when the worker disconnects (stored for the original's clients)."""


class TransitionBody(_In):
    """``PATCH /tasks/{id}/status``."""

    model_config = _example({"status": "completed", "result": {"answer": "Hello!"}})
    status: Status
    """The status to move to (the allowed moves are in docs/api/rest.md)."""
    result: dict[str, Any] | None = None
    """The task's result (on `completed`)."""
    error: TaskErrorBody | None = None
    """Why it failed (on `failed`)."""
    reason: str | None = None
    """Why it moved (e.g. why it was paused or cancelled)."""
    ttl: PositiveInt32 | None = None
    """A new time-out, in seconds from now."""
    resume_after_ms: PositiveSafeInt | None = None
    """On `paused`: resume (back to `running`) after this many milliseconds."""
    blocked_request: BlockedRequest | None = None
    """On `blocked`: what the task waits for."""


class EventBody(_In):
    """One event to publish."""

    model_config = _example(
        {
            "type": "llm.delta",
            "data": {"delta": "Hel"},
            "seriesId": "answer",
            "seriesMode": "accumulate",
        }
    )
    type: Annotated[str, Field(min_length=1, description="Up to `maxNameChars` (256) characters.")]
    level: LevelName = "info"
    """Severity: `debug`, `info`, `warn` or `error`."""
    data: Any = None
    """The payload, any JSON value (at most `max_data_bytes`, 256 KiB by default)."""
    series_id: Name | None = None
    """Groups events into a series (a streamed text, a progress bar)."""
    series_mode: SeriesModeName | None = None
    """`keep-all`, `accumulate` (deltas concatenated on `seriesAccField`) or `latest` (only the
    last one matters)."""
    series_acc_field: Name | None = None
    """The string field `accumulate` concatenates (default `delta`)."""
    idempotency_key: (
        Annotated[str, Field(min_length=1, description="Up to `maxIdChars` (256) characters.")]
        | None
    ) = None
    """Within a task, a repeated key returns the first event and stores nothing."""


def _shape(value: Any) -> str:
    return "array" if isinstance(value, list) else "object"


PublishBody = Annotated[
    Annotated[EventBody, Tag("object")] | Annotated[list[EventBody], Tag("array")],
    Discriminator(_shape),
]


class ResolveBody(_In):
    """``POST /tasks/{id}/resolve``."""

    model_config = _example({"data": {"approved": True}})
    data: Any = None
    """The answer to the task's blocked request."""


class ErrorBody(BaseModel):
    """Every error answer."""

    model_config = ConfigDict(
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [{"error": "Task not found"}]},
    )
    error: str
    """What went wrong, in one line."""


class WebhookOut(_Out):
    """A task's webhook as readers see it: secrets are write-only."""

    model_config = _example(
        {"url": "https://hooks.example.com/taskcast?key=***", "hasSecret": True}
    )
    url: str = Field(
        description="Redacted: `user:password@` shown as `***@`, each query value as `***`, "
        "no fragment."
    )
    has_secret: bool = Field(
        description="Whether deliveries are signed; the secret itself is never returned."
    )
    filter: dict[str, Any] | None = None
    """Which events are delivered (`types`, `levels`, `includeStatus`)."""
    wrap: bool | None = None
    """Whether deliveries carry the envelope (as SSE) instead of the bare event."""
    retry: dict[str, Any] | None = None
    """Retry policy (`retries`, `backoff`, `initialDelayMs`, `maxDelayMs`, `timeoutMs`)."""


_TASK_EXAMPLE = {
    "id": TASK_ID_EXAMPLE,
    "status": "running",
    "createdAt": 1700000000000,
    "updatedAt": 1700000000120,
    "type": "llm.chat",
    "params": {"prompt": "Hello"},
    "ttl": 600,
    "tags": ["demo"],
}


class TaskOut(_Out):
    """A task; optional keys are absent when unset."""

    model_config = _example({**_TASK_EXAMPLE, "hot": True, "subscriberCount": 1})
    id: str
    """The task's id."""
    status: Status
    """Where the task is in its life."""
    created_at: int
    """Unix time in milliseconds."""
    updated_at: int
    """Unix time in milliseconds of the last change."""
    type: str | None = None
    """The kind of task."""
    params: dict[str, Any] | None = None
    """The task's input."""
    result: dict[str, Any] | None = None
    """The task's result."""
    error: dict[str, Any] | None = None
    """Why it failed (`code`, `message`, `details`)."""
    metadata: dict[str, Any] | None = None
    """What the creator kept with the task."""
    completed_at: int | None = None
    """Unix time in milliseconds it reached a terminal status."""
    ttl: int | None = None
    """Seconds from its start until it times out."""
    tags: list[str] | None = None
    """Its labels."""
    reason: str | None = None
    """Why it last changed status, when given."""
    resume_at: int | None = None
    """A paused task's scheduled resume, Unix time in milliseconds."""
    blocked_request: dict[str, Any] | None = None
    """What a blocked task waits for."""
    webhooks: list[WebhookOut] | None = None
    """Its webhooks, secrets withheld."""
    hot: bool | None = Field(default=None, description="Only on GET: a live subscriber exists.")
    subscriber_count: int | None = Field(
        default=None, description="Only on GET: live SSE subscribers on this server process."
    )


class TaskList(_Out):
    """A page of tasks, oldest first."""

    model_config = _example({"tasks": [_TASK_EXAMPLE]})
    tasks: list[TaskOut]
    """The tasks of this page."""
    next_cursor: str | None = Field(default=None, description="Present when more tasks remain.")


class EventOut(_Out):
    """A stored event."""

    model_config = _example(
        {
            "id": EVENT_ID_EXAMPLE,
            "taskId": TASK_ID_EXAMPLE,
            "index": 1,
            "timestamp": 1700000000500,
            "type": "llm.delta",
            "level": "info",
            "data": {"delta": "Hel"},
            "seriesId": "answer",
            "seriesMode": "accumulate",
        }
    )
    id: str
    """The event's id (a ULID; an SSE `Last-Event-ID`)."""
    task_id: str
    """The task it belongs to."""
    index: int
    """Its position in the task, from 0, contiguous."""
    timestamp: int
    """Unix time in milliseconds it was committed."""
    type: str
    """The kind of event (`taskcast:status` for status changes)."""
    level: LevelName
    """Severity."""
    data: Any = None
    """The payload, as published."""
    series_id: str | None = None
    """The series it belongs to."""
    series_mode: SeriesModeName | None = None
    """How the series combines its events."""
    series_acc_field: str | None = None
    """The field an `accumulate` series concatenates."""
    series_snapshot: bool | None = None
    """`true` on a collapsed `accumulate` snapshot."""
    idempotency_key: str | None = None
    """The key it was published with."""


CREATE_ADAPTER = TypeAdapter(CreateTaskBody)
TRANSITION_ADAPTER = TypeAdapter(TransitionBody)
BATCH_ADAPTER: TypeAdapter[EventBody | list[EventBody]] = TypeAdapter(PublishBody)
EVENT_ADAPTER = TypeAdapter(EventBody)
RESOLVE_ADAPTER = TypeAdapter(ResolveBody)
