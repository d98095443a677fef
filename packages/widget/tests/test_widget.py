"""Rendering, escaping, configuration and the router (served in-process over ASGI)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import httpx
import pytest
from jinja2 import Environment
from starlette.applications import Starlette
from starlette.routing import Mount

import taskcast.widget
from taskcast.core import EventInput, MemoryShortTermStore, TaskEngine, TaskInput
from taskcast.widget import (
    TaskcastWidget,
    WidgetConfig,
    build_view,
    widget_environment,
    widget_router,
)

pytestmark = pytest.mark.anyio

EVIL = '"><script>alert(1)</script>'


def test_public_names_are_exported() -> None:
    public = {
        name
        for name in dir(taskcast.widget)
        if not name.startswith("_")
        and not isinstance(getattr(taskcast.widget, name), type(taskcast))
    }
    assert set(taskcast.widget.__all__) == public | {"__version__"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"taskcast_url": "tasks.example.com"}, "taskcast_url"),
        ({"prefix": "widget"}, "prefix"),
        ({"log_limit": 0}, "log_limit"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WidgetConfig(**kwargs)


def test_config_normalises_urls_and_quotes_task_ids() -> None:
    config = WidgetConfig(taskcast_url="https://tasks.example.com/api/", prefix="/w/")
    assert config.taskcast_url == "https://tasks.example.com/api"
    assert config.prefix == "/w"
    assert config.events_url("a/b c") == "https://tasks.example.com/api/tasks/a%2Fb%20c/events"
    assert WidgetConfig().events_url("t1") == "/tasks/t1/events"


def test_render_escapes_everything_it_is_given() -> None:
    widget = TaskcastWidget()
    view = build_view("t", [])
    view.texts[EVIL] = EVIL
    view.status = EVIL
    html = str(widget.render(EVIL, view=view))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-events-url="/tasks/%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E/events"' in html


def test_render_without_a_view_is_a_connecting_shell() -> None:
    html = str(TaskcastWidget(WidgetConfig(with_credentials=True, title="Job")).render("t1"))
    assert 'data-status="connecting"' in html
    assert 'data-with-credentials="true"' in html
    assert 'data-connection="idle"' in html
    assert "Job <code" in html
    assert "data-tc-log-count>0<" in html


def test_render_of_a_finished_view_is_complete_and_closed() -> None:
    from taskcast.core import TaskEvent

    status = TaskEvent(
        id="e0",
        task_id="t",
        index=0,
        timestamp=1,
        type="taskcast:status",
        level="info",
        data={"status": "completed", "result": {"answer": 42}},
    )
    html = str(TaskcastWidget().render("t", view=build_view("t", [status])))
    assert 'data-connection="closed"' in html
    assert "Result" in html and "{&#34;answer&#34;:42}" in html


def test_lazy_render_and_assets() -> None:
    widget = TaskcastWidget(WidgetConfig(prefix="/live"))
    lazy = str(widget.render("a b", lazy=True))
    assert 'hx-get="/live/tasks/a%20b/fragment"' in lazy and 'hx-trigger="load"' in lazy
    assert 'hx-get="/elsewhere/tasks/' in str(widget.render("x", lazy=True, base="/elsewhere"))
    assets = str(widget.assets())
    assert (
        "/live/static/vendor/htmx.min.js" in assets and "/live/static/taskcast-widget.js" in assets
    )
    assert "htmx.min.js" not in str(widget.assets(htmx=False))


def test_install_adds_globals_to_a_host_environment() -> None:
    env = Environment(autoescape=True)
    TaskcastWidget().install(env)
    html = env.from_string(
        "<head>{{ taskcast_widget_assets() }}</head>{{ taskcast_widget(tid) }}"
    ).render(tid=EVIL)
    assert html.count("<section") == 1  # markup is not escaped a second time
    assert "<script>alert" not in html
    assert '<script src="/widget/static/taskcast-widget.js" defer>' in html


async def test_load_view_needs_an_engine() -> None:
    with pytest.raises(RuntimeError, match="engine"):
        await TaskcastWidget().load_view("t")


def test_environment_is_shared_and_autoescaped() -> None:
    env = widget_environment()
    assert env is widget_environment()
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"


@pytest.fixture
async def engine() -> AsyncIterator[TaskEngine]:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    await engine.start()
    await engine.create_task(TaskInput(id="t1"))
    await engine.transition_task("t1", "running")
    await engine.publish_event(
        "t1",
        EventInput(
            type="llm.delta", data={"delta": "<hi>"}, series_id="out", series_mode="accumulate"
        ),
    )
    yield engine
    await engine.stop()


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_page_renders_current_state(engine: TaskEngine) -> None:
    app = Starlette()
    TaskcastWidget(WidgetConfig(taskcast_url="/api"), engine=engine).mount(app)
    async with client(app) as http:
        resp = await http.get("/widget/tasks/t1")
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["content-type"].startswith("text/html")
    body = resp.text
    assert body.startswith("<!doctype html>")
    assert '<pre class="tc-text" data-series-id="out">&lt;hi&gt;</pre>' in body
    assert 'data-events-url="/api/tasks/t1/events"' in body
    assert 'href="/widget/static/taskcast-widget.css"' in body
    assert 'data-status="running"' in body


async def test_fragment_is_the_widget_alone(engine: TaskEngine) -> None:
    app = Starlette(routes=[Mount("/live", widget_router(engine=engine, prefix="/live"))])
    async with client(app) as http:
        resp = await http.get("/live/tasks/t1/fragment")
    assert resp.status_code == 200
    assert resp.text.lstrip().startswith("<section")
    assert "<html" not in resp.text


async def test_unknown_task_is_404(engine: TaskEngine) -> None:
    app = Starlette(routes=[Mount("/widget", widget_router(engine=engine))])
    async with client(app) as http:
        page = await http.get("/widget/tasks/nope")
        fragment = await http.get("/widget/tasks/nope/fragment")
    assert page.status_code == 404 and "Task not found" in page.text
    assert fragment.status_code == 404


async def test_an_id_no_task_can_have_is_404_not_500(engine: TaskEngine) -> None:
    app = Starlette(routes=[Mount("/widget", widget_router(engine=engine))])
    async with client(app) as http:
        for task_id in ("%2E%2E", "a%00b", "x" * 300):
            page = await http.get(f"/widget/tasks/{task_id}")
            assert page.status_code == 404 and "Task not found" in page.text
            assert (await http.get(f"/widget/tasks/{task_id}/fragment")).status_code == 404


async def test_remote_mode_renders_a_shell_for_any_task() -> None:
    router = widget_router(
        taskcast_url="https://tasks.example.com", with_credentials=True, log_limit=5
    )
    app = Starlette(routes=[Mount("/widget", router)])
    async with client(app) as http:
        resp = await http.get("/widget/tasks/anything")
    assert resp.status_code == 200
    assert 'data-events-url="https://tasks.example.com/tasks/anything/events"' in resp.text
    assert 'data-log-limit="5"' in resp.text and 'data-with-credentials="true"' in resp.text


async def test_asset_urls_follow_nested_mounts() -> None:
    inner = Starlette(routes=[Mount("/w", widget_router())])
    app = Starlette(routes=[Mount("/outer", inner)])
    async with client(app) as http:
        page = await http.get("/outer/w/tasks/t")
        script = await http.get("/outer/w/static/taskcast-widget.js")
    assert 'src="/outer/w/static/taskcast-widget.js"' in page.text
    assert script.status_code == 200 and "EventSource" in script.text


async def test_static_assets_are_served_from_the_package() -> None:
    app = Starlette(routes=[Mount("/widget", widget_router())])
    async with client(app) as http:
        for name in (
            "taskcast-widget.js",
            "taskcast-widget.css",
            "vendor/htmx.min.js",
            "vendor/htmx-ext-sse.min.js",
        ):
            resp = await http.get(f"/widget/static/{name}")
            assert resp.status_code == 200, name
        assert (await http.get("/widget/static/missing.js")).status_code == 404


def test_vendored_files_match_their_recorded_hashes() -> None:
    vendor = resources.files("taskcast.widget") / "static" / "vendor"
    rows = [
        line.split()
        for line in (vendor / "VERSIONS").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert {row[0] for row in rows} == {"htmx.org", "htmx-ext-sse"}
    for _package, version, name, digest in rows:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version)
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest
    assert (vendor / "LICENSE.htmx").is_file() and (vendor / "LICENSE.htmx-ext-sse").is_file()


def test_script_never_writes_html() -> None:
    script = (resources.files("taskcast.widget") / "static" / "taskcast-widget.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "document.write" not in script
