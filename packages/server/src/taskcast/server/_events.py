"""Event routes: publish, history, the per-task SSE stream and the global stream."""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.telemetry import get_telemetry_data
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from taskcast.core import (
    Collapser,
    EventFilter,
    EventInput,
    EventQuery,
    StreamOptions,
    TaskEngine,
    TaskEvent,
    TaskStream,
)

from ._auth import AuthContext, auth_context, check_task_auth_config, task_allowed
from ._body import json_response, parse_json, plain_json, read_body, validate
from ._common import (
    check_task_rules,
    config_of,
    engine_of,
    error_responses,
    find_task,
    query_list,
    request_body,
    with_errors,
)
from ._errors import ApiError
from ._schemas import BATCH_ADAPTER, EVENT_ADAPTER, MAX_SAFE, EventBody, EventOut
from ._service_schemas import SSE_EXAMPLE
from ._sse import SSEResponse, global_frames

__all__ = ["PublishFastPath", "router"]

router = APIRouter(tags=["events"])

Ctx = Annotated[AuthContext, Depends(auth_context)]
_REF = "#/components/schemas/"
_PUBLISH_PATH = "/tasks/{task_id}/events"
_PAGE = 1000

SinceId = Annotated[str | None, Query(alias="since.id", description="Resume after this event id.")]
SinceIndex = Annotated[int | None, Query(alias="since.index", ge=-1, le=MAX_SAFE)]
SinceTimestamp = Annotated[
    int | None, Query(alias="since.timestamp", ge=0, le=MAX_SAFE, description="Unix ms, exclusive.")
]
Limit = Annotated[int | None, Query(ge=1, le=MAX_SAFE, description="Most stored events to read.")]
Types = Annotated[
    str | None, Query(description="Comma-separated type patterns (`llm.*`, `*`, exact).")
]
Levels = Annotated[str | None, Query(description="Comma-separated levels.")]
IncludeStatus = Annotated[
    bool, Query(alias="includeStatus", description="Include `taskcast:status` events.")
]
SeriesFormat = Annotated[
    Literal["delta", "accumulated"],
    Query(alias="seriesFormat", description="`accumulated` sends series snapshots."),
]

_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events, each frame an `SseFrame` (see docs/api/sse.md)",
        "content": {
            "text/event-stream": {"schema": {"$ref": _REF + "SseFrame"}, "example": SSE_EXAMPLE}
        },
    }
}


def _check_cursor(engine: TaskEngine, name: str, event_id: str) -> None:
    """An event id sent as a cursor is bounded like an id (no event has a longer one)."""
    limit = engine.limits.max_id_chars
    if len(event_id) > limit:
        raise ApiError(400, f"Invalid {name}: longer than {limit} characters (max {limit})")
    if "\x00" in event_id:
        raise ApiError(400, f"Invalid {name}: contains a NUL character")


def _event_input(body: EventBody) -> EventInput:
    return EventInput(
        type=body.type,
        level=body.level,
        data=body.data,
        series_id=body.series_id,
        series_mode=body.series_mode,
        series_acc_field=body.series_acc_field,
        idempotency_key=body.idempotency_key,
    )


def _parse_events(raw: bytes, max_batch: int) -> EventBody | list[EventBody]:
    """A publish body: one event (object) or a batch (array)."""
    if not raw.strip():
        raise ApiError(400, "Request body is required")
    if raw[:1] == b"{" and plain_json(raw):
        # One event validated straight from the bytes, without a dict in between. A body
        # this refuses goes through the general path below, which words the error.
        try:
            return EVENT_ADAPTER.validate_json(raw)
        except ValidationError:
            pass
    value = parse_json(raw)
    if isinstance(value, list) and len(value) > max_batch:
        raise ApiError(400, f"Too many events in one batch (max {max_batch})")
    return validate(BATCH_ADAPTER, value)


async def publish_events(request: Request, task_id: str, ctx: Ctx) -> Response:
    ctx.require("event:publish", task_id)
    engine = engine_of(request)
    await check_task_rules(engine, ctx, task_id, "event:publish")
    config = config_of(request)
    raw = await read_body(request, config.max_body_bytes)
    body = _parse_events(raw, config.max_batch)
    items = body if isinstance(body, list) else [body]
    if not items:
        # An empty batch publishes nothing and answers `[]`, as the original does (its
        # clients call publishEvents with whatever a loop collected); the task must exist.
        await find_task(engine, task_id)
        return json_response([], 201)
    # The data of an event cannot be larger than the body it came in.
    if len(raw) > config.max_data_bytes:
        for item in items:
            if len(to_json(item.data)) > config.max_data_bytes:
                raise ApiError(413, f"Event data too large (max {config.max_data_bytes} bytes)")
    events = await engine.publish_events(task_id, [_event_input(i) for i in items])
    if isinstance(body, list):
        return json_response([e.to_dict() for e in events], 201)
    return json_response(events[0].to_dict(), 201)


class PublishFastPath:
    """``POST /tasks/{id}/events`` answered from inside the app's middleware, before routing.

    Single-event publishing is the hottest request, and behind the middleware FastAPI ran
    about ten more layers for it: the exception middleware, an exit-stack middleware, the
    router's match over the routes, ``request_response`` with its own exception wrapper and
    two exit stacks, and the solving of the route's two parameters; at 200 publishes/s on
    a busy server each of those runs with cold caches, before any subscriber is written to.
    This middleware is the innermost of the app's (CORS, metrics and any middleware a host
    adds stay outside it), matches a request with the publish route itself, calls the
    endpoint with the values FastAPI would pass, and turns errors into answers with the
    app's own exception handlers, as the exception middleware would. Requests that need
    FastAPI's handler go on to it: an app with dependency overrides (a host may override
    ``auth_context``), and requests FastAPI's telemetry records (it reports the solved
    parameters).
    """

    def __init__(self, app: ASGIApp, *, owner: FastAPI) -> None:
        self.app = app
        self._owner = owner
        # The events router's own route: it matches exactly what routing would send to it.
        self._route = next(
            r
            for r in router.routes
            if isinstance(r, APIRoute) and r.path == _PUBLISH_PATH and r.methods == {"POST"}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or self._owner.dependency_overrides
            or get_telemetry_data() is not None
        ):
            await self.app(scope, receive, send)
            return
        match, child = self._route.matches(scope)
        if match is not Match.FULL:
            await self.app(scope, receive, send)
            return
        scope.update(child)
        scope.setdefault("router", self._owner.router)
        request = Request(scope, receive, send)
        try:
            ctx = await auth_context(request)
            response = await publish_events(request, child["path_params"]["task_id"], ctx)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # to the server-error middleware, as from a route
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Callable[..., Any] | None:
        # Starlette's ExceptionMiddleware's lookup: a status-code handler for an HTTP
        # exception, else the closest class in the exception's MRO. Handlers of Exception
        # (and 500) belong to the server-error middleware.
        handlers = self._owner.exception_handlers
        if isinstance(exc, StarletteHTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None


router.add_api_route(
    _PUBLISH_PATH,
    publish_events,
    methods=["POST"],
    status_code=201,
    summary="Publish one event (object body) or a batch (array body)",
    response_model=None,
    responses=with_errors(
        {
            201: {
                "description": "The stored event, or the stored events of a batch",
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": _REF + "EventOut"},
                                {"type": "array", "items": {"$ref": _REF + "EventOut"}},
                            ]
                        }
                    }
                },
            }
        },
        400,
        401,
        403,
        404,
        413,
        503,
    ),
    openapi_extra=request_body(
        {
            "oneOf": [
                {"$ref": _REF + "EventBody"},
                {"type": "array", "items": {"$ref": _REF + "EventBody"}},
            ]
        }
    ),
)


@router.get(
    "/tasks/{task_id}/events/history",
    summary="Stored events as a JSON array",
    response_model=list[EventOut],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def event_history(
    request: Request,
    task_id: str,
    ctx: Ctx,
    since_id: SinceId = None,
    since_index: Annotated[
        int | None,
        Query(
            alias="since.index",
            ge=-1,
            le=MAX_SAFE,
            description="Raw index: events with a larger one.",
        ),
    ] = None,
    since_timestamp: SinceTimestamp = None,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_SAFE, description="Most events returned.")
    ] = None,
    series_format: SeriesFormat = "delta",
    types: Types = None,
    levels: Levels = None,
    include_status: IncludeStatus = True,
) -> Response:
    ctx.require("event:history", task_id)
    engine = engine_of(request)
    check_task_auth_config(ctx, await find_task(engine, task_id), "event:history")
    after = -1
    if since_id is not None:
        _check_cursor(engine, "query parameter since.id", since_id)
        # An unknown id reads the whole history (as the original does).
        resolved = await engine.resolve_cursor(task_id, since_id)
        after = -1 if resolved is None else resolved
    elif since_index is not None:
        after = since_index
    event_filter = EventFilter(
        types=query_list(request, "types", types),
        levels=query_list(request, "levels", levels),
        include_status=include_status,
    )
    out: list[dict[str, Any]] = []
    stored = _stored(engine, task_id, after, since_timestamp, series_format == "accumulated")
    async for event in stored:
        if event.index > after and (since_timestamp is None or event.timestamp > since_timestamp):
            if event_filter.matches(event):
                out.append(event.to_dict())
                if limit is not None and len(out) >= limit:
                    break
    await stored.aclose()
    return json_response(out)


async def _stored(
    engine: TaskEngine, task_id: str, after: int, since_timestamp: int | None, collapsed: bool
) -> AsyncGenerator[TaskEvent, None]:
    """Stored events in index order, page by page, optionally collapsed into snapshots."""
    # Accumulated snapshots need each series from its start, so that mode reads from index 0
    # (the caller drops what lies before the cursor).
    collapser = Collapser(keep_after=after) if collapsed else None
    cursor = -1 if collapsed else after
    while True:
        page = await engine.get_events(
            task_id,
            EventQuery(
                after_index=cursor,
                after_timestamp=None if collapsed else since_timestamp,
                limit=_PAGE,
            ),
        )
        for event in page:
            cursor = event.index
            if collapser is None:
                yield event
            else:
                for item in collapser.feed(event):
                    yield item
        if len(page) < _PAGE:
            break
    if collapser is not None:
        for item in collapser.flush():
            yield item


@router.get(
    "/tasks/{task_id}/events",
    summary="Subscribe to a task's events (SSE)",
    response_class=SSEResponse,
    status_code=200,
    responses=with_errors(_SSE_DOC, 400, 401, 403, 404, 503),
)
async def task_stream(
    request: Request,
    task_id: str,
    ctx: Ctx,
    types: Types = None,
    levels: Levels = None,
    include_status: IncludeStatus = True,
    wrap: Annotated[bool, Query(description="`false` sends full TaskEvent objects.")] = True,
    series_format: SeriesFormat = "delta",
    since_id: SinceId = None,
    since_index: Annotated[
        int | None,
        Query(
            alias="since.index",
            ge=-1,
            le=MAX_SAFE,
            description="Filtered index: skip up to and including.",
        ),
    ] = None,
    since_timestamp: SinceTimestamp = None,
    limit: Limit = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Used when no since.* is given.")
    ] = None,
) -> Response:
    ctx.require("event:subscribe", task_id)
    engine = engine_of(request)
    config = config_of(request)
    check_task_auth_config(ctx, await find_task(engine, task_id), "event:subscribe")
    explicit = since_id is not None or since_index is not None or bool(since_timestamp)
    if not explicit and last_event_id:
        _check_cursor(engine, "header Last-Event-ID", last_event_id)
        since_id = last_event_id
    elif since_id is not None:
        _check_cursor(engine, "query parameter since.id", since_id)
    options = StreamOptions(
        filter=EventFilter(
            types=query_list(request, "types", types),
            levels=query_list(request, "levels", levels),
            include_status=include_status,
        ),
        wrap=wrap,
        series_format=series_format,
        since_id=since_id,
        since_index=since_index,
        # As in the original, since.timestamp=0 counts as absent.
        since_timestamp=since_timestamp or None,
        limit=limit,
        heartbeat_seconds=config.heartbeat_seconds,
        retry_ms=config.retry_ms,
        queue_limit=config.queue_limit,
    )
    stream = TaskStream(engine, task_id, options)
    return SSEResponse(
        stream.chunks(), write_timeout=config.write_timeout_seconds, attach=stream.attach
    )


def _global_access(engine: TaskEngine, ctx: AuthContext) -> Callable[[str], Awaitable[bool]]:
    """Whether the caller may see a task's events: ``taskIds``, then the task's authConfig.

    authConfig is fixed at creation, so the verdict is cached per task for the connection.
    """
    verdicts: dict[str, bool] = {}

    async def allowed(task_id: str) -> bool:
        if not ctx.can_access(task_id):
            return False
        if ctx.source == "none":
            return True
        verdict = verdicts.get(task_id)
        if verdict is None:
            task = await engine.get_task(task_id)
            # A task gone from every store (its deletion marker) has no rules left to apply.
            verdict = task is None or task_allowed(ctx, task, "event:subscribe")
            if len(verdicts) >= 10_000:
                verdicts.clear()
            verdicts[task_id] = verdict
        return verdict

    return allowed


@router.get(
    "/events",
    summary="Live events of every task (SSE, no replay)",
    response_class=SSEResponse,
    status_code=200,
    responses=with_errors(_SSE_DOC, 400, 401, 403),
)
async def global_stream(
    request: Request, ctx: Ctx, types: Types = None, levels: Levels = None
) -> Response:
    ctx.require("event:subscribe")
    engine = engine_of(request)
    config = config_of(request)
    # Unlike the per-task stream, an empty list means "no filter" here (as the original).
    event_filter = EventFilter(
        types=query_list(request, "types", types) or None,
        levels=query_list(request, "levels", levels) or None,
    )
    return SSEResponse(
        global_frames(
            engine.hub,
            filter=event_filter,
            allowed=_global_access(engine, ctx),
            heartbeat_seconds=config.heartbeat_seconds,
            retry_ms=config.retry_ms,
            queue_limit=config.queue_limit,
        ),
        write_timeout=config.write_timeout_seconds,
    )
