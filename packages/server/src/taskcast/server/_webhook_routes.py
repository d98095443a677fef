"""``GET /tasks/{id}/webhooks/deliveries``: a task's recent webhook deliveries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from taskcast.core import TaskNotFoundError

from ._auth import AuthContext, auth_context
from ._body import json_response
from ._common import check_task_rules, engine_of, with_errors
from ._webhooks import WebhookDispatcher

__all__ = ["router"]

router = APIRouter(tags=["webhooks"])

Ctx = Annotated[AuthContext, Depends(auth_context)]


_DELIVERY_EXAMPLE: dict[str, JsonValue] = {
    "id": "01JD6Q2B8L3M4N5P6Q7R8S9T0V",
    "taskId": "01JD6Q0V4Z3N2T7X8Y9A0B1C2D",
    "eventId": "01JD6Q1A7K2M3N4P5Q6R7S8T9V",
    "eventType": "taskcast:status",
    "url": "https://hooks.example.com/taskcast?key=***",
    "global": False,
    "status": "delivered",
    "attempts": 1,
    "maxAttempts": 4,
    "createdAt": 1700000000500,
    "lastAttemptAt": 1700000000520,
    "completedAt": 1700000000560,
    "responseStatus": 200,
}


class DeliveryOut(BaseModel):
    """One delivery; optional keys are absent when unset."""

    model_config = ConfigDict(
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [_DELIVERY_EXAMPLE]},
    )
    id: str
    """The delivery's id."""
    taskId: str
    """The task."""
    eventId: str
    """The event delivered."""
    eventType: str
    """Its type."""
    url: str = Field(
        description="Target URL, redacted: `user:password@` shown as `***@`, each query value "
        "as `***`, no fragment."
    )
    global_: bool = Field(alias="global", description="From the server configuration.")
    status: str = Field(description="`pending`, `delivered` or `failed`.")
    attempts: int
    """Attempts made so far."""
    maxAttempts: int
    """Attempts allowed (the webhook's `retry.retries` + 1)."""
    createdAt: int
    """Unix time in milliseconds it was queued."""
    nextAttemptAt: int | None = Field(default=None, description="Only while pending.")
    lastAttemptAt: int | None = None
    """Unix time in milliseconds of the last attempt."""
    completedAt: int | None = None
    """Unix time in milliseconds it was delivered or given up."""
    lastError: str | None = None
    """Why the last attempt failed (one line)."""
    responseStatus: int | None = None
    """The target's HTTP status on the last attempt."""


class DeliveryList(BaseModel):
    """A task's recent deliveries."""

    model_config = ConfigDict(
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [{"deliveries": [_DELIVERY_EXAMPLE]}]},
    )
    deliveries: list[DeliveryOut]
    """Newest first."""


def dispatcher_of(request: Request) -> WebhookDispatcher:
    dispatcher: WebhookDispatcher = request.app.state.webhooks
    return dispatcher


@router.get(
    "/tasks/{task_id}/webhooks/deliveries",
    summary="Recent webhook deliveries of a task",
    response_model=None,
    responses=with_errors(
        {200: {"model": DeliveryList, "description": "Newest first"}}, 400, 401, 403, 404, 503
    ),
)
async def list_deliveries(
    request: Request,
    task_id: str,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=500, description="Most deliveries returned.")] = 50,
) -> Response:
    ctx.require("task:manage", task_id)
    engine = engine_of(request)
    await check_task_rules(engine, ctx, task_id, "task:manage")
    if await engine.get_task(task_id) is None:
        raise TaskNotFoundError(task_id)
    items = await dispatcher_of(request).outbox.list_for_task(task_id, limit)
    out: dict[str, Any] = {"deliveries": [d.public_dict() for d in items]}
    return json_response(out)
