"""Small pieces the route modules share: app state access and OpenAPI response tables."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from taskcast.core import Task, TaskEngine

from ._auth import AuthContext, check_task_auth_config
from ._config import ServerConfig
from ._errors import ApiError
from ._schemas import ErrorBody

__all__ = [
    "check_task_rules",
    "config_of",
    "engine_of",
    "error_responses",
    "find_task",
    "query_list",
    "request_body",
    "split_list",
    "task_view",
    "with_errors",
]

_DESCRIPTIONS = {
    400: "Invalid input",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Request body or event data too large",
    503: "A storage dependency is unavailable",
}


def engine_of(request: Request) -> TaskEngine:
    engine: TaskEngine = request.app.state.engine
    return engine


def config_of(request: Request) -> ServerConfig:
    config: ServerConfig = request.app.state.config
    return config


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def with_errors(
    ok: dict[int | str, dict[str, Any]], *codes: int
) -> dict[int | str, dict[str, Any]]:
    return {**ok, **error_responses(*codes)}


def request_body(
    schema: dict[str, Any], *, required: bool = True, example: Any = None
) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body the route reads itself (without ``example``,
    the example of the model ``schema`` refers to is shown)."""
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"requestBody": {"required": required, "content": {"application/json": media}}}


def split_list(raw: str | None) -> tuple[str, ...] | None:
    """``a,b,,c`` → ``("a", "b", "c")``; absent → None."""
    if raw is None:
        return None
    return tuple(item for item in (part.strip() for part in raw.split(",")) if item)


def query_list(request: Request, name: str, raw: str | None) -> tuple[str, ...] | None:
    """:func:`split_list` of the query parameter ``name``; each item is a name (a type
    pattern, a level, a status), bounded as the engine bounds names (400 beyond)."""
    items = split_list(raw)
    if items:
        limits = engine_of(request).limits
        if len(items) > limits.max_patterns:
            raise ApiError(
                400,
                f"Invalid query parameter {name}: more than {limits.max_patterns} items "
                f"(max {limits.max_patterns})",
            )
        limit = limits.max_name_chars
        for item in items:
            if len(item) > limit:
                raise ApiError(
                    400,
                    f"Invalid query parameter {name}: an item is longer than {limit} "
                    f"characters (max {limit})",
                )
            if "\x00" in item:
                raise ApiError(400, f"Invalid query parameter {name}: contains a NUL character")
    return items


async def check_task_rules(engine: TaskEngine, ctx: AuthContext, task_id: str, scope: str) -> None:
    """Enforce the task's ``authConfig`` rules for ``scope`` (403 if they refuse the caller).

    With auth disabled there is nothing to check, so the task is not even read; an unknown
    task passes here and is reported as 404 by the operation itself.
    """
    if ctx.source != "none":
        check_task_auth_config(ctx, await engine.get_task(task_id), scope)


async def find_task(engine: TaskEngine, task_id: str) -> Task:
    """The task a route reads by itself, or 404 ``Task not found``.

    The exact words of the original's routes (its clients and tests compare them); errors
    of engine operations (transition, publish, delete) name the id, as the original's do.
    """
    task = await engine.get_task(task_id)
    if task is None:
        raise ApiError(404, "Task not found")
    return task


def task_view(engine: TaskEngine, task: Task) -> dict[str, Any]:
    """The task as ``GET`` routes answer it, with this process's subscriber count."""
    count = engine.subscriber_count(task.id)
    out = task.public_dict()
    out["hot"] = count > 0
    out["subscriberCount"] = count
    return out
