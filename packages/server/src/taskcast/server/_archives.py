"""Archive routes: export a task, import one, and release a task from the hot store.

``GET /tasks/{id}/archive`` and ``POST /tasks/import`` speak the original's
``taskcast.taskArchive`` v1 format (see :mod:`taskcast.core` ``parse_task_archive``), so the
original's ``exportTaskArchive()`` / ``importTaskArchive()`` work against this server and an
archive moves between the two in both directions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic_core import to_json

from taskcast.core import EventQuery, parse_task_archive, supports_release

from ._auth import AuthContext, auth_context, check_task_auth_config, validate_auth_config
from ._body import json_response, read_json
from ._common import (
    check_task_rules,
    config_of,
    engine_of,
    find_task,
    request_body,
    with_errors,
)
from ._errors import ApiError
from ._schemas import MAX_SAFE

__all__ = ["router"]

router = APIRouter(tags=["archives"])

Ctx = Annotated[AuthContext, Depends(auth_context)]

_IMPORT_INVALID = "Invalid archive import request"
_RELEASE_INVALID = "Invalid storage release request"

_ARCHIVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "version", "exportedAt", "task", "events"],
    "properties": {
        "schema": {"const": "taskcast.taskArchive", "description": "The format's name"},
        "version": {"const": 1, "description": "The format's version"},
        "exportedAt": {"type": "integer", "description": "Unix ms"},
        "task": {"$ref": "#/components/schemas/TaskOut"},
        "events": {
            "type": "array",
            "description": "Compacted history, indexes contiguous from 0",
            "items": {"$ref": "#/components/schemas/EventOut"},
        },
    },
}
_ARCHIVE_EXAMPLE: dict[str, Any] = {
    "schema": "taskcast.taskArchive",
    "version": 1,
    "exportedAt": 1700000100000,
    "task": {
        "id": "01JD6Q0V4Z3N2T7X8Y9A0B1C2D",
        "status": "completed",
        "createdAt": 1700000000000,
        "updatedAt": 1700000001000,
        "completedAt": 1700000001000,
        "type": "llm.chat",
        "result": {"answer": "Hello"},
    },
    "events": [
        {
            "id": "01JD6Q1A7K2M3N4P5Q6R7S8T9V",
            "taskId": "01JD6Q0V4Z3N2T7X8Y9A0B1C2D",
            "index": 0,
            "timestamp": 1700000000500,
            "type": "llm.delta",
            "level": "info",
            "data": {"delta": "Hello"},
            "seriesId": "answer",
            "seriesMode": "accumulate",
            "seriesSnapshot": True,
        }
    ],
}


@router.get(
    "/tasks/{task_id}/archive",
    summary="Export a task and its compacted history as a taskcast.taskArchive",
    response_model=None,
    responses=with_errors(
        {
            200: {
                "description": "The archive",
                "content": {
                    "application/json": {"schema": _ARCHIVE_SCHEMA, "example": _ARCHIVE_EXAMPLE}
                },
            }
        },
        400,
        401,
        403,
        404,
        503,
    ),
)
async def export_archive(request: Request, task_id: str, ctx: Ctx) -> Response:
    ctx.require("event:history", task_id)
    engine = engine_of(request)
    check_task_auth_config(ctx, await find_task(engine, task_id), "event:history")
    archive = await engine.export_task_archive(task_id)
    return json_response(archive.to_dict())


@router.post(
    "/tasks/import",
    summary="Import a taskcast.taskArchive",
    response_model=None,
    responses=with_errors(
        {
            200: {
                "description": "Imported: `{ok, taskId, eventCount, overwritten}`",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "ok": {"const": True, "description": "Always `true`"},
                                "taskId": {"type": "string", "description": "The task imported"},
                                "eventCount": {
                                    "type": "integer",
                                    "description": "Events stored",
                                },
                                "overwritten": {
                                    "type": "boolean",
                                    "description": "Whether a task with that id was replaced",
                                },
                            },
                        },
                        "example": {
                            "ok": True,
                            "taskId": "01JD6Q0V4Z3N2T7X8Y9A0B1C2D",
                            "eventCount": 1,
                            "overwritten": False,
                        },
                    }
                },
            }
        },
        400,
        401,
        403,
        409,
        413,
        503,
    ),
    openapi_extra=request_body(
        {
            "type": "object",
            "required": ["archive"],
            "properties": {
                "archive": {**_ARCHIVE_SCHEMA, "description": "A taskcast.taskArchive"},
                "overwrite": {
                    "type": "boolean",
                    "description": "Replace a task with the same id (default `false`: 409)",
                },
            },
        },
        example={"archive": _ARCHIVE_EXAMPLE, "overwrite": False},
    ),
)
async def import_archive(request: Request, ctx: Ctx) -> Response:
    ctx.require("task:create")
    config = config_of(request)
    engine = engine_of(request)
    body = await read_json(request, config.max_import_bytes)
    if not isinstance(body, Mapping) or not isinstance(body.get("overwrite", False), bool):
        raise ApiError(400, _IMPORT_INVALID)
    overwrite: bool = body.get("overwrite", False)
    limits = engine.limits
    # Everything is checked before anything is written: a bad archive changes nothing.
    archive = parse_task_archive(
        body.get("archive"), max_id_chars=limits.max_id_chars, max_name_chars=limits.max_name_chars
    )
    task = archive.task
    ctx.require("task:create", task.id)
    if task.webhooks:
        ctx.require("webhook:create")
    if task.auth_config is not None:
        validate_auth_config(task.auth_config)
    limit = config.max_data_bytes
    for event in archive.events:
        if len(to_json(event.data)) > limit:
            raise ApiError(413, f"Event data too large (max {limit} bytes) in event {event.id}")
    if overwrite:
        ctx.require("task:manage", task.id)
        await check_task_rules(engine, ctx, task.id, "task:manage")
    result = await engine.import_task_archive(archive, overwrite=overwrite)
    return json_response(result.to_dict())


def _release_error(status: int, message: str, code: str) -> Response:
    body = to_json({"error": message, "code": code})
    return Response(body, status_code=status, media_type="application/json")


def _optional_int(body: Mapping[str, Any], key: str, low: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_SAFE:
        raise ApiError(400, _RELEASE_INVALID)
    return value


@router.post(
    "/tasks/{task_id}/storage/release",
    summary="Release a task from the hot store to the long-term store now",
    response_model=None,
    responses=with_errors(
        {
            200: {
                "description": "`{taskId, storageState, archiveWatermark, released}`",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "taskId": {"type": "string", "description": "The task"},
                                "storageState": {
                                    "const": "cold",
                                    "description": "Where the task is now: only the long-term "
                                    "store holds it",
                                },
                                "archiveWatermark": {
                                    "type": "integer",
                                    "description": "Last event index the long-term store holds",
                                },
                                "released": {
                                    "type": "boolean",
                                    "description": "`false` when it was released already",
                                },
                            },
                        },
                        "example": {
                            "taskId": "01JD6Q0V4Z3N2T7X8Y9A0B1C2D",
                            "storageState": "cold",
                            "archiveWatermark": 41,
                            "released": True,
                        },
                    }
                },
            }
        },
        400,
        401,
        403,
        404,
        409,
        503,
    ),
    openapi_extra=request_body(
        {
            "type": "object",
            "properties": {
                "expectedLastEventIndex": {
                    "type": "integer",
                    "minimum": -1,
                    "description": "Release only if the task's last event index is this "
                    "(409 otherwise); -1 for no event",
                },
                "inactiveSince": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Release only if nothing changed after this Unix time in "
                    "milliseconds (409 otherwise)",
                },
            },
        },
        required=False,
        example={"expectedLastEventIndex": 41},
    ),
)
async def release_task(request: Request, task_id: str, ctx: Ctx) -> Response:
    ctx.require("task:manage", task_id)
    config = config_of(request)
    engine = engine_of(request)
    body = await read_json(request, config.max_body_bytes, empty={})
    if not isinstance(body, Mapping):
        raise ApiError(400, _RELEASE_INVALID)
    expected = _optional_int(body, "expectedLastEventIndex", -1)
    inactive_since = _optional_int(body, "inactiveSince", 0)
    archive = engine.archive
    if archive is None or not supports_release(engine.short_term):
        return _release_error(
            404,
            "Storage release is not available: it needs a long-term store (PostgreSQL) "
            "behind a short-term store that releases tasks (Redis or memory)",
            "storage_release_unsupported",
        )
    task = await find_task(engine, task_id)
    check_task_auth_config(ctx, task, "task:manage")
    hot = await engine.short_term.get_task(task_id)
    if hot is None:
        # Already released: idempotent.
        return json_response(
            {
                "taskId": task_id,
                "storageState": "cold",
                "archiveWatermark": await archive.last_index(task_id),
                "released": False,
            }
        )
    last = await engine.short_term.last_index(task_id)
    if expected is not None and expected != last:
        return _release_error(
            409,
            f"The task's last event index is {last}, not the expected {expected}",
            "storage_precondition_failed",
        )
    if inactive_since is not None:
        newest = hot.updated_at
        if last >= 0:
            tail = await engine.short_term.get_events(
                task_id, EventQuery(after_index=last - 1, limit=1)
            )
            if tail:
                newest = max(newest, tail[0].timestamp)
        if newest > inactive_since:
            return _release_error(
                409,
                f"The task was active at {newest}, after inactiveSince {inactive_since}",
                "storage_precondition_failed",
            )
    if not hot.is_terminal and (hot.deadline_at is not None or hot.resume_at is not None):
        # The scheduler watches hot tasks only: released, the deadline would never fire.
        return _release_error(
            409,
            "The task has a pending TTL deadline or resumeAt and must stay in the hot store",
            "storage_precondition_failed",
        )
    released = await engine.lifecycle.release(task_id)
    if not released:
        # The archive copy was incomplete (the missing writes are queued now): let them land.
        await archive.flush(timeout=5.0)
        released = await engine.lifecycle.release(task_id)
    if not released:
        return _release_error(
            409,
            "The task could not be released now: it changed, or its archive copy is still "
            "being written; retry",
            "storage_busy",
        )
    return json_response(
        {"taskId": task_id, "storageState": "cold", "archiveWatermark": last, "released": True}
    )
