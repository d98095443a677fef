"""SSEResponse at the ASGI boundary, with hand-made receive/send (deadlines, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from taskcast.core import StorageUnavailableError
from taskcast.server import SSEResponse

pytestmark = pytest.mark.anyio

SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}


class Recorder:
    def __init__(self, fail_after: int | None = None) -> None:
        self.messages: list[MutableMapping[str, Any]] = []
        self.fail_after = fail_after

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if self.fail_after is not None and len(self.messages) >= self.fail_after:
            raise OSError("client gone")
        self.messages.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


def receiver(disconnect: asyncio.Event | None = None) -> Any:
    async def receive() -> dict[str, Any]:
        if disconnect is None:
            await asyncio.Event().wait()
        else:
            await disconnect.wait()
        return {"type": "http.disconnect"}

    return receive


class Frames:
    """An async generator stand-in that records whether it was closed."""

    def __init__(
        self, items: list[bytes], *, then: BaseException | None = None, hang: bool = False
    ) -> None:
        self.items, self.then, self.hang = items, then, hang
        self.closed = False
        self.sent = 0

    async def gen(self) -> AsyncIterator[bytes]:
        try:
            for item in self.items:
                self.sent += 1
                yield item
            if self.then is not None:
                raise self.then
            if self.hang:
                await asyncio.Event().wait()
        finally:
            # Cleanup that awaits must still run after a disconnect.
            await asyncio.sleep(0)
            self.closed = True


async def test_writes_frames_and_headers() -> None:
    frames = Frames([b"a\n\n", b"b\n\n"])
    rec = Recorder()
    response = SSEResponse(frames.gen(), extra_headers={"X-Extra": "1"})
    async with asyncio.timeout(5):
        await response(SCOPE, receiver(), rec.send)
    start = rec.messages[0]
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert (b"x-extra", b"1") in start["headers"]
    assert rec.body == b"a\n\nb\n\n"
    assert rec.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert frames.closed


async def test_storage_error_mid_stream_ends_cleanly() -> None:
    frames = Frames([b"a\n\n"], then=StorageUnavailableError("redis"))
    rec = Recorder()
    async with asyncio.timeout(5):
        await SSEResponse(frames.gen())(SCOPE, receiver(), rec.send)
    assert rec.body == b"a\n\n"
    assert rec.messages[-1]["more_body"] is False
    assert frames.closed


async def test_disconnect_stops_a_waiting_stream(eventually: Any) -> None:
    frames = Frames([b"a\n\n"], hang=True)
    rec = Recorder()
    gone = asyncio.Event()
    call = asyncio.create_task(SSEResponse(frames.gen())(SCOPE, receiver(gone), rec.send))
    await eventually(lambda: frames.sent >= 1)
    gone.set()
    async with asyncio.timeout(5):
        await call
    assert frames.closed
    assert not call.cancelled()


async def test_write_failure_is_a_disconnect() -> None:
    frames = Frames([b"a\n\n"] * 5, hang=True)
    rec = Recorder(fail_after=3)
    async with asyncio.timeout(5):
        await SSEResponse(frames.gen())(SCOPE, receiver(), rec.send)
    assert frames.closed
    assert len(rec.messages) == 3


async def test_outside_cancellation_propagates() -> None:
    frames = Frames([], hang=True)
    call = asyncio.create_task(SSEResponse(frames.gen())(SCOPE, receiver(), Recorder().send))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert frames.closed


async def test_plain_async_iterator_without_aclose() -> None:
    class Once:
        def __init__(self) -> None:
            self.done = False

        def __aiter__(self) -> Once:
            return self

        async def __anext__(self) -> bytes:
            if self.done:
                raise StopAsyncIteration
            self.done = True
            return b"x\n\n"

    rec = Recorder()
    await SSEResponse(Once())(SCOPE, receiver(), rec.send)
    assert rec.body == b"x\n\n"
