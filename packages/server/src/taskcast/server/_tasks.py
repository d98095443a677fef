"""Task routes: create, list, read, delete, transition, and the blocked-request pair."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from taskcast.core import (
    MAX_CHARS_CAP,
    STATUSES,
    TaskInput,
    TaskNotFoundError,
    TaskQuery,
    parse_webhooks,
    task_id_problem,
)

from ._auth import (
    AuthContext,
    auth_context,
    check_task_auth_config,
    require_webhook_scope,
    task_allowed,
    validate_auth_config,
)
from ._body import json_response, read_json, validate
from ._common import (
    check_task_rules,
    config_of,
    engine_of,
    find_task,
    query_list,
    request_body,
    task_view,
    with_errors,
)
from ._errors import ApiError
from ._schemas import (
    CREATE_ADAPTER,
    MAX_SAFE,
    RESOLVE_ADAPTER,
    TRANSITION_ADAPTER,
    BlockedRequest,
    TaskList,
    TaskOut,
)

__all__ = ["router"]

router = APIRouter(tags=["tasks"])

Ctx = Annotated[AuthContext, Depends(auth_context)]
_REF = "#/components/schemas/"


def encode_cursor(after: tuple[int, str]) -> str:
    raw = f"{after[0]}:{after[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, task_id = raw.partition(":")
        if (
            not created.isdigit()
            or int(created) > MAX_SAFE
            or task_id_problem(task_id, MAX_CHARS_CAP) is not None
        ):
            raise ValueError(cursor)
        return int(created), task_id
    except (ValueError, binascii.Error):
        raise ApiError(400, "Invalid cursor") from None


@router.post(
    "/tasks",
    status_code=201,
    summary="Create a task",
    response_model=None,
    responses=with_errors(
        {201: {"model": TaskOut, "description": "The created task"}}, 400, 401, 403, 409, 413, 503
    ),
    openapi_extra=request_body({"$ref": _REF + "CreateTaskBody"}, required=False),
)
async def create_task(request: Request, ctx: Ctx) -> Response:
    ctx.require("task:create")
    raw = await read_json(request, config_of(request).max_body_bytes, empty=None)
    body = validate(CREATE_ADAPTER, {} if raw is None else raw)
    require_webhook_scope(ctx, body)
    parse_webhooks(body.webhooks)  # malformed webhooks (bad URL, filter, retry) → 400
    if body.auth_config is not None:
        validate_auth_config(body.auth_config)
    cleanup = None if body.cleanup is None else body.cleanup.model_dump()
    task = await engine_of(request).create_task(
        TaskInput(
            id=body.id,
            type=body.type,
            params=body.params,
            result=body.result,
            metadata=body.metadata,
            ttl=body.ttl,
            auth_config=body.auth_config,
            webhooks=body.webhooks,
            cleanup=cleanup,
            tags=body.tags,
            assign_mode=body.assign_mode,
            cost=body.cost,
            disconnect_policy=body.disconnect_policy,
        )
    )
    return json_response(task.public_dict(), 201)


@router.get(
    "/tasks",
    summary="List tasks",
    response_model=None,
    responses=with_errors(
        {200: {"model": TaskList, "description": "Tasks, oldest first"}}, 400, 401, 403, 503
    ),
)
async def list_tasks(
    request: Request,
    ctx: Ctx,
    status: Annotated[str | None, Query(description="Comma-separated statuses to include.")] = None,
    type: Annotated[
        str | None,
        Query(description="Comma-separated type patterns (`llm.*`, `*` or exact types)."),
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            description="Page size: at most the server's `max_page_size` (1000 by default); "
            "without it, `default_page_size` (100).",
        ),
    ] = None,
    cursor: Annotated[str | None, Query(description="`nextCursor` of the previous page.")] = None,
) -> Response:
    ctx.require("event:subscribe")
    statuses = query_list(request, "status", status) or None
    if statuses is not None:
        for item in statuses:
            if item not in STATUSES:
                raise ApiError(400, f"Invalid status: {item}")
    config = config_of(request)
    if limit is None:
        limit = config.default_page_size
    elif limit > config.max_page_size:
        raise ApiError(400, f"limit must be at most {config.max_page_size}")
    engine = engine_of(request)
    page = await engine.list_tasks(
        TaskQuery(
            statuses=statuses,
            types=query_list(request, "type", type) or None,
            task_ids=ctx.task_ids,
            limit=limit,
            after=None if cursor is None else decode_cursor(cursor),
        )
    )
    # The task routes' own rules (authConfig) leave tasks out after the store has paged, so
    # a page may come short, even empty; the cursor still follows the store's page.
    shown = [t for t in page.tasks if task_allowed(ctx, t, "event:subscribe")]
    out: dict[str, Any] = {"tasks": [task_view(engine, t) for t in shown]}
    if page.next_after is not None:
        out["nextCursor"] = encode_cursor(page.next_after)
    return json_response(out)


@router.get(
    "/tasks/{task_id}",
    summary="Get a task",
    response_model=None,
    responses=with_errors({200: {"model": TaskOut, "description": "The task"}}, 401, 403, 404, 503),
)
async def get_task(request: Request, task_id: str, ctx: Ctx) -> Response:
    ctx.require("event:subscribe", task_id)
    engine = engine_of(request)
    task = await find_task(engine, task_id)
    check_task_auth_config(ctx, task, "event:subscribe")
    return json_response(task_view(engine, task))


@router.delete(
    "/tasks/{task_id}",
    status_code=204,
    summary="Delete a task and its events",
    response_model=None,
    responses=with_errors({204: {"description": "Deleted"}}, 401, 403, 404, 503),
)
async def delete_task(request: Request, task_id: str, ctx: Ctx) -> Response:
    ctx.require("task:manage", task_id)
    await check_task_rules(engine_of(request), ctx, task_id, "task:manage")
    if not await engine_of(request).delete_task(task_id):
        raise TaskNotFoundError(task_id)
    return Response(status_code=204)


@router.patch(
    "/tasks/{task_id}/status",
    summary="Transition a task",
    response_model=None,
    responses=with_errors(
        {200: {"model": TaskOut, "description": "The updated task"}},
        400,
        401,
        403,
        404,
        409,
        413,
        503,
    ),
    openapi_extra=request_body({"$ref": _REF + "TransitionBody"}),
)
async def transition_task(request: Request, task_id: str, ctx: Ctx) -> Response:
    ctx.require("task:manage", task_id)
    await check_task_rules(engine_of(request), ctx, task_id, "task:manage")
    body = validate(TRANSITION_ADAPTER, await read_json(request, config_of(request).max_body_bytes))
    task = await engine_of(request).transition_task(
        task_id,
        body.status,
        result=body.result,
        error=None if body.error is None else body.error.model_dump(exclude_none=True),
        reason=body.reason,
        ttl=body.ttl,
        resume_after_ms=body.resume_after_ms,
        blocked_request=None if body.blocked_request is None else body.blocked_request.model_dump(),
    )
    return json_response(task.public_dict())


@router.post(
    "/tasks/{task_id}/resolve",
    summary="Resolve a blocked task (blocked → running)",
    response_model=None,
    responses=with_errors(
        {200: {"model": TaskOut, "description": "The resumed task"}},
        400,
        401,
        403,
        404,
        409,
        413,
        503,
    ),
    openapi_extra=request_body({"$ref": _REF + "ResolveBody"}),
)
async def resolve_task(request: Request, task_id: str, ctx: Ctx) -> Response:
    ctx.require("task:resolve", task_id)
    engine = engine_of(request)
    task = await find_task(engine, task_id)
    check_task_auth_config(ctx, task, "task:resolve")
    raw = await read_json(request, config_of(request).max_body_bytes, empty={})
    body = validate(RESOLVE_ADAPTER, raw)
    if task.status != "blocked":
        raise ApiError(400, "Task is not blocked")
    result = body.data if isinstance(body.data, dict) else {"resolution": body.data}
    updated = await engine.transition_task(task_id, "running", result=result)
    return json_response(updated.public_dict())


@router.get(
    "/tasks/{task_id}/request",
    summary="The request a blocked task waits on",
    response_model=None,
    responses=with_errors(
        {200: {"model": BlockedRequest, "description": "`{type, data}`"}}, 401, 403, 404, 503
    ),
)
async def blocked_request(request: Request, task_id: str, ctx: Ctx) -> Response:
    ctx.require("task:resolve", task_id)
    task = await find_task(engine_of(request), task_id)
    check_task_auth_config(ctx, task, "task:resolve")
    if task.status != "blocked" or task.blocked_request is None:
        raise ApiError(404, "No blocked request")
    return json_response(task.blocked_request)
