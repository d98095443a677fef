"""Serving an SSE body on a connection that uvicorn has handed over.

An open SSE stream served through uvicorn keeps, for its whole life, uvicorn's protocol
object with its parser, request cycle, scope and flow control (two ``asyncio.Event``\\ s),
uvicorn's request task suspended in the application, and a second task listening for the
disconnect: about 16 KiB per idle connection, most of it not ours. A bare SSE relay needs
about 1 KiB.

Once the status line and headers are out, an SSE response is only a sequence of body
chunks until the connection ends, so there is nothing uvicorn still has to do. For its
httptools protocol (the one it picks whenever httptools is installed) we take the
connection over: the transport gets a small protocol of our own, uvicorn's request task
returns (its cycle marked complete, so it neither logs nor closes), its protocol object
is freed, our protocol takes its place in the server's connection set (so that a cap on
connections counts open streams), and one task of ours writes the frames with the same
chunked framing uvicorn would have used. That task is registered in uvicorn's task set, so
a graceful shutdown still waits for it (Taskcast's own shutdown ends every stream first). Other servers, h11, or a ``send`` wrapped by a host's middleware are
served by :meth:`SSEResponse.stream_body` inside the request as before.

After the last chunk the connection is closed rather than returned to uvicorn for another
request; SSE clients reconnect on a new connection anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from starlette.types import Send

from taskcast.core import TaskcastError

__all__ = ["SSEConnection", "take_over"]

logger = logging.getLogger("taskcast.server.sse")

_CYCLE = ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle")
_LAST_CHUNK = b"0\r\n\r\n"


class _Framed:
    """The last chunk framed for chunked encoding, keyed by the identity of its body.

    A live event goes to every subscriber with the same filteredIndex as one bytes object
    (``WireEvent.frame``), so a fan-out frames it once instead of once per connection. The
    pair is read and replaced as one tuple, so servers on several threads cannot mix them.
    """

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo = (b"", _LAST_CHUNK)

    def __call__(self, body: bytes) -> bytes:
        memo = self._memo
        if memo[0] is body:
            return memo[1]
        chunk = b"%x\r\n%b\r\n" % (len(body), body)
        self._memo = (body, chunk)
        return chunk


_framed = _Framed()


def take_over(send: Send) -> SSEConnection | None:
    """Take the connection behind uvicorn's ``send`` over, or None where that is not possible.

    Call only after the response's status line has gone out through ``send``.
    """
    cycle = cast(Any, getattr(send, "__self__", None))
    kind = type(cycle)
    if (kind.__module__, kind.__name__) != _CYCLE:
        return None
    if (
        cycle.chunked_encoding is not True
        or not cycle.response_started
        or cycle.response_complete
        or cycle.disconnected
    ):
        return None
    transport = cycle.transport
    protocol = transport.get_protocol()
    tasks = getattr(protocol, "tasks", None)
    connections = getattr(protocol, "connections", None)
    if id(getattr(protocol, "cycle", None)) != id(cycle) or tasks is None or connections is None:
        return None
    connection = SSEConnection(transport, tasks, connections, paused=cycle.flow.write_paused)
    transport.set_protocol(connection)
    # uvicorn's request task returns quietly once the response counts as complete, and its
    # protocol is freed once it is out of the server's connection set.
    cycle.response_complete = True
    connections.discard(protocol)
    connections.add(connection)
    if cycle.flow.read_paused:
        transport.resume_reading()  # EOF from the client is seen only while reading
    return connection


class SSEConnection(asyncio.Protocol):
    """The transport's protocol after the take-over: writes body chunks, notices the end."""

    __slots__ = ("_closed", "_connections", "_drained", "_paused", "_task", "_tasks", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        tasks: set[Any],
        connections: set[Any],
        *,
        paused: bool,
    ) -> None:
        self._transport = transport
        self._tasks = tasks
        self._connections = connections
        self._paused = paused
        self._closed = False
        self._drained: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # An SSE client sends nothing after its request; a pipelined request is not served.
        pass

    def eof_received(self) -> bool:
        return False  # the client half-closed: close the connection

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._closed = True
        self._wake()
        task = self._task
        if task is not None and not task.done():
            # The stream generator gets one CancelledError at its current await and closes
            # its subscription.
            task.cancel()

    # -- uvicorn's connection interface ------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown asks each connection to finish: nothing to do here,
        Taskcast's shutdown ends every stream (with a ``retry:`` hint) and the pump closes."""

    # -- writing -----------------------------------------------------------------------------

    def write(self, chunk: bytes) -> bool:
        """Write one body chunk now; False (nothing written) while backed up or closed."""
        if self._paused or self._closed:
            return False
        self._transport.write(_framed(chunk))
        return True

    def start(
        self,
        frames: AsyncIterator[bytes],
        *,
        write_timeout: float,
        attach: Callable[[Callable[[bytes], bool]], None] | None,
    ) -> None:
        """Stream ``frames`` from a task of our own, registered with the server's tasks."""
        if attach is not None:
            attach(self.write)
        task = asyncio.get_running_loop().create_task(self._pump(frames, write_timeout))
        self._task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, frames: AsyncIterator[bytes], write_timeout: float) -> None:
        try:
            try:
                async for chunk in frames:
                    while not self.write(chunk):
                        if self._closed or not await self._drain(write_timeout):
                            return
            except TaskcastError as exc:
                # A store failed mid-stream; the client reconnects and resumes by cursor.
                logger.warning("SSE stream ended by a storage error: %s", exc)
            if not self._closed:
                self._transport.write(_LAST_CHUNK)
        except asyncio.CancelledError:
            if not self._closed:
                raise  # cancelled by the server (shutdown timeout), not by the client
        finally:
            self._transport.close()
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                await aclose()

    def _wake(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def _drain(self, timeout: float) -> bool:
        """Wait until the client reads again; False if it has not within ``timeout``."""
        loop = asyncio.get_running_loop()
        drained = self._drained = loop.create_future()
        timer = loop.call_later(timeout, self._wake)
        try:
            await drained
        finally:
            timer.cancel()
            self._drained = None
        if self._paused and not self._closed:
            logger.info("SSE client stopped reading for %.0f s; closing", timeout)
            return False
        return True
