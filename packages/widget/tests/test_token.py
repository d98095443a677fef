"""Browser tokens: the stream URL carries ``?token=`` and a JWT-configured server accepts it."""

from __future__ import annotations

import html
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from taskcast.core import EventInput, MemoryShortTermStore, TaskEngine, TaskInput
from taskcast.server import JWTConfig, build_authenticator, create_app
from taskcast.server_sdk import mint_subscribe_token
from taskcast.widget import TaskcastWidget, WidgetConfig, widget_router

from ._cdp import CHROMIUM
from ._server import ServerThread

pytestmark = pytest.mark.anyio

SECRET = "w" * 32


def test_token_and_factory_are_added_to_the_stream_url() -> None:
    fixed = WidgetConfig(taskcast_url="/api", token="a+b/c=")
    assert fixed.events_url("t 1") == "/api/tasks/t%201/events?token=a%2Bb%2Fc%3D"
    seen: list[str] = []

    def factory(task_id: str) -> str:
        seen.append(task_id)
        return f"tok-{task_id}"

    config = WidgetConfig(token_factory=factory)
    assert config.events_url("x") == "/tasks/x/events?token=tok-x"
    assert seen == ["x"]
    assert WidgetConfig(token_factory=lambda _: "").events_url("x") == "/tasks/x/events"
    # Tokens are secrets: not in the config's repr (which ends up in logs).
    assert "tok" not in repr(config) and "a+b" not in repr(fixed)
    with pytest.raises(ValueError, match="not both"):
        WidgetConfig(token="t", token_factory=factory)


def test_render_embeds_the_token_escaped() -> None:
    widget = TaskcastWidget(WidgetConfig(token_factory=lambda task_id: f'"><{task_id}&'))
    markup = str(widget.render("t1"))
    (url,) = re.findall(r'data-events-url="([^"]*)"', markup)
    assert html.unescape(url) == "/tasks/t1/events?token=%22%3E%3Ct1%26"


def _events_url(page: str) -> str:
    (url,) = re.findall(r'data-events-url="([^"]*)"', page)
    return html.unescape(url)


@pytest.fixture
async def jwt_app() -> AsyncIterator[tuple[Any, TaskEngine]]:
    """The Taskcast API in jwt mode with the widget mounted, minting a token per page."""
    engine = TaskEngine(short_term=MemoryShortTermStore())
    authenticator = build_authenticator("jwt", jwt=JWTConfig(secret=SECRET))
    app = create_app(engine, authenticator=authenticator)
    app.mount(
        "/widget",
        widget_router(
            engine=engine, token_factory=lambda task_id: mint_subscribe_token(SECRET, task_id)
        ),
    )
    await engine.start()
    try:
        yield app, engine
    finally:
        await engine.stop()


async def test_a_jwt_server_accepts_the_pages_stream(jwt_app: tuple[Any, TaskEngine]) -> None:
    app, engine = jwt_app
    await engine.create_task(TaskInput(id="t1"))
    await engine.create_task(TaskInput(id="t2"))
    await engine.transition_task("t1", "running")
    await engine.publish_event("t1", EventInput(type="llm.delta", data={"delta": "hi"}))
    await engine.transition_task("t1", "completed")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        page = await client.get("/widget/tasks/t1")
        assert page.status_code == 200
        url = _events_url(page.text)
        assert url.startswith("/tasks/t1/events?token=")
        # A finished task's stream replays and ends, so the ASGI transport reads it whole.
        stream = await client.get(url)
        assert stream.status_code == 200
        assert '"delta":"hi"' in stream.text and "event: taskcast.done" in stream.text
        assert (await client.get("/tasks/t1/events")).status_code == 401
        # The token is for t1 only.
        other = url.replace("/tasks/t1/", "/tasks/t2/")
        assert (await client.get(other)).status_code == 403


@pytest.mark.browser
@pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) or os.environ.get("CI") == "true"),
    reason=f"Chromium not found at {CHROMIUM} (apt-get install -y chromium); required when CI=true",
)
async def test_the_browser_follows_a_live_task_with_a_token(
    jwt_app: tuple[Any, TaskEngine],
) -> None:
    from ._cdp import chromium_page

    app, engine = jwt_app
    server = ServerThread(app)
    server.start()
    root = "document.querySelector('[data-taskcast-widget]')"
    text = "(document.querySelector('.tc-text') || {textContent: ''}).textContent"

    async def call(coro: Any) -> Any:
        return await server.run(coro)

    try:
        await call(engine.create_task(TaskInput(id="live", type="llm.chat")))
        await call(engine.transition_task("live", "running"))
        async with chromium_page() as page:
            await page.navigate(f"{server.url}/widget/tasks/live")
            await page.wait_for(f"{root}.dataset.connection === 'open'")
            for chunk in ("Hello", ", world"):
                await call(
                    engine.publish_event(
                        "live",
                        EventInput(
                            type="llm.delta",
                            data={"delta": chunk},
                            series_id="answer",
                            series_mode="accumulate",
                        ),
                    )
                )
            await page.wait_for(f"{text} === 'Hello, world'")
            await call(engine.transition_task("live", "completed"))
            await page.wait_for(f"{root}.dataset.connection === 'closed'")
            assert await page.evaluate(f"{root}.dataset.status") == "completed"
            assert page.console == []
    finally:
        server.stop()
