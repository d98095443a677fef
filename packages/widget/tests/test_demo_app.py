"""The runnable example of the docs works: pages render and the stream ends in completion."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from ._server import ServerThread

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "demo_app.py"


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("taskcast_widget_demo_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vars(module)["DELAY"] = 0  # no pauses between words in the test
    return module


@pytest.fixture
async def demo() -> AsyncIterator[tuple[ModuleType, str]]:
    module = load_demo()
    server = ServerThread(module.app)
    server.start()
    try:
        yield module, server.url
    finally:
        server.stop()


async def test_demo_streams_an_answer_to_completion(demo: tuple[ModuleType, str]) -> None:
    module, url = demo
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        start = await http.get("/")
        assert start.status_code == 303
        page_url = start.headers["location"]
        task_id = page_url.rsplit("/", 1)[1]
        page = await http.get(page_url)
        assert page.status_code == 200
        assert f'data-events-url="/taskcast/tasks/{task_id}/events"' in page.text
        assert (await http.get("/widget/static/taskcast-widget.js")).status_code == 200

        text = ""
        async with http.stream("GET", f"/taskcast/tasks/{task_id}/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event: taskcast.done"):
                    break
                if line.startswith("data:"):
                    envelope = json.loads(line[5:])
                    if envelope.get("seriesId") == "answer":
                        delta = envelope["data"]["delta"]
                        text = delta if envelope.get("seriesSnapshot") else text + delta
        assert text == module.ANSWER

        embed = await http.get(f"/embed/{task_id}")
        assert embed.status_code == 200
        assert "<h1>My app</h1>" in embed.text
        assert module.ANSWER in embed.text
        assert 'data-status="completed"' in embed.text
