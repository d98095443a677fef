"""Scripted SSE answers behind ``httpx.MockTransport`` for the client's unit tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def envelope(
    index: int, *, fi: int | None = None, type: str = "llm.delta", data: Any = None
) -> dict[str, Any]:
    return {
        "filteredIndex": index if fi is None else fi,
        "rawIndex": index,
        "eventId": f"E{index}",
        "taskId": "t1",
        "type": type,
        "timestamp": 1000 + index,
        "level": "info",
        "data": {"delta": str(index)} if data is None else data,
    }


def event_frame(index: int, **kwargs: Any) -> bytes:
    body = envelope(index, **kwargs)
    return f"event: taskcast.event\ndata: {json.dumps(body)}\nid: E{index}\n\n".encode()


def done_frame(reason: str = "completed") -> bytes:
    return f'event: taskcast.done\ndata: {{"reason": "{reason}"}}\n\n'.encode()


class ScriptedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that yields frames, then optionally fails like a dropped socket."""

    def __init__(self, frames: list[bytes], error: Exception | None = None) -> None:
        self.frames = frames
        self.error = error
        self.closed = False
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for frame in self.frames:
            self.sent += 1
            yield frame
        if self.error is not None:
            raise self.error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for frame in self.frames:
            self.sent += 1
            yield frame
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """Answers successive requests from a list; records every request."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.requests: list[httpx.Request] = []
        self.streams: list[ScriptedStream] = []

    def stream(
        self,
        *frames: bytes,
        error: Exception | None = None,
        content_type: str = "text/event-stream",
    ) -> Script:
        body = ScriptedStream(list(frames), error)
        self.streams.append(body)
        self.answers.append(
            httpx.Response(200, headers={"content-type": content_type}, stream=body)
        )
        return self

    def status(self, code: int, body: Any = None) -> Script:
        self.answers.append(
            httpx.Response(code, json=body if body is not None else {"error": f"E{code}"})
        )
        return self

    def fail(self, error: Exception) -> Script:
        self.answers.append(error)
        return self

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError("unexpected extra request")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def frames() -> Any:
    class Frames:
        event = staticmethod(event_frame)
        done = staticmethod(done_frame)
        envelope = staticmethod(envelope)

    return Frames


# -- a real server on a loopback port -------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A Taskcast server (memory store) run by uvicorn on a thread."""

    def __init__(self, authenticator: Any = None, heartbeat_seconds: float = 0.2) -> None:
        import threading

        import uvicorn

        from taskcast.core import MemoryShortTermStore, TaskEngine
        from taskcast.server import ServerConfig, create_app

        self.engine = TaskEngine(short_term=MemoryShortTermStore())
        app = create_app(
            self.engine,
            config=ServerConfig(retry_ms=50, heartbeat_seconds=heartbeat_seconds),
            authenticator=authenticator,
        )
        self.port = free_port()
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


@pytest.fixture
def port() -> int:
    return free_port()


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
