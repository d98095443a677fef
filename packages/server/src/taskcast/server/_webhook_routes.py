"""``GET /tasks/{id}/webhooks/deliveries``: a task's recent webhook deliveries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from taskcast.core import TaskNotFoundError

from ._auth import AuthContext, auth_context
from ._body import json_response
from ._common import check_task_rules, engine_of, with_errors
from ._webhooks import WebhookDispatcher

__all__ = ["router"]

router = APIRouter(tags=["webhooks"])

Ctx = Annotated[AuthContext, Depends(auth_context)]


class DeliveryOut(BaseModel):
    """One delivery; optional keys are absent when unset."""

    id: str
    taskId: str
    eventId: str
    eventType: str
    url: str = Field(
        description="Target URL, redacted: `user:password@` shown as `***@`, each query value "
        "as `***`, no fragment."
    )
    global_: bool = Field(alias="global", description="From the server configuration.")
    status: str = Field(description="`pending`, `delivered` or `failed`.")
    attempts: int
    maxAttempts: int
    createdAt: int
    nextAttemptAt: int | None = Field(default=None, description="Only while pending.")
    lastAttemptAt: int | None = None
    completedAt: int | None = None
    lastError: str | None = None
    responseStatus: int | None = None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]


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
