"""The application factory and the lifespan helper for hosts that mount the app."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from taskcast.core import TaskEngine, WebhookOutbox

from . import _archives, _events, _health, _tasks, _webhook_routes
from ._auth import Authenticator, NoAuth
from ._config import ServerConfig
from ._docs import install_docs
from ._errors import install_error_handlers
from ._metrics import install_metrics
from ._schemas import CreateTaskBody, EventBody, ResolveBody, TransitionBody
from ._service_schemas import AdminTokenBody, SseFrame
from ._sse import SSEDetach
from ._webhooks import WebhookDispatcher, WebhookSettings

if TYPE_CHECKING:
    from ._metrics_share import SharedMetrics

__all__ = ["create_app", "taskcast_lifespan"]

_SCHEMA_REF = "#/components/schemas/{model}"
_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}


@asynccontextmanager
async def taskcast_lifespan(engine: TaskEngine, app: FastAPI | None = None) -> AsyncIterator[None]:
    """Start the engine, and on the way out stop it (ending open streams with a retry hint).

    Pass the Taskcast ``app`` (from :func:`create_app`) too, so its webhook dispatcher
    runs: without it webhooks are not delivered.

    A mounted app's own lifespan never runs, so a host composes this into its lifespan::

        taskcast_app = create_app(engine)

        @asynccontextmanager
        async def lifespan(app):
            async with taskcast_lifespan(engine, taskcast_app):
                yield

        host = FastAPI(lifespan=lifespan)
        host.mount("/taskcast", taskcast_app)
    """
    dispatcher: WebhookDispatcher | None = (
        None if app is None else getattr(app.state, "webhooks", None)
    )
    shared: SharedMetrics | None = (
        None if app is None else getattr(app.state, "metrics_share", None)
    )
    await engine.start()
    try:
        if dispatcher is not None:
            await dispatcher.start()
        try:
            if shared is not None:
                await shared.start()
            try:
                yield
            finally:
                if shared is not None:
                    await shared.stop()
        finally:
            if dispatcher is not None:
                await dispatcher.stop()
    finally:
        await engine.stop()


def create_app(
    engine: TaskEngine,
    *,
    config: ServerConfig | None = None,
    authenticator: Authenticator | None = None,
    webhooks: WebhookSettings | None = None,
    webhook_outbox: WebhookOutbox | None = None,
) -> FastAPI:
    """The Taskcast HTTP API (REST + SSE) over ``engine``.

    Served alone, the app starts and stops the engine in its lifespan; mounted inside another
    app, compose :func:`taskcast_lifespan` into the host's lifespan instead.

    Args:
        engine: The task engine to serve.
        config: HTTP settings; defaults to :class:`ServerConfig()`.
        authenticator: Who may do what; defaults to :class:`NoAuth` (everything allowed).
        webhooks: Webhook delivery settings (global hooks, private-address switch, retry
            default); per-task webhooks are delivered with the defaults without it.
        webhook_outbox: Where deliveries wait; default: the short-term store's outbox
            (SQLite, Redis) or memory.
    """
    config = config or ServerConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with taskcast_lifespan(engine, app):
            yield

    app = FastAPI(
        title=config.title,
        version=config.version,
        lifespan=lifespan,
        # /docs is served by install_docs, with Swagger UI's assets from the package.
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.config = config
    app.state.authenticator = authenticator or NoAuth()
    app.state.webhooks = WebhookDispatcher(engine, webhooks, outbox=webhook_outbox)
    app.state.started_at = time.monotonic()
    install_error_handlers(app)
    install_docs(app)
    app.include_router(_health.router)
    app.include_router(_tasks.router)
    app.include_router(_events.router)
    app.include_router(_archives.router)
    app.include_router(_webhook_routes.router)
    # First added, so innermost: the middleware added below and by a host wraps it.
    app.add_middleware(_events.PublishFastPath, owner=app)
    if config.metrics or config.opentelemetry:
        install_metrics(app, engine, config)
    if config.cors_origins is not None:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Content-Type"],
        )

    # SSE bodies stream outside the middleware stack (see SSEDetach); built lazily like the
    # stack itself, so middleware added after create_app is wrapped too.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: SSEDetach(build_stack())  # type: ignore[method-assign]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        routes=app.routes,
        description="Tasks with ordered event streams over REST and SSE. "
        'Errors answer `{"error": "<message>"}`.',
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    # Bodies are read by the routes themselves (any Content-Type), and SSE frames are written
    # by hand: add their models here.
    bodies = (CreateTaskBody, TransitionBody, EventBody, ResolveBody, AdminTokenBody)
    _, defs = models_json_schema(
        [(m, "validation") for m in bodies] + [(SseFrame, "serialization")],
        ref_template=_SCHEMA_REF,
    )
    schemas.update(defs.get("$defs", {}))
    # FastAPI documents validation failures as 422; this API answers them with 400.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                responses["400"] = {
                    "description": "Invalid input",
                    "content": {"application/json": {"schema": _ERROR_SCHEMA}},
                }
    _name_path_parameters(doc)
    _fill_examples(doc)
    components["securitySchemes"] = {
        "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    doc["security"] = [{"Bearer": []}, {}]
    return doc


def _name_path_parameters(doc: dict[str, Any]) -> None:
    """``{task_id}`` is documented as ``{id}``, the name docs/api/rest.md uses; the URL is the
    same (a path parameter's name is not part of it)."""
    paths = doc.get("paths", {})
    for path in list(paths):
        if "{task_id}" not in path:
            continue
        item = paths.pop(path)
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") == "task_id":
                    parameter["name"] = "id"
                    parameter["schema"] = {**parameter.get("schema", {}), "title": "Task id"}
                    parameter.setdefault("description", "The task's id.")
                    parameter.setdefault("example", "01JD6Q0V4Z3N2T7X8Y9A0B1C2D")
        paths[path.replace("{task_id}", "{id}")] = item


def _fill_examples(doc: dict[str, Any]) -> None:
    """Give every request and response body its model's example (the models carry one), so
    each route shows a realistic body in ``/docs``."""
    schemas: dict[str, Any] = doc.get("components", {}).get("schemas", {})

    def example_of(schema: dict[str, Any]) -> Any:
        ref = schema.get("$ref")
        if isinstance(ref, str):
            examples = schemas.get(ref.rsplit("/", 1)[-1], {}).get("examples")
            return examples[0] if examples else None
        if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
            item = example_of(schema["items"])
            return None if item is None else [item]
        for option in schema.get("oneOf", schema.get("anyOf", [])):
            found = example_of(option)
            if found is not None:
                return found
        return None

    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            bodies = [operation.get("requestBody", {})]
            bodies.extend(operation.get("responses", {}).values())
            for body in bodies:
                for media in body.get("content", {}).values():
                    if "example" in media or "examples" in media:
                        continue
                    found = example_of(media.get("schema", {}))
                    if found is not None:
                        media["example"] = found
