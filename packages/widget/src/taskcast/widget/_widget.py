"""Configuration, Jinja rendering and the Starlette router of the widget."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles

from ._view import TaskView, load_view

if TYPE_CHECKING:
    from taskcast.core import TaskEngine

__all__ = ["TaskcastWidget", "WidgetConfig", "widget_environment", "widget_router"]

logger = logging.getLogger(__name__)

_environment: Environment | None = None


def widget_environment() -> Environment:
    """The package's Jinja environment (templates under ``taskcast/``, autoescaped)."""
    global _environment
    if _environment is None:
        _environment = Environment(
            loader=PackageLoader("taskcast.widget", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=False,
            lstrip_blocks=False,
        )
    return _environment


def _check_prefix(value: str, name: str) -> str:
    if value and not value.startswith("/"):
        raise ValueError(f"{name} must be empty or start with '/': {value!r}")
    return value.rstrip("/")


@dataclass(slots=True, frozen=True, kw_only=True)
class WidgetConfig:
    """Where the browser finds things, and how much the view keeps.

    Attributes:
        taskcast_url: Base URL of the Taskcast API *as the browser sees it*. Empty (the
            default) means the API is served at the root of the page's own origin; a path
            such as ``"/taskcast"`` means it is mounted there; an absolute URL
            (``"https://tasks.example.com"``) points at a remote server, which must allow
            the page's origin with CORS.
        prefix: Where the widget router is mounted in the host app; used to build asset
            and fragment URLs for embeds rendered outside a widget route.
        log_limit: Most event-log lines kept in the page (older ones are dropped).
        with_credentials: Open the EventSource with ``withCredentials`` so a remote server
            receives its cookies (its CORS must then name the origin and allow credentials).
        title: Heading shown before the task id.
        token: A token the stream URL carries as ``?token=...``, for a Taskcast server in
            ``jwt`` mode: a browser's EventSource cannot send an ``Authorization`` header,
            so the server also accepts a (subscribe-only, expiring) token in the query.
            Fixed for every task; prefer ``token_factory``.
        token_factory: Called with the task id each time a widget is rendered; returns the
            token for that task, typically ``lambda task_id: mint_subscribe_token(secret,
            task_id)`` (from ``taskcast.server_sdk`` or ``taskcast.server``). Pages are
            served with ``Cache-Control: no-store``, so a refresh mints a fresh token.
    """

    taskcast_url: str = ""
    prefix: str = "/widget"
    log_limit: int = 200
    with_credentials: bool = False
    title: str = "Task"
    token: str | None = field(default=None, repr=False)
    token_factory: Callable[[str], str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        url = self.taskcast_url
        if url and not url.startswith(("/", "http://", "https://")):
            raise ValueError(f"taskcast_url must be a path or an http(s) URL: {url!r}")
        object.__setattr__(self, "taskcast_url", url.rstrip("/"))
        object.__setattr__(self, "prefix", _check_prefix(self.prefix, "prefix"))
        if self.log_limit < 1:
            raise ValueError(f"log_limit must be positive: {self.log_limit}")
        if self.token is not None and self.token_factory is not None:
            raise ValueError("give token or token_factory, not both")

    def events_url(self, task_id: str) -> str:
        """The Taskcast SSE endpoint of a task (with ``?token=`` when a token is configured)."""
        url = f"{self.taskcast_url}/tasks/{quote(task_id, safe='')}/events"
        token = self.token_factory(task_id) if self.token_factory is not None else self.token
        if token:
            url += f"?token={quote(token, safe='')}"
        return url


class TaskcastWidget:
    """A live task view: embeds for host templates, and a router with a standalone page.

    Args:
        config: URLs and limits; defaults to :class:`WidgetConfig()`.
        engine: An in-process :class:`~taskcast.core.TaskEngine`. With it, the server renders
            the current state on first paint (and the whole view of a finished task, which
            then needs no stream) and answers 404 for unknown tasks. Without it (a remote
            Taskcast server), the page is a shell that the script fills from the stream.

    The widget's routes show task data to whoever can reach them; guard them as you guard
    the Taskcast API (for example with your app's authentication middleware on the mount).
    """

    def __init__(self, config: WidgetConfig | None = None, *, engine: TaskEngine | None = None):
        self.config = config or WidgetConfig()
        self.engine = engine
        self._macros: Any = None

    # -- rendering -------------------------------------------------------------------------

    @property
    def macros(self) -> Any:
        """The template module holding the ``taskcast_widget*`` macros."""
        if self._macros is None:
            self._macros = widget_environment().get_template("taskcast/widget.html").module
        return self._macros

    def static_url(self, base: str | None = None) -> str:
        return f"{self.config.prefix if base is None else base}/static"

    def assets(self, *, htmx: bool = True, base: str | None = None) -> Markup:
        """``<link>``/``<script>`` tags for the widget (put them in the page's ``<head>``).

        ``htmx=False`` leaves out the vendored htmx when the page already loads its own
        (htmx is only needed for :meth:`render` with ``lazy=True``).
        """
        return Markup(self.macros.taskcast_widget_assets(self.static_url(base), htmx=htmx))

    def render(
        self,
        task_id: str,
        *,
        view: TaskView | None = None,
        lazy: bool = False,
        base: str | None = None,
    ) -> Markup:
        """The widget's HTML for a host template (``{{ taskcast_widget(task_id) }}``).

        Args:
            task_id: The task to show.
            view: A state rendered beforehand with :meth:`load_view` (host templates render
                synchronously, so they cannot read the engine themselves). Without it the
                widget starts empty and fills itself from the stream.
            lazy: Render a placeholder that htmx replaces with the server-rendered fragment
                (``GET {prefix}/tasks/{id}/fragment``) once the page has loaded.
            base: The widget mount's path, when it differs from ``config.prefix``.
        """
        if lazy:
            prefix = self.config.prefix if base is None else base
            fragment = f"{prefix}/tasks/{quote(task_id, safe='')}/fragment"
            return Markup(self.macros.taskcast_widget_lazy(task_id, fragment))
        return Markup(
            self.macros.taskcast_widget(
                task_id,
                self.config.events_url(task_id),
                view=view,
                log_limit=self.config.log_limit,
                with_credentials=self.config.with_credentials,
                title=self.config.title,
            )
        )

    def install(self, env: Environment) -> None:
        """Add ``taskcast_widget(task_id, ...)`` and ``taskcast_widget_assets()`` to ``env``.

        Works with any Jinja environment, e.g. ``Jinja2Templates(...).env`` in Starlette.
        """
        env.globals["taskcast_widget"] = self.render
        env.globals["taskcast_widget_assets"] = self.assets

    async def load_view(self, task_id: str) -> TaskView | None:
        """The current state of a task from the in-process engine (``None`` if unknown).

        Raises:
            RuntimeError: the widget has no engine.
        """
        if self.engine is None:
            raise RuntimeError("TaskcastWidget.load_view needs an engine")
        return await load_view(self.engine, task_id, log_limit=self.config.log_limit)

    # -- routes ----------------------------------------------------------------------------

    def router(self) -> Router:
        """Routes to mount at ``config.prefix``.

        * ``GET /tasks/{task_id}``: a standalone page with the live view.
        * ``GET /tasks/{task_id}/fragment``: the widget alone (what ``lazy`` embeds fetch).
        * ``/static/...``: the script, the stylesheet and the vendored htmx.
        """
        return Router(
            routes=[
                Route("/tasks/{task_id}", self._page, methods=["GET"], name="page"),
                Route(
                    "/tasks/{task_id}/fragment", self._fragment, methods=["GET"], name="fragment"
                ),
                Mount(
                    "/static",
                    app=StaticFiles(packages=[("taskcast.widget", "static")]),
                    name="static",
                ),
            ]
        )

    def mount(self, app: Any, *, name: str = "taskcast-widget") -> None:
        """Mount :meth:`router` on a Starlette/FastAPI ``app`` at ``config.prefix``."""
        app.mount(self.config.prefix, self.router(), name=name)

    async def _context(self, request: Request) -> dict[str, Any] | None:
        task_id = request.path_params["task_id"]
        view = None
        if self.engine is not None:
            view = await self.load_view(task_id)
            if view is None:
                return None
        # Inside a Mount, root_path is the mount's full path (outer mounts and proxies too).
        base = str(request.scope.get("root_path", "")).rstrip("/")
        return {
            "task_id": task_id,
            "events_url": self.config.events_url(task_id),
            "view": view,
            "log_limit": self.config.log_limit,
            "with_credentials": self.config.with_credentials,
            "title": self.config.title,
            "static_url": self.static_url(base),
        }

    def _html(self, template: str, context: dict[str, Any], status: int = 200) -> Response:
        body = widget_environment().get_template(template).render(context)
        # The view changes as the task runs; a cached copy would replay a stale first paint.
        return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    async def _page(self, request: Request) -> Response:
        context = await self._context(request)
        if context is None:
            return self._html(
                "taskcast/not_found.html", {"task_id": request.path_params["task_id"]}, 404
            )
        return self._html("taskcast/page.html", context)

    async def _fragment(self, request: Request) -> Response:
        context = await self._context(request)
        if context is None:
            return self._html(
                "taskcast/not_found.html", {"task_id": request.path_params["task_id"]}, 404
            )
        return self._html("taskcast/fragment.html", context)


def widget_router(
    *,
    taskcast_url: str | None = None,
    engine: TaskEngine | None = None,
    prefix: str = "/widget",
    log_limit: int = 200,
    with_credentials: bool = False,
    token_factory: Callable[[str], str] | None = None,
) -> Router:
    """Shorthand for ``TaskcastWidget(WidgetConfig(...), engine=engine).router()``.

    Mount the result at ``prefix``: ``app.mount("/widget", widget_router(engine=engine))``.
    """
    config = WidgetConfig(
        taskcast_url=taskcast_url or "",
        prefix=prefix,
        log_limit=log_limit,
        with_credentials=with_credentials,
        token_factory=token_factory,
    )
    return TaskcastWidget(config, engine=engine).router()
