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
from starlette.types import Receive, Scope, Send

from taskcast.core import DELETED_EVENT, EventFilter, Hub, TaskcastError

__all__ = ["SSEResponse", "global_frames"]

logger = logging.getLogger(__name__)

_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]
_SLOW: Final = b": slow consumer, resume with Last-Event-ID\n\n"
HEARTBEAT: Final = b": ping\n\n"


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
    ):
        super().__init__(status_code=200)
        self._frames = frames
        self._extra = [(k.lower().encode(), v.encode()) for k, v in (extra_headers or {}).items()]
        self._write_timeout = write_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            await send(
                {"type": "http.response.start", "status": 200, "headers": [*_HEADERS, *self._extra]}
            )
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
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                await aclose()


async def _watch_disconnect(
    receive: Receive,
    on_disconnect: Callable[[], None],
    writing: list[float | None],
    write_timeout: float,
) -> None:
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[object] = asyncio.ensure_future(receive())
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=max(write_timeout / 4, 0.05))
            if done:
                message = pending.result()
                if isinstance(message, dict) and message.get("type") == "http.disconnect":
                    on_disconnect()
                    return
                pending = asyncio.ensure_future(receive())
                continue
            started = writing[0]
            if started is not None and loop.time() - started > write_timeout:
                logger.info("SSE client stopped reading for %.0f s; closing", write_timeout)
                on_disconnect()
                return
    finally:
        pending.cancel()


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
