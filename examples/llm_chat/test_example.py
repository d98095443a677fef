"""The LLM chat example end to end over HTTP: a Taskcast server, the web app and the worker,
each on its own loopback port or thread, as the README runs them.

Asks a question through the app's form, lets the worker stream the fake answer, and
follows the task's stream as the page's browser does (including a refresh mid-answer:
a fresh stream without cursor, which must rebuild exactly the text so far).
"""

from __future__ import annotations

import importlib.util
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn

from taskcast.client import Resync, TaskcastClient
from taskcast.core import MemoryShortTermStore, TaskEngine
from taskcast.server import JWTConfig, ServerConfig, build_authenticator, create_app, mint_token

HERE = Path(__file__).resolve().parent
SECRET = "chat-example-secret-of-32-bytes!"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Serve:
    """uvicorn in a thread on a loopback port."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _load(name: str) -> ModuleType:
    # Each test loads its own copy: the modules read their settings from the environment.
    spec = importlib.util.spec_from_file_location(
        f"{name}_{time.monotonic_ns()}", HERE / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Deployment:
    taskcast: str
    app: str
    worker: ModuleType
    token: str | None


@pytest.fixture(params=["no-auth", "jwt"])
def deployment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    jwt = request.param == "jwt"
    taskcast_port, app_port = _free_port(), _free_port()
    app_origin = f"http://127.0.0.1:{app_port}"
    engine = TaskEngine(short_term=MemoryShortTermStore())
    # As `taskcast start --cors-origin http://127.0.0.1:8000` (the README's command).
    config = ServerConfig(cors_origins=(app_origin,))
    authenticator = build_authenticator("jwt", jwt=JWTConfig(secret=SECRET)) if jwt else None
    taskcast = _Serve(create_app(engine, config=config, authenticator=authenticator), taskcast_port)
    taskcast_url = f"http://127.0.0.1:{taskcast_port}"
    # The backend's own token (app and worker): every scope, on every task.
    token = mint_token(SECRET, scope=["*"], ttl_seconds=600) if jwt else None
    monkeypatch.setenv("TASKCAST_URL", taskcast_url)
    for name in ("TASKCAST_PUBLIC_URL", "TASKCAST_JWT_SECRET", "TASKCAST_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if jwt:
        assert token is not None
        monkeypatch.setenv("TASKCAST_JWT_SECRET", SECRET)
        monkeypatch.setenv("TASKCAST_TOKEN", token)
    chat_app = _load("chat_app")
    worker = _load("chat_worker")
    worker.CHUNK_DELAY = 0.005  # a quick answer, still many chunks
    app = _Serve(chat_app.app, app_port)
    try:
        yield Deployment(taskcast=taskcast_url, app=app_origin, worker=worker, token=token)
    finally:
        app.stop()
        taskcast.stop()


def _events_url(page: str) -> str:
    (url,) = re.findall(r'data-events-url="([^"]*)"', page)
    return unescape(url)


def _follow(events_url: str, *, stop_after: int | None = None) -> tuple[str, str | None]:
    """Read a task's stream as the widget does: the text of the ``answer`` series."""
    base, _, rest = events_url.partition("/tasks/")
    task_id = rest.split("/")[0]
    token = events_url.partition("?token=")[2] or None
    text = ""
    seen = 0
    with TaskcastClient(base, token=token) as client, client.subscribe(task_id) as sub:
        for item in sub:
            if isinstance(item, Resync) or item.series_id != "answer":
                continue
            text = item.data["delta"] if item.series_snapshot else text + item.data["delta"]
            seen += 1
            if stop_after is not None and seen >= stop_after:
                return text, None
        return text, sub.done_reason


def test_ask_stream_refresh_and_finish(deployment: Deployment) -> None:
    stop = threading.Event()
    answered: list[int] = []
    from taskcast.server_sdk import TaskcastServerClient

    with TaskcastServerClient(deployment.taskcast, token=deployment.token) as sdk:
        worker = threading.Thread(
            target=lambda: answered.append(deployment.worker.work(sdk, stop=stop, poll=0.02))
        )
        with httpx.Client(base_url=deployment.app, timeout=10) as browser:
            form = browser.get("/")
            assert form.status_code == 200 and 'action="/chat"' in form.text
            assert browser.post("/chat", data={"prompt": "  "}).headers["location"] == "/"
            asked = browser.post("/chat", data={"prompt": "Why <streams>?"})
            assert asked.status_code == 303
            location = asked.headers["location"]
            task_id = location.rsplit("/", 1)[1]
            page = browser.get(location)
            assert page.status_code == 200
            assert "Why &lt;streams&gt;?" in page.text
            assert page.headers["cache-control"] == "no-store"
            events_url = _events_url(page.text)
            prefix = f"{deployment.taskcast}/tasks/{task_id}/events"
            if deployment.token is None:
                assert events_url == prefix
            else:
                assert events_url.startswith(prefix + "?token=")
            # The page's origin may read the Taskcast server's streams (CORS).
            preflight = httpx.options(
                events_url,
                headers={"Origin": deployment.app, "Access-Control-Request-Method": "GET"},
            )
            assert preflight.headers["access-control-allow-origin"] == deployment.app
            assert browser.get("/widget/static/taskcast-widget.js").status_code == 200
            assert browser.get("/chat/no-such-task").status_code == 404

            # The model pauses after 20 chunks until the first page has gone, so that the
            # refresh surely happens mid-answer.
            resume = threading.Event()
            model = deployment.worker.fake_llm

            def paused(prompt: str) -> Iterator[str]:
                for i, chunk in enumerate(model(prompt)):
                    if i == 20:
                        resume.wait(10)
                    yield chunk

            deployment.worker.fake_llm = paused
            worker.start()
            try:
                # The first page sees part of the text, then is refreshed.
                partial, _ = _follow(events_url, stop_after=1)
                refreshed = _events_url(browser.get(location).text)
                # The answer goes on while the new page replays what it missed.
                threading.Timer(0.05, resume.set).start()
                full, reason = _follow(refreshed)
            finally:
                resume.set()
                stop.set()
                worker.join(10)
            deployment.worker.fake_llm = model
    expected = "".join(deployment.worker.fake_llm("Why <streams>?"))
    assert reason == "completed"
    assert full == expected
    assert partial and expected.startswith(partial) and partial != expected
    assert answered == [1]
    # A finished task replays whole, collapsed: what a page opened later shows.
    assert _follow(refreshed) == (expected, "completed")
    with TaskcastServerClient(deployment.taskcast, token=deployment.token) as sdk:
        task = sdk.get_task(task_id)
    assert task.status == "completed"
    assert task.result == {"characters": len(expected), "chunks": len(range(0, len(expected), 7))}


def test_a_claimed_task_is_left_to_its_worker(deployment: Deployment) -> None:
    from taskcast.server_sdk import TaskcastServerClient

    with TaskcastServerClient(deployment.taskcast, token=deployment.token) as sdk:
        task = sdk.create_task(type="llm.chat", params={"prompt": "x"})
        sdk.transition_task(task.id, "running")  # another worker got there first
        assert deployment.worker.answer(sdk, task.id, "x") is False
        assert sdk.get_history(task.id)[-1].type == "taskcast:status"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
