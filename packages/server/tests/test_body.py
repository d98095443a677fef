"""Request bodies on a real uvicorn: a client that leaves mid-body is not a server error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from taskcast.core import TaskEngine

pytestmark = pytest.mark.anyio

_LEFT = "client left during the request body"


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Taskcast's records from DEBUG up, and uvicorn's (which do not reach the root logger)."""
    caplog.set_level(logging.DEBUG, logger="taskcast")
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn_log.removeHandler(caplog.handler)


@pytest.mark.parametrize("path", ["/tasks", "/tasks/t1/events"])
async def test_a_client_leaving_mid_body_is_one_brief_debug_line(
    app: FastAPI,
    engine: TaskEngine,
    serve_app: Any,
    eventually: Any,
    server_log: pytest.LogCaptureFixture,
    path: str,
) -> None:
    """It used to log an ERROR with a 5 KB traceback per request: a log flood anyone could
    cause. Now each such request is one DEBUG line."""
    async with serve_app(app, engine) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            created = await client.post("/tasks", json={"id": "t1", "type": "demo"})
            assert created.status_code == 201
            await client.patch("/tasks/t1/status", json={"status": "running"})
        host, port = httpx.URL(url).host, httpx.URL(url).port
        for _ in range(3):
            _, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n".encode()
                + b'{"type": "par'
            )
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        def lines() -> list[logging.LogRecord]:
            return [r for r in server_log.records if _LEFT in r.getMessage()]

        await eventually(lambda: len(lines()) == 3)
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/tasks/t1")).status_code == 200
    for record in lines():
        assert record.levelno == logging.DEBUG
        assert record.exc_info is None
        assert record.getMessage() == f"{_LEFT}: POST {path} after 13 bytes"
    assert [r for r in server_log.records if r.levelno >= logging.WARNING] == []
