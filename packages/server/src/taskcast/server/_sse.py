"""The SSE response: a hand-written ASGI response around pre-encoded frames.

Frames come from :class:`taskcast.core.TaskStream` already encoded (one JSON encode per
event and wire shape, shared by every subscriber), so the response only writes bytes. One
helper task per connection listens for ``http.disconnect`` and cancels the stream once;
nothing is spawned per event. FastAPI's ``EventSourceResponse`` would add memory streams, a task
group and an encode per event per connection (architecture §7).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskcast.core import DELETED_EVENT, EventFilter, Hub, TaskcastError

from ._takeover import take_over

__all__ = [
    "HANDOFF_KEY",
    "SSEDetach",
    "SSEHandoff",
    "SSEResponse",
    "global_frames",
]

logger = logging.getLogger(__name__)

_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]
_SLOW: Final = b": slow consumer, resume with Last-Event-ID\n\n"
HEARTBEAT: Final = b": ping\n\n"
# Scope key of the SSEHandoff that SSEDetach puts into the scope of GET .../events requests.
HANDOFF_KEY: Final = "taskcast.sse_handoff"


def retry_frame(ms: int) -> bytes:
    return b"retry: " + str(ms).encode() + b"\n\n"


class SSEResponse(Response):
    """Streams an async iterator of complete SSE frames until it ends or the client leaves."""

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        extra_headers: dict[str, str] | None = None,
        *,
        write_timeout: float = 30.0,
        attach: Callable[[Callable[[bytes], bool]], None] | None = None,
    ):
        super().__init__(status_code=200)
        self._frames = frames
        self._attach = attach
        self._extra = [(k.lower().encode(), v.encode()) for k, v in (extra_headers or {}).items()]
        self._write_timeout = write_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handoff = scope.get(HANDOFF_KEY)
        try:
            # The status line goes through the app's middleware (CORS headers, metrics).
            await send(
                {"type": "http.response.start", "status": 200, "headers": [*_HEADERS, *self._extra]}
            )
        except OSError:
            logger.debug("SSE client disconnected before the stream started")
            await self._close_frames()
            return
        except BaseException:
            await self._close_frames()
            raise
        if isinstance(handoff, SSEHandoff) and handoff.direct():
            # The body is streamed by SSEDetach after the request stack has unwound.
            handoff.response = self
            return
        await self.stream_body(receive, send)

    async def _close_frames(self) -> None:
        aclose = getattr(self._frames, "aclose", None)
        if aclose is not None:
            await aclose()

    async def stream_body(self, receive: Receive, send: Send) -> None:
        """Write the frames as body messages (the status line is already sent)."""
        frames = self._frames
        task = asyncio.current_task()
        assert task is not None
        state = {"disconnected": False, "finished": False}
        # When the current write started (None between writes): a client that stops reading
        # blocks our write once the socket buffers fill, and is cut after write_timeout.
        writing: list[float | None] = [None]
        loop = asyncio.get_running_loop()

        def on_disconnect() -> None:
            # Cancel once (edge-triggered): the stream generator gets one CancelledError
            # at its current await, and its cleanup can still await afterwards.
            if not state["finished"]:
                state["disconnected"] = True
                task.cancel()

        watcher = asyncio.create_task(
            _watch_disconnect(receive, on_disconnect, writing, self._write_timeout)
        )
        try:
            try:
                async for frame in frames:
                    writing[0] = loop.time()
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                    writing[0] = None
            except TaskcastError as exc:
                # A store failed mid-stream. The status line is gone, so end the stream;
                # the client reconnects and resumes from its last event id.
                logger.warning("SSE stream ended by a storage error: %s", exc)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["disconnected"]:
                raise
            task.uncancel()
        except OSError:
            # The client went away between two writes (the server reports it on send).
            logger.debug("SSE client disconnected during a write")
        finally:
            state["finished"] = True
            watcher.cancel()
            await self._close_frames()


class SSEHandoff:
    """Per-request slot through which an :class:`SSEResponse` hands its body to SSEDetach."""

    __slots__ = ("completed", "response", "started")

    def __init__(self) -> None:
        self.response: SSEResponse | None = None
        self.started = False
        self.completed = False

    def direct(self) -> bool:
        """Whether the status line reached the server unbuffered and the response is open.

        A middleware that buffers responses (Starlette's ``BaseHTTPMiddleware``) holds the
        status line back, so the response streams inside the request stack as before.
        """
        return self.started and not self.completed


class SSEDetach:
    """Outermost ASGI wrapper: streams SSE bodies after the request stack has returned.

    An idle SSE connection served inside FastAPI keeps the whole suspended call stack alive
    (error and exception middleware, routing, the endpoint wrapper, FastAPI's exit stacks,
    the request object): ~25 KiB per connection. The request is still validated, authorised
    and answered by the normal routes (errors, 404s, CORS and metrics unchanged); only once
    :class:`SSEResponse` has sent its status line does it park itself here, the stack unwinds,
    and this wrapper writes the frames with the server's own ``send``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].endswith("/events")
        ):
            await self.app(scope, receive, send)
            return
        # The app gets a copy of the scope: the server keeps its own for the connection's
        # lifetime, and routing would grow it and leave FastAPI's exit stacks, the route and
        # the endpoint in it.
        handoff = SSEHandoff()
        scope = {**scope, HANDOFF_KEY: handoff}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                handoff.started = True
            elif not message.get("more_body", False):
                handoff.completed = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except BaseException:
            if handoff.response is not None:
                await handoff.response._close_frames()
            raise
        response = handoff.response
        if response is not None:
            del watch, handoff, scope
            connection = take_over(send)
            if connection is not None:
                connection.start(
                    response._frames,
                    write_timeout=response._write_timeout,
                    attach=response._attach,
                )
                return
            await response.stream_body(receive, send)


async def _watch_disconnect(
    receive: Receive,
    on_disconnect: Callable[[], None],
    writing: list[float | None],
    write_timeout: float,
) -> None:
    # receive() is awaited directly (no inner task, no asyncio.wait per period) and the
    # write-timeout check is a repeating timer: this task lives as long as the connection,
    # so it is kept small (~2 KiB less per idle connection than a task around receive()).
    loop = asyncio.get_running_loop()
    interval = max(write_timeout / 4, 0.05)
    timer: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal timer
        started = writing[0]
        if started is not None and loop.time() - started > write_timeout:
            timer = None
            logger.info("SSE client stopped reading for %.0f s; closing", write_timeout)
            on_disconnect()
            return
        timer = loop.call_later(interval, check)

    timer = loop.call_later(interval, check)
    try:
        while True:
            message = await receive()
            if isinstance(message, dict) and message.get("type") == "http.disconnect":
                on_disconnect()
                return
    finally:
        if timer is not None:
            timer.cancel()


async def global_frames(
    hub: Hub,
    *,
    filter: EventFilter,
    allowed: Callable[[str], Awaitable[bool]],
    heartbeat_seconds: float,
    retry_ms: int,
    queue_limit: int | None,
) -> AsyncIterator[bytes]:
    """Every task's live events (no replay), as envelopes numbered per connection."""
    sub = await hub.open(None, maxsize=queue_limit)
    try:
        yield retry_frame(retry_ms)
        count = 0
        while True:
            if sub.overflowed:
                yield _SLOW
                return
            if sub.closing:
                yield retry_frame(retry_ms)
                return
            batch = await sub.get(heartbeat_seconds)
            if batch is None:
                if not sub.overflowed and not sub.closing:
                    yield HEARTBEAT
                continue
            for wire in batch:
                event = wire.event
                if event.type == DELETED_EVENT or not filter.matches(event):
                    continue
                if not await allowed(event.task_id):
                    continue
                yield wire.frame(wrap=True, accumulated=False, filtered_index=count)
                count += 1
    finally:
        await hub.close(sub)
