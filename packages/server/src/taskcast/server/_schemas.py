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


class _In(BaseModel):
    model_config = ConfigDict(strict=True, alias_generator=to_camel, extra="ignore")


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="allow")


class CleanupSpec(BaseModel):
    """Cleanup rules, stored as given."""

    model_config = ConfigDict(strict=True, extra="allow")
    rules: list[Any]


class TaskErrorBody(_In):
    code: str | None = None
    message: str
    details: dict[str, Any] | None = None


class BlockedRequest(_In):
    type: str
    data: Any = None


class CreateTaskBody(_In):
    """``POST /tasks``; every field is optional."""

    id: TaskId | None = None
    type: Name | None = None
    params: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    ttl: PositiveInt32 | None = None
    """Seconds until the task times out."""
    auth_config: dict[str, Any] | None = None
    webhooks: list[Any] | None = None
    cleanup: CleanupSpec | None = None
    tags: list[Name] | None = None
    assign_mode: Literal["external", "pull", "ws-offer", "ws-race"] | None = None
    cost: PositiveInt32 | None = None
    disconnect_policy: Literal["reassign", "mark", "fail"] | None = None


class TransitionBody(_In):
    """``PATCH /tasks/{id}/status``."""

    status: Status
    result: dict[str, Any] | None = None
    error: TaskErrorBody | None = None
    reason: str | None = None
    ttl: PositiveInt32 | None = None
    resume_after_ms: PositiveSafeInt | None = None
    blocked_request: BlockedRequest | None = None


class EventBody(_In):
    """One event to publish."""

    type: Annotated[str, Field(min_length=1, description="Up to `maxNameChars` (256) characters.")]
    level: LevelName = "info"
    data: Any = None
    series_id: Name | None = None
    series_mode: SeriesModeName | None = None
    series_acc_field: Name | None = None
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

    data: Any = None


class ErrorBody(BaseModel):
    error: str


class WebhookOut(_Out):
    """A task's webhook as readers see it: secrets are write-only."""

    url: str = Field(
        description="Redacted: `user:password@` shown as `***@`, each query value as `***`, "
        "no fragment."
    )
    has_secret: bool = Field(
        description="Whether deliveries are signed; the secret itself is never returned."
    )
    filter: dict[str, Any] | None = None
    wrap: bool | None = None
    retry: dict[str, Any] | None = None


class TaskOut(_Out):
    """A task; optional keys are absent when unset."""

    id: str
    status: Status
    created_at: int
    updated_at: int
    type: str | None = None
    params: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    completed_at: int | None = None
    ttl: int | None = None
    tags: list[str] | None = None
    reason: str | None = None
    resume_at: int | None = None
    blocked_request: dict[str, Any] | None = None
    webhooks: list[WebhookOut] | None = None
    hot: bool | None = Field(default=None, description="Only on GET: a live subscriber exists.")
    subscriber_count: int | None = Field(
        default=None, description="Only on GET: live SSE subscribers on this server process."
    )


class TaskList(_Out):
    tasks: list[TaskOut]
    next_cursor: str | None = Field(default=None, description="Present when more tasks remain.")


class EventOut(_Out):
    """A stored event."""

    id: str
    task_id: str
    index: int
    timestamp: int
    type: str
    level: LevelName
    data: Any = None
    series_id: str | None = None
    series_mode: SeriesModeName | None = None
    series_acc_field: str | None = None
    series_snapshot: bool | None = None
    idempotency_key: str | None = None


CREATE_ADAPTER = TypeAdapter(CreateTaskBody)
TRANSITION_ADAPTER = TypeAdapter(TransitionBody)
BATCH_ADAPTER: TypeAdapter[EventBody | list[EventBody]] = TypeAdapter(PublishBody)
EVENT_ADAPTER = TypeAdapter(EventBody)
RESOLVE_ADAPTER = TypeAdapter(ResolveBody)
