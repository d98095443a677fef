"""The widget in a real browser: headless Chromium against a real uvicorn server.

The server is ``taskcast.server.create_app(engine)`` with the widget mounted in the same
app; a publisher coroutine streams chunks into the engine while the test drives the page
over the Chrome DevTools Protocol.

Set TASKCAST_WIDGET_SCREENSHOT=<path> to keep the screenshot (docs/sdk/widget.png is made
this way).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from jinja2 import Environment
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from taskcast.core import EventInput, MemoryShortTermStore, TaskEngine, TaskInput
from taskcast.server import ServerConfig, create_app
from taskcast.widget import TaskcastWidget, WidgetConfig

from ._cdp import CHROMIUM, Page, chromium_page
from ._server import ServerThread

if not (os.path.exists(CHROMIUM) or os.environ.get("CI") == "true"):
    pytest.skip(
        f"Chromium not found at {CHROMIUM} (apt-get install -y chromium); "
        "the browser tests are required when CI=true",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

# Markup, entities, accents and a character outside the BMP (a UTF-16 surrogate pair in JS)
# must all arrive as the exact text that was published.
CHUNKS = [
    "Taskcast streams ",
    "each chunk ",
    "as it is published; ",
    "a refresh ",
    "in the middle of the stream ",
    "rebuilds the text ",
    "exactly once.\n",
    "Markup such as <b>bold</b> & &amp; ",
    "stays text, ",
    "and so do accents (café, naïve) ",
    "and \U0001d70b \u2248 3.14159",
    ".\n",
]
EARLY = 4  # published before the refresh: two thirds of the chunks are still to come

ROOT = "document.querySelector('[data-taskcast-widget]')"
TEXT = "(document.querySelector('.tc-text') || {textContent: ''}).textContent"
STATE = f"""(function () {{
  var root = {ROOT};
  // Markup whitespace differs between the server's template and the script's DOM calls;
  // the texts are compared exactly, the rest without whitespace.
  var squash = function (text) {{ return text.replace(/\\s+/g, ''); }};
  var pick = function (sel, f) {{
    return Array.prototype.map.call(root.querySelectorAll(sel), function (n) {{ return f(n.textContent); }});
  }};
  return {{
    status: root.querySelector('[data-tc-status]').textContent,
    texts: pick('.tc-text', function (t) {{ return t; }}),
    progress: pick('.tc-progress-item', squash),
    outcome: squash(root.querySelector('[data-tc-outcome]').textContent),
  }};
}})()"""


class EventsRequests:
    """ASGI middleware that records the Last-Event-ID of every SSE request, and can hold
    new SSE requests at the door (so a test decides what a reconnect finds)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cursors: list[str | None] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/events"):
            headers = dict(scope["headers"])
            cursor = headers.get(b"last-event-id")
            self.cursors.append(None if cursor is None else cursor.decode())
            if self.gate is not None:
                await self.gate.wait()
        await self.app(scope, receive, send)


@dataclass
class Harness:
    server: ServerThread
    engine: TaskEngine
    requests: EventsRequests
    published: list[str] = field(default_factory=list)

    async def run(self, make: Callable[[], Awaitable[Any]]) -> Any:
        async def call() -> Any:
            return await make()

        return await self.server.run(call())

    async def start_task(self, task_id: str) -> None:
        async def go() -> None:
            await self.engine.create_task(TaskInput(id=task_id, type="llm.chat"))
            await self.engine.transition_task(task_id, "running")

        await self.run(go)

    async def publish(self, task_id: str, chunks: list[str], *, pause: float = 0.0) -> None:
        """Publish chunks (and a progress value after each) from the server's event loop."""

        async def go() -> None:
            for chunk in chunks:
                await self.engine.publish_event(
                    task_id,
                    EventInput(
                        type="llm.delta",
                        data={"delta": chunk},
                        series_id="answer",
                        series_mode="accumulate",
                    ),
                )
                self.published.append(chunk)
                done = len(self.published)
                await self.engine.publish_event(
                    task_id,
                    EventInput(
                        type="progress",
                        data={
                            "pct": round(100 * done / len(CHUNKS), 1),
                            "label": f"{done}/{len(CHUNKS)} chunks",
                        },
                        series_id="progress",
                        series_mode="latest",
                    ),
                )
                if pause:
                    await asyncio.sleep(pause)

        await self.run(go)

    async def complete(self, task_id: str) -> None:
        async def go() -> None:
            await self.engine.transition_task(
                task_id, "completed", result={"chunks": len(self.published)}
            )

        await self.run(go)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    # A short retry hint so a dropped stream comes back quickly in the resume test.
    app = create_app(engine, config=ServerConfig(retry_ms=200))
    widget = TaskcastWidget(WidgetConfig(title="Chat answer"), engine=engine)
    widget.mount(app)

    env = Environment(autoescape=True)
    widget.install(env)
    host_page = env.from_string(
        "<!doctype html><html><head>{{ taskcast_widget_assets() }}</head>"
        "<body><h1>Host page</h1>{{ taskcast_widget(task_id, lazy=True) }}</body></html>"
    )

    async def host(request: Request) -> HTMLResponse:
        return HTMLResponse(host_page.render(task_id=request.path_params["task_id"]))

    app.add_route("/host/{task_id}", host)
    requests = EventsRequests(app)
    server = ServerThread(requests)
    server.start()
    try:
        yield Harness(server=server, engine=engine, requests=requests)
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Page]:
    """One Chromium for the module; each test navigates its tab afresh."""
    async with chromium_page() as page:
        yield page


@pytest.fixture
async def page(chromium: Page) -> AsyncIterator[Page]:
    chromium.console.clear()
    yield chromium
    # Leave no stream open behind the next test.
    await chromium.navigate("about:blank")


async def widget_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate(STATE)
    return state


async def test_streams_survives_refresh_and_ends_cleanly(harness: Harness, page: Page) -> None:
    full = "".join(CHUNKS)
    await harness.start_task("chat-1")
    await page.navigate(f"{harness.server.url}/widget/tasks/chat-1")
    await page.wait_for(f"{ROOT}.dataset.connection === 'open'")
    assert await page.evaluate(f"{ROOT}.dataset.status") == "running"

    # The text grows as chunks arrive.
    await harness.publish("chat-1", CHUNKS[:1])
    await page.wait_for(f"{TEXT} === {json.dumps(CHUNKS[0])}")
    await harness.publish("chat-1", CHUNKS[1:EARLY])
    await page.wait_for(f"{TEXT} === {json.dumps(''.join(CHUNKS[:EARLY]))}")
    await page.wait_for("document.querySelector('.tc-progress-item progress') !== null")

    # Refresh mid-stream: some chunks are published while the page reloads, the rest
    # once the new page is connected (so they reach it as live deltas).
    await page.reload()
    middle = EARLY + 2
    during = asyncio.ensure_future(harness.publish("chat-1", CHUNKS[EARLY:middle]))
    await page.wait_event("Page.loadEventFired")
    await during
    await page.wait_for(f"{ROOT}.dataset.connection === 'open'")
    await harness.publish("chat-1", CHUNKS[middle:], pause=0.01)
    await harness.complete("chat-1")

    await page.wait_for(f"{ROOT}.dataset.connection === 'closed'")
    assert await page.evaluate(TEXT) == full
    assert await page.evaluate(f"{ROOT}.dataset.status") == "completed"
    assert await page.evaluate(f"{ROOT}.taskcastWidget.source") is None
    live = await widget_state(page)
    assert live["status"] == "completed"
    assert live["texts"] == [full]
    assert live["outcome"] == 'Result{"chunks":12}'
    assert live["progress"] == ["progress100%100%12/12chunks"]
    assert page.console == []

    await page.evaluate("document.querySelector('details.tc-log').open = true")
    shot = await page.screenshot()
    assert shot.startswith(b"\x89PNG\r\n\x1a\n")
    keep = os.environ.get("TASKCAST_WIDGET_SCREENSHOT")
    if keep:
        await anyio.Path(keep).write_bytes(shot)

    # A finished task is rendered whole by the server, the same as the live view, and
    # opens no stream at all.
    before = len(harness.requests.cursors)
    await page.navigate(f"{harness.server.url}/widget/tasks/chat-1")
    assert await widget_state(page) == live
    assert await page.evaluate(f"{ROOT}.dataset.connection") == "closed"
    assert len(harness.requests.cursors) == before
    # Every stream the page opened began without a cursor: fresh page loads replay.
    assert harness.requests.cursors and set(harness.requests.cursors) == {None}


async def test_dropped_stream_resumes_with_last_event_id(harness: Harness, page: Page) -> None:
    await harness.start_task("chat-2")
    await page.navigate(f"{harness.server.url}/widget/tasks/chat-2")
    await page.wait_for(f"{ROOT}.dataset.connection === 'open'")
    await harness.publish("chat-2", CHUNKS[:EARLY])
    await page.wait_for(f"{TEXT} === {json.dumps(''.join(CHUNKS[:EARLY]))}")
    # Tag the text element: a view reset would replace it and lose the tag.
    await page.evaluate("document.querySelector('.tc-text').dataset.tag = 'kept'")

    # End every open stream as a graceful server shutdown does (retry hint, no done).
    await harness.run(lambda: _shutdown_streams(harness.engine))
    await harness.publish("chat-2", CHUNKS[EARLY:])
    await harness.complete("chat-2")

    await page.wait_for(f"{ROOT}.dataset.connection === 'closed'")
    assert await page.evaluate(TEXT) == "".join(CHUNKS)
    assert await page.evaluate("document.querySelector('.tc-text').dataset.tag") == "kept"
    assert await page.evaluate(f"{ROOT}.dataset.status") == "completed"
    first, *resumed = harness.requests.cursors
    assert first is None
    # The browser reconnected by itself and sent the id of the last event it had.
    assert resumed and all(cursor for cursor in resumed)


async def _shutdown_streams(engine: TaskEngine) -> None:
    engine.hub.shutdown()


async def test_lazy_embed_loads_through_htmx_and_streams(harness: Harness, page: Page) -> None:
    await harness.start_task("chat-3")
    await harness.publish("chat-3", CHUNKS[:2])
    await page.navigate(f"{harness.server.url}/host/chat-3")
    # htmx swapped the placeholder for the server-rendered fragment, and the script
    # picked the new widget up.
    await page.wait_for(f"{ROOT} !== null && {ROOT}.dataset.connection === 'open'")
    assert await page.evaluate("document.querySelector('.taskcast-widget-loading')") is None
    assert await page.evaluate(TEXT) == "".join(CHUNKS[:2])
    await harness.publish("chat-3", CHUNKS[2:])
    await harness.complete("chat-3")
    await page.wait_for(f"{ROOT}.dataset.connection === 'closed'")
    assert await page.evaluate(TEXT) == "".join(CHUNKS)
    assert await page.evaluate("document.querySelector('h1').textContent") == "Host page"


async def test_unknown_cursor_resyncs_and_rebuilds_the_view(harness: Harness, page: Page) -> None:
    await harness.start_task("chat-4")
    await page.navigate(f"{harness.server.url}/widget/tasks/chat-4")
    await page.wait_for(f"{ROOT}.dataset.connection === 'open'")
    await harness.publish("chat-4", CHUNKS[:EARLY])
    await page.wait_for(f"{TEXT} === {json.dumps(''.join(CHUNKS[:EARLY]))}")

    async def drop_stream() -> None:
        # Hold reconnects at the door, then end the stream as a shutdown does.
        harness.requests.gate = asyncio.Event()
        harness.engine.hub.shutdown()

    async def replace_task() -> None:
        # Replace the task under the same id: the browser's Last-Event-ID then names an
        # event that no longer exists.
        await harness.engine.delete_task("chat-4")
        await harness.engine.create_task(TaskInput(id="chat-4"))
        await harness.engine.transition_task("chat-4", "running")

    async def release() -> None:
        assert harness.requests.gate is not None
        harness.requests.gate.set()

    await harness.run(drop_stream)
    await page.wait_for(f"{ROOT}.dataset.connection === 'reconnecting'")
    await harness.run(replace_task)
    harness.published.clear()
    await harness.publish("chat-4", ["a new answer"])
    await harness.complete("chat-4")
    await harness.run(release)
    await page.wait_for(f"{ROOT}.dataset.connection === 'closed'")
    # taskcast.resync reset the view; the full replay of the new task rebuilt it.
    assert await page.evaluate(TEXT) == "a new answer"
    assert await page.evaluate(f"{ROOT}.dataset.status") == "completed"
    assert await page.evaluate("document.querySelectorAll('.tc-log-entry').length") == 4
    assert harness.requests.cursors[-1]  # the reconnect carried the stale cursor


async def test_deleted_task_ends_the_stream(harness: Harness, page: Page) -> None:
    await harness.start_task("chat-5")
    await page.navigate(f"{harness.server.url}/widget/tasks/chat-5")
    await page.wait_for(f"{ROOT}.dataset.connection === 'open'")
    await harness.publish("chat-5", CHUNKS[:2])
    await page.wait_for(f"{TEXT} === {json.dumps(''.join(CHUNKS[:2]))}")
    await harness.run(lambda: harness.engine.delete_task("chat-5"))
    await page.wait_for(f"{ROOT}.dataset.connection === 'closed'")
    assert await page.evaluate(f"{ROOT}.dataset.status") == "deleted"
    assert await page.evaluate(TEXT) == "".join(CHUNKS[:2])


async def test_remote_server_with_cors_and_retry_after_404(page: Page) -> None:
    """The widget on one origin, the Taskcast API on another (CORS), task created late."""
    engine = TaskEngine(short_term=MemoryShortTermStore())
    api_app = create_app(engine, config=ServerConfig(cors_origins=("*",)))
    api = Harness(server=ServerThread(api_app), engine=engine, requests=EventsRequests(api_app))
    web_app = Starlette()
    TaskcastWidget(WidgetConfig(taskcast_url=api.server.url)).mount(web_app)
    web = ServerThread(web_app)
    api.server.start()
    web.start()
    try:
        await page.navigate(f"{web.url}/widget/tasks/late")
        # The task does not exist yet: the stream answers 404 and the widget retries.
        await page.wait_for(f"{ROOT}.dataset.connection === 'reconnecting'")
        assert await page.evaluate(f"{ROOT}.dataset.status") == "connecting"
        await api.start_task("late")
        await api.publish("late", CHUNKS)
        await api.complete("late")
        await page.wait_for(f"{ROOT}.dataset.connection === 'closed'", timeout=20)
        assert await page.evaluate(TEXT) == "".join(CHUNKS)
        assert await page.evaluate(f"{ROOT}.dataset.status") == "completed"
        # A 404 is retried quietly: it is not mistaken for a CORS refusal.
        assert await page.evaluate(f"{ROOT}.querySelector('[data-tc-connection-error]')") is None
    finally:
        web.stop()
        api.server.stop()


CONNECTION_ERROR = f"({ROOT}.querySelector('[data-tc-connection-error]') || {{}}).textContent"


async def test_origin_the_server_does_not_allow_shows_an_error(page: Page) -> None:
    """The widget on an origin the API's CORS settings leave out says so, instead of showing
    "connecting" for ever."""
    engine = TaskEngine(short_term=MemoryShortTermStore())
    api_app = create_app(engine, config=ServerConfig(cors_origins=("http://other.example",)))
    api = Harness(server=ServerThread(api_app), engine=engine, requests=EventsRequests(api_app))
    web_app = Starlette()
    TaskcastWidget(WidgetConfig(taskcast_url=api.server.url)).mount(web_app)
    web = ServerThread(web_app)
    api.server.start()
    web.start()
    try:
        await api.start_task("elsewhere")
        await page.navigate(f"{web.url}/widget/tasks/elsewhere")
        await page.wait_for(f"{ROOT}.dataset.connection === 'refused'")
        message = await page.evaluate(CONNECTION_ERROR)
        assert "CORS" in message and web.url in message, message
        assert (
            await page.evaluate(
                f"{ROOT}.querySelector('[data-tc-connection-error]').getAttribute('role')"
            )
            == "alert"
        )
    finally:
        web.stop()
        api.server.stop()


async def test_pending_task_waits_then_shows_its_failure(harness: Harness, page: Page) -> None:
    async def create() -> None:
        await harness.engine.create_task(TaskInput(id="chat-6"))

    await harness.run(create)
    await page.navigate(f"{harness.server.url}/widget/tasks/chat-6")
    # The server holds the stream of a pending task: connected, nothing sent yet.
    await page.wait_for(f"{ROOT}.dataset.connection === 'open'")
    assert await page.evaluate(f"{ROOT}.dataset.status") == "pending"

    async def run() -> None:
        await harness.engine.transition_task("chat-6", "running")

    await harness.run(run)
    await page.wait_for(f"{ROOT}.dataset.status === 'running'")
    await harness.publish("chat-6", CHUNKS[:1])

    async def fail() -> None:
        await harness.engine.transition_task(
            "chat-6", "failed", error={"message": "model <overloaded>", "code": "E1"}
        )

    await harness.run(fail)
    await page.wait_for(f"{ROOT}.dataset.connection === 'closed'")
    assert await page.evaluate(f"{ROOT}.dataset.status") == "failed"
    assert await page.evaluate("document.querySelector('.tc-error-text').textContent") == (
        "model <overloaded>"
    )
    assert await page.evaluate(TEXT) == CHUNKS[0]


async def test_replaced_task_is_cleared_and_rebuilt_from_its_new_history(
    harness: Harness, page: Page
) -> None:
    """An overwrite import ends the stream with `replaced`: the view clears and shows exactly
    the imported history, read by a new stream that carries no cursor."""
    await harness.start_task("chat-7")
    await page.navigate(f"{harness.server.url}/widget/tasks/chat-7")
    await page.wait_for(f"{ROOT}.dataset.connection === 'open'")
    await harness.publish("chat-7", CHUNKS[:EARLY])
    await page.wait_for(f"{TEXT} === {json.dumps(''.join(CHUNKS[:EARLY]))}")
    await page.evaluate(
        f"{ROOT}.addEventListener('taskcast:replaced', function () {{ window.replaced = true; }})"
    )
    delta = {"type": "llm.delta", "level": "info", "seriesId": "answer",
             "seriesMode": "accumulate"}  # fmt: skip
    events = [
        {"id": "n0", "index": 0, "type": "taskcast:status", "level": "info",
         "data": {"status": "running"}},
        {**delta, "id": "n1", "index": 1, "data": {"delta": "a new "}},
        {**delta, "id": "n2", "index": 2, "data": {"delta": "answer"}},
        {"id": "n3", "index": 3, "type": "taskcast:status", "level": "info",
         "data": {"status": "completed", "result": {"imported": True}}},
    ]  # fmt: skip
    archive = {
        "schema": "taskcast.taskArchive",
        "version": 1,
        "exportedAt": 1,
        "task": {"id": "chat-7", "status": "completed", "createdAt": 1, "updatedAt": 9,
                 "result": {"imported": True}},
        "events": [{**e, "taskId": "chat-7", "timestamp": 2 + i} for i, e in enumerate(events)],
    }  # fmt: skip
    before = len(harness.requests.cursors)
    async with httpx.AsyncClient(base_url=harness.server.url) as http:
        response = await http.post("/tasks/import", json={"archive": archive, "overwrite": True})
    assert response.status_code == 200, response.text
    await page.wait_for(f"{ROOT}.dataset.connection === 'closed'")
    assert await page.evaluate("window.replaced === true")
    state = await widget_state(page)
    assert state["texts"] == ["a new answer"]  # nothing of the old text, not doubled
    assert state["status"] == "completed"
    assert state["progress"] == []  # the old progress series is gone with the old history
    # running, the two deltas collapsed into one snapshot by the replay, completed.
    assert await page.evaluate("document.querySelectorAll('.tc-log-entry').length") == 3
    assert harness.requests.cursors[before:] == [None]  # one new stream, no cursor
