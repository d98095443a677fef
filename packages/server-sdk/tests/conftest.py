"""An in-memory fake of the Taskcast REST API behind ``httpx.MockTransport``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

_ids = itertools.count(1)
_TERMINAL = {"completed", "failed", "timeout", "cancelled"}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


class FakeServer:
    """Enough of the server to exercise the SDK: tasks, transitions, events, history.

    ``fail_next`` queues canned answers (a response, or an exception to raise) that are
    served before the real handling, one per request.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.keys: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.canned: list[httpx.Response | Exception] = []

    def fail_next(self, *answers: httpx.Response | Exception) -> None:
        self.canned.extend(answers)

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.canned:
            answer = self.canned.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return self.route(request)

    def route(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        method = request.method
        if parts == [""]:
            return httpx.Response(
                200,
                json={
                    "name": "taskcast",
                    "version": "9.9",
                    "apiVersion": "v1",
                    "links": {"health": "/health"},
                },
            )
        if parts == ["health"]:
            return httpx.Response(
                200, json={"ok": True, "name": "taskcast", "version": "9.9", "apiVersion": "v1"}
            )
        if parts == ["tasks"] and method == "POST":
            body = json.loads(request.content)
            tid = body.get("id") or f"T{next(_ids)}"
            if tid in self.tasks:
                return httpx.Response(409, json={"error": f"Task already exists: {tid}"})
            task = {"id": tid, "status": "pending", "createdAt": 1, "updatedAt": 1}
            for key in ("type", "params", "metadata", "ttl", "tags", "result", "cost"):
                if key in body:
                    task[key] = body[key]
            self.tasks[tid] = task
            self.events[tid] = []
            return httpx.Response(201, json=task)
        if parts == ["tasks"] and method == "GET":
            tasks = list(self.tasks.values())
            status = request.url.params.get("status")
            if status:
                tasks = [t for t in tasks if t["status"] in status.split(",")]
            start = int(request.url.params.get("cursor", "0"))
            limit = int(request.url.params.get("limit", "1000"))
            page = tasks[start : start + limit]
            out: dict[str, Any] = {"tasks": [dict(t, hot=False, subscriberCount=0) for t in page]}
            if start + limit < len(tasks):
                out["nextCursor"] = str(start + limit)
            return httpx.Response(200, json=out)
        tid = parts[1]
        found = self.tasks.get(tid)
        if found is None:
            return httpx.Response(404, json={"error": f"Task not found: {tid}"})
        task = found
        rest = parts[2:]
        if not rest and method == "GET":
            return httpx.Response(200, json=dict(task, hot=True, subscriberCount=2))
        if not rest and method == "DELETE":
            del self.tasks[tid]
            return httpx.Response(204)
        if rest == ["status"]:
            body = json.loads(request.content)
            return self.transition(task, body)
        if rest == ["resolve"]:
            if task["status"] != "blocked":
                return httpx.Response(400, json={"error": "Task is not blocked"})
            data = json.loads(request.content).get("data")
            return self.transition(task, {"status": "running", "result": data})
        if rest == ["request"]:
            if "blockedRequest" not in task:
                return httpx.Response(404, json={"error": "No blocked request"})
            return httpx.Response(200, json=task["blockedRequest"])
        if rest == ["events"] and method == "POST":
            body = json.loads(request.content)
            if task["status"] in _TERMINAL:
                return httpx.Response(
                    400,
                    json={"error": f"Cannot publish to task in terminal status: {task['status']}"},
                )
            items = body if isinstance(body, list) else [body]
            stored = [self.publish(tid, item) for item in items]
            return httpx.Response(201, json=stored if isinstance(body, list) else stored[0])
        if rest == ["events", "history"]:
            return httpx.Response(200, json=self.events[tid])
        return httpx.Response(404, json={"error": "Not found"})

    def transition(self, task: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
        if task["status"] in _TERMINAL or task["status"] == body["status"]:
            return httpx.Response(
                409, json={"error": f"Invalid transition: {task['status']} \u2192 {body['status']}"}
            )
        task["status"] = body["status"]
        for key in ("result", "error", "reason", "ttl", "blockedRequest"):
            if key in body:
                task[key] = body[key]
        self.publish(
            task["id"],
            {"type": "taskcast:status", "level": "info", "data": {"status": body["status"]}},
        )
        return httpx.Response(200, json=task)

    def publish(self, tid: str, item: dict[str, Any]) -> dict[str, Any]:
        key = item.get("idempotencyKey")
        if key is not None and (tid, key) in self.keys:
            return self.keys[(tid, key)]
        events = self.events[tid]
        event = {
            "id": f"E{next(_ids)}",
            "taskId": tid,
            "index": len(events),
            "timestamp": 5,
            **{k: v for k, v in item.items()},
        }
        events.append(event)
        if key is not None:
            self.keys[(tid, key)] = event
        return event

    def text(self, tid: str, field: str = "delta", series: str = "output") -> str:
        return "".join(e["data"][field] for e in self.events[tid] if e.get("seriesId") == series)

    def count(self, predicate: Callable[[httpx.Request], bool]) -> int:
        return sum(1 for r in self.requests if predicate(r))


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


# -- a real server on a loopback port -------------------------------------------------------


class LiveServer:
    """A Taskcast server (memory store) run by uvicorn on a thread."""

    def __init__(self, authenticator: Any = None) -> None:
        import socket
        import threading

        import uvicorn

        from taskcast.core import MemoryShortTermStore, TaskEngine
        from taskcast.server import create_app

        app = create_app(TaskEngine(short_term=MemoryShortTermStore()), authenticator=authenticator)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                timeout_graceful_shutdown=2,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    server = LiveServer().start()
    yield server
    server.stop()


def token_authenticator() -> Any:
    """Bearer ``admin`` may do anything, ``writer`` only create tasks; the rest get 401."""
    from taskcast.server import AuthContext, Authenticator, AuthError

    class Tokens(Authenticator):
        mode = "custom"

        async def authenticate(self, request: Any) -> AuthContext:
            header = request.headers.get("authorization", "")
            if header == "Bearer admin":
                return AuthContext(sub="admin")
            if header == "Bearer writer":
                return AuthContext(sub="writer", scopes=frozenset({"task:create"}))
            raise AuthError(401, "Invalid or expired token")

    return Tokens()


@pytest.fixture(scope="module")
def auth_live() -> Iterator[LiveServer]:
    server = LiveServer(token_authenticator()).start()
    yield server
    server.stop()
