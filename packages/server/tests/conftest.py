from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from taskcast.core import MemoryShortTermStore, TaskEngine
from taskcast.server import ServerConfig, create_app


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def engine() -> TaskEngine:
    return TaskEngine(short_term=MemoryShortTermStore())


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig(heartbeat_seconds=0.2, retry_ms=1500)


@pytest.fixture
def app(engine: TaskEngine, config: ServerConfig) -> FastAPI:
    return create_app(engine, config=config)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test runner owns the signals.
        yield


@contextlib.asynccontextmanager
async def serve(app: Any, engine: TaskEngine | None = None) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on a loopback port in this event loop; yield its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if engine is not None:
            engine.hub.shutdown()
        server.should_exit = True
        await task


@pytest.fixture
async def live(app: FastAPI, engine: TaskEngine) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to ``app`` served by a real uvicorn on a loopback port."""
    async with serve(app, engine) as url:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
            yield c


@dataclass
class Frame:
    event: str | None = None
    data: Any = None
    id: str | None = None
    comment: str | None = None
    retry: int | None = None


def parse_frame(raw: str) -> Frame:
    frame = Frame()
    for line in raw.split("\n"):
        if line.startswith(":"):
            frame.comment = line[1:].strip()
        elif line.startswith("event: "):
            frame.event = line[7:]
        elif line.startswith("data: "):
            frame.data = json.loads(line[6:])
        elif line.startswith("id: "):
            frame.id = line[4:]
        elif line.startswith("retry: "):
            frame.retry = int(line[7:])
    return frame


class Stream:
    """Reads SSE frames from an open httpx streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.aiter_text()
        self._buffer = ""
        self.ended = False

    async def next(self) -> Frame | None:
        while "\n\n" not in self._buffer:
            try:
                self._buffer += await self._chunks.__anext__()
            except StopAsyncIteration:
                self.ended = True
                return None
        raw, self._buffer = self._buffer.split("\n\n", 1)
        return parse_frame(raw)

    async def events_until(self, predicate: Any) -> list[Frame]:
        """Frames (comments and retry hints skipped) until ``predicate(frame)`` or the end."""
        out: list[Frame] = []
        while True:
            frame = await self.next()
            if frame is None:
                return out
            if frame.event is None:
                continue
            out.append(frame)
            if predicate(frame):
                return out

    async def rest(self) -> list[Frame]:
        """Every frame up to the end of the response (comments included)."""
        out: list[Frame] = []
        while (frame := await self.next()) is not None:
            out.append(frame)
        return out


@contextlib.asynccontextmanager
async def sse(client: httpx.AsyncClient, path: str, **kwargs: Any) -> AsyncIterator[Stream]:
    async with client.stream("GET", path, **kwargs) as response:
        assert response.status_code == 200, response.status_code
        yield Stream(response)


@pytest.fixture
def open_sse() -> Any:
    """``async with open_sse(client, path, params=...) as stream`` (see :class:`Stream`)."""
    return sse


@pytest.fixture
def serve_app() -> Any:
    """``async with serve_app(app, engine) as base_url`` runs another app on uvicorn."""
    return serve


async def _eventually(predicate: Any, timeout: float = 10.0) -> None:
    """Wait (with a deadline) until ``predicate()`` holds: state owned by another task."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling engine state that has no event to wait on
            await asyncio.sleep(0.01)


@pytest.fixture
def eventually() -> Any:
    return _eventually
