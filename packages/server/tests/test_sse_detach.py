"""SSEDetach: SSE bodies stream after the FastAPI stack has returned (idle-memory fast path)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from starlette.middleware.base import BaseHTTPMiddleware

from taskcast.core import EventInput, TaskEngine, TaskInput
from taskcast.server import ServerConfig, create_app
from taskcast.server._sse import HANDOFF_KEY, SSEDetach, SSEResponse

pytestmark = pytest.mark.anyio


def scope_for(path: str = "/tasks/t/events", method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


async def never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def gone() -> dict[str, Any]:
    return {"type": "http.disconnect"}


class Recorder:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.messages: list[MutableMapping[str, Any]] = []
        self.fail = fail
        self.stack_returned_at_first_body: bool | None = None
        self.stack_returned = False

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if self.fail is not None:
            raise self.fail
        if message["type"] == "http.response.body" and self.stack_returned_at_first_body is None:
            self.stack_returned_at_first_body = self.stack_returned
        self.messages.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


class Closable:
    """An async iterator of frames with ``aclose`` (records whether it was closed)."""

    def __init__(self, items: list[bytes]) -> None:
        self.items = list(items)
        self.closed = False

    def __aiter__(self) -> Closable:
        return self

    async def __anext__(self) -> bytes:
        if not self.items:
            raise StopAsyncIteration
        return self.items.pop(0)

    async def aclose(self) -> None:
        self.closed = True


async def test_body_streams_after_the_stack_returns() -> None:
    rec = Recorder()
    frames = Closable([b"a", b"b"])

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        scope["fastapi_astack"] = object()  # what routing leaves in the scope
        await SSEResponse(frames)(scope, receive, send)
        rec.stack_returned = True

    scope = scope_for()
    await SSEDetach(inner)(scope, never, rec.send)
    assert rec.messages[0]["status"] == 200
    assert rec.body == b"ab"
    assert rec.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert rec.stack_returned_at_first_body is True
    assert frames.closed
    # Routing worked on a copy: the server's scope (kept for the connection) is untouched.
    assert set(scope) == {"type", "method", "path", "headers"}


@pytest.mark.parametrize(
    ("path", "method"), [("/tasks/t/events", "POST"), ("/health", "GET"), ("/x", "GET")]
)
async def test_other_requests_pass_through(path: str, method: str) -> None:
    seen: list[Any] = []
    rec = Recorder()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(HANDOFF_KEY in scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await SSEDetach(inner)(scope_for(path, method), never, rec.send)
    assert seen == [False]
    assert [m["type"] for m in rec.messages] == ["http.response.start", "http.response.body"]


async def test_lifespan_passes_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await SSEDetach(inner)({"type": "lifespan"}, never, Recorder().send)
    assert seen == ["lifespan"]


async def test_error_response_is_not_detached() -> None:
    rec = Recorder()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b'{"error":"x"}'})

    await SSEDetach(inner)(scope_for(), never, rec.send)
    assert rec.body == b'{"error":"x"}'
    assert len(rec.messages) == 2


async def test_buffering_middleware_keeps_the_stream_in_place() -> None:
    """A middleware that holds the status line back: the stream is not detached."""
    rec = Recorder()
    frames = Closable([b"x"])

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        held: list[Any] = []

        async def buffer(message: Any) -> None:
            held.append(message)

        await SSEResponse(frames)(scope, gone, buffer)
        for message in held:
            await send(message)
        rec.stack_returned = True

    await SSEDetach(inner)(scope_for(), never, rec.send)
    assert rec.body == b"x"
    assert rec.stack_returned_at_first_body is False
    assert frames.closed


async def test_app_error_after_handoff_closes_the_frames() -> None:
    frames = Closable([b"x"])

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await SSEResponse(frames)(scope, receive, send)
        raise RuntimeError("middleware failed on the way out")

    with pytest.raises(RuntimeError):
        await SSEDetach(inner)(scope_for(), never, Recorder().send)
    assert frames.closed


async def test_status_line_write_failure() -> None:
    frames = Closable([b"x"])
    await SSEResponse(frames)(scope_for(), never, Recorder(OSError("gone")).send)
    assert frames.closed
    frames = Closable([b"x"])
    with pytest.raises(RuntimeError):
        await SSEResponse(frames)(scope_for(), never, Recorder(RuntimeError("bug")).send)
    assert frames.closed


async def test_detached_stream_keeps_cors_metrics_and_live_delivery(
    engine: TaskEngine, serve_app: Any, open_sse: Any, eventually: Any
) -> None:
    config = ServerConfig(cors_origins=("http://a.example",), metrics=True)
    app = create_app(engine, config=config)
    task = await engine.create_task(TaskInput())
    await engine.transition_task(task.id, "running")
    async with serve_app(app, engine) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        headers = {"Origin": "http://a.example"}
        async with open_sse(c, f"/tasks/{task.id}/events", headers=headers) as s:
            assert s.response.headers["access-control-allow-origin"] == "http://a.example"
            await eventually(lambda: engine.hub.count(task.id) == 1)
            await engine.publish_event(task.id, EventInput(type="live.one"))
            frames = await s.events_until(lambda f: f.data["type"] == "live.one")
            assert frames[-1].data["type"] == "live.one"
        assert app.state.metrics.sse_opened == 1
        # The client left: the detached stream notices and releases its subscription.
        await eventually(lambda: engine.hub.count(task.id) == 0)
        async with open_sse(c, "/events", headers=headers) as g:
            assert g.response.headers["access-control-allow-origin"] == "http://a.example"
            await eventually(lambda: engine.hub.count(None) == 1)
        assert app.state.metrics.sse_opened == 2
        await eventually(lambda: engine.hub.count(None) == 0)


async def test_client_that_stops_reading_is_cut_after_the_write_timeout() -> None:
    frames = Closable([b"a", b"b"])
    started: list[Any] = []

    async def stuck(message: Any) -> None:
        started.append(message)
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the socket buffers are full

    async with asyncio.timeout(5):
        await SSEResponse(frames, write_timeout=0.1)(scope_for(), never, stuck)
    assert frames.closed
    assert [m["type"] for m in started] == ["http.response.start", "http.response.body"]


async def test_non_disconnect_messages_are_ignored() -> None:
    frames = Closable([])
    messages = [{"type": "http.request", "body": b""}, {"type": "http.disconnect"}]
    hold = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not messages:
            await asyncio.Event().wait()
        if len(messages) == 1:
            await hold.wait()
        return messages.pop(0)

    class Hang(Closable):
        async def __anext__(self) -> bytes:
            hold.set()
            await asyncio.Event().wait()
            raise StopAsyncIteration

    frames = Hang([])
    rec = Recorder()
    async with asyncio.timeout(5):
        await SSEResponse(frames)(scope_for(), receive, rec.send)
    assert frames.closed
    assert not messages


async def test_buffering_middleware_added_to_the_app_still_streams(
    engine: TaskEngine, serve_app: Any, open_sse: Any
) -> None:
    app = create_app(engine)
    seen: list[str] = []

    async def dispatch(request: Any, call_next: Any) -> Any:
        seen.append(request.url.path)
        return await call_next(request)

    app.add_middleware(BaseHTTPMiddleware, dispatch=dispatch)
    task = await engine.create_task(TaskInput())
    await engine.transition_task(task.id, "running")
    async with (
        serve_app(app, engine) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as c,
        open_sse(c, f"/tasks/{task.id}/events") as s,
    ):
        await engine.publish_event(task.id, EventInput(type="live.one"))
        frames = await s.events_until(lambda f: f.data["type"] == "live.one")
        assert frames[-1].data["type"] == "live.one"
    assert seen == [f"/tasks/{task.id}/events"]


class _Transport:
    def __init__(self, protocol: Any) -> None:
        self.written: list[bytes] = []
        self.protocol = protocol
        self.closed = False
        self.reading = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            # As asyncio's transports do: the protocol hears of it on the next loop turn.
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class _UvicornProtocol:
    """What take_over needs of uvicorn's HttpToolsProtocol."""

    def __init__(self) -> None:
        import logging

        from uvicorn.protocols.http.flow_control import FlowControl
        from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

        self.transport = _Transport(self)
        self.flow = FlowControl(self.transport)  # type: ignore[arg-type]
        self.flow.pause_reading()
        self.tasks: set[Any] = set()
        self.connections: set[Any] = {self}
        self.cycle = RequestResponseCycle(
            scope=scope_for(),  # type: ignore[arg-type]
            transport=self.transport,  # type: ignore[arg-type]
            flow=self.flow,
            logger=logging.getLogger("test"),
            access_logger=logging.getLogger("test"),
            access_log=False,
            default_headers=[],
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=True,
            on_response=lambda: None,
        )

    def connection_lost(self, exc: Exception | None) -> None:
        pass


async def test_take_over_only_from_uvicorn_httptools_after_the_status_line() -> None:
    from taskcast.server._takeover import take_over

    assert take_over(Recorder().send) is None  # any other server, or a wrapped send
    uvicorn = _UvicornProtocol()
    assert take_over(uvicorn.cycle.send) is None  # type: ignore[arg-type]  # nothing sent yet
    await uvicorn.cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    other = _UvicornProtocol()  # a cycle that is not the transport's current one
    await other.cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    other.transport.protocol = object()
    assert take_over(other.cycle.send) is None  # type: ignore[arg-type]

    connection = take_over(uvicorn.cycle.send)  # type: ignore[arg-type]
    assert connection is not None
    assert uvicorn.transport.protocol is connection
    assert uvicorn.connections == {connection}  # uvicorn forgets its protocol (ours counts)...
    assert uvicorn.cycle.response_complete  # ...and its request task returns quietly
    assert uvicorn.transport.reading  # EOF from the client is noticed

    async def frames() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    writers: list[Any] = []
    connection.start(frames(), write_timeout=5, attach=writers.append)
    [task] = uvicorn.tasks  # graceful shutdown waits for it
    await task
    assert uvicorn.tasks == set()
    assert uvicorn.transport.written[-3:] == [
        b"9\r\ndata: 1\n\n\r\n",  # the same chunked framing as uvicorn's send
        b"9\r\ndata: 2\n\n\r\n",
        b"0\r\n\r\n",
    ]
    assert uvicorn.transport.closed
    await asyncio.sleep(0)  # the transport reports the close on the next loop turn
    assert uvicorn.connections == set()  # a closed stream no longer counts
    assert writers == [connection.write]
    assert not connection.write(b"late")  # closed


async def test_taken_over_connection_waits_for_a_paused_client_then_cuts_it() -> None:
    from taskcast.server._takeover import take_over

    uvicorn = _UvicornProtocol()
    await uvicorn.cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    connection = take_over(uvicorn.cycle.send)  # type: ignore[arg-type]
    assert connection is not None
    sent = asyncio.Event()
    proceed = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        yield b"a"
        sent.set()
        await proceed.wait()
        yield b"b"

    connection.pause_writing()
    connection.start(frames(), write_timeout=0.05, attach=None)
    [task] = uvicorn.tasks
    await asyncio.sleep(0.01)
    head = uvicorn.transport.written[:]  # the status line
    assert len(head) == 1  # the first chunk waits for the client
    connection.resume_writing()
    await sent.wait()
    assert uvicorn.transport.written == [*head, b"1\r\na\r\n"]
    connection.pause_writing()  # the client stops reading: cut after the write timeout
    proceed.set()
    await asyncio.wait_for(task, 2)
    assert uvicorn.transport.closed
    assert uvicorn.transport.written == [*head, b"1\r\na\r\n"]


async def test_client_leaving_a_taken_over_connection_closes_the_stream() -> None:
    from taskcast.server._takeover import take_over

    uvicorn = _UvicornProtocol()
    await uvicorn.cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    connection = take_over(uvicorn.cycle.send)  # type: ignore[arg-type]
    assert connection is not None
    closed = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            await asyncio.Event().wait()
            yield b"never"
        finally:
            closed.set()

    connection.start(frames(), write_timeout=5, attach=None)
    [task] = uvicorn.tasks
    await asyncio.sleep(0.01)
    connection.data_received(b"ignored")
    assert connection.eof_received() is False
    connection.connection_lost(None)
    await asyncio.wait_for(task, 2)
    assert closed.is_set()
    assert b"0\r\n\r\n" not in uvicorn.transport.written
