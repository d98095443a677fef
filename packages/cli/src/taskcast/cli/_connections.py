"""The connections the server accepts: bounded request heads, a header timeout and a cap.

uvicorn's httptools protocol reads a request head of any size (a 64 MB header block was
accepted, and eight such clients took a server from 76 MB to 595 MB), waits forever for a
head that never ends, and accepts connections until the process runs out of descriptors
(then, under uvloop, libuv accepts and drops every new connection without a word: 1,100
half-sent requests made a server unreachable). This module is the one place that touches
uvicorn's protocol for that: :class:`LimitedHttpToolsProtocol` subclasses it and

* answers **431** when a request head grows past ``max_header_bytes`` (checked as the bytes
  arrive, so a flood costs at most one socket read more than the limit) or has more than
  ``max_headers`` headers, and **414** when the URL is longer than ``max_url_bytes``;
* answers **408** (or just closes, if nothing was sent) when a request head is not complete
  within ``header_timeout_seconds`` of the connection or, on a kept-alive connection, of
  the request's first byte;
* answers **503** at once to a connection beyond ``max_connections`` open ones (SSE streams
  taken over by ``taskcast.server`` included: they stay in uvicorn's connection set), or
  when the descriptor limit is nearly reached, and logs a WARNING about it at most once
  every ten seconds.

The hot path is left alone: per request, a few attribute writes, three length checks and
(on a kept-alive connection) a clock read; per socket read, an addition and a comparison;
no timer per connection (one per server checks the heads being read every second). A refused connection gets its answer, then its sending half is shut
and what the client still sends is read and dropped for a moment before closing, because
closing with unread data makes the kernel send a reset that can destroy the answer before
the client reads it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any, Final

import httptools
import uvicorn
from pydantic_core import to_json
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

__all__ = [
    "ConnectionLimits",
    "LimitedConfig",
    "LimitedHttpToolsProtocol",
    "default_max_connections",
    "raise_open_files_limit",
]

logger = logging.getLogger("taskcast.cli")

_LINGER_SECONDS: Final = 2.0
"""How long a refused connection is read (and dropped) after its answer before closing."""
_DESCRIPTOR_RESERVE: Final = 16
"""Descriptors kept free for the stores, log files and webhook calls when answering 503."""
_WARN_INTERVAL_SECONDS: Final = 10.0
_UNLIMITED_TARGET: Final = 1 << 20
"""The soft limit aimed at when the hard limit is unlimited."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds on each connection's request heads and on the number of connections."""

    max_header_bytes: int = 64 * 1024
    """Largest request head (request line and headers); 431 beyond."""
    max_headers: int = 100
    """Most headers in one request; 431 beyond."""
    max_url_bytes: int = 8 * 1024
    """Longest request target (path and query); 414 beyond."""
    header_timeout_seconds: float = 15.0
    """A request head not complete within this many seconds is answered 408 and closed."""
    max_connections: int = 10_000
    """Open connections (SSE streams included) beyond which a new one is answered 503."""
    descriptor_limit: int | None = None
    """The process's limit on open files, if known: a connection accepted on one of the last
    few descriptors is answered 503 instead of risking that the next accept fails."""


def raise_open_files_limit() -> int | None:
    """Raise the soft limit on open files to the hard limit; the soft limit now in force.

    Servers built for many idle SSE clients do this at start (1,024, the usual soft limit,
    is far below what the hard limit allows). Only the process owner may: the limit is the
    process's. None where the platform has no such limit.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. macOS caps it below the hard limit
            logger.debug("cannot raise the open files limit from %d: %s", soft, exc)
            return soft
        logger.debug("open files limit raised from %d to %d", soft, target)
        return target
    logger.debug("open files limit: %d", soft)
    return None if soft == resource.RLIM_INFINITY else soft


def default_max_connections(descriptor_limit: int | None) -> int:
    """The connection cap when none is set: the descriptor limit less a tenth (at least 64)
    for everything else the process opens, or 10,000 where there is no limit."""
    if descriptor_limit is None:
        return 10_000
    return max(descriptor_limit - max(64, descriptor_limit // 10), 16)


class LimitedConfig(uvicorn.Config):
    """uvicorn's configuration, serving HTTP with :class:`LimitedHttpToolsProtocol`.

    The limits travel inside the configuration, so that ``--workers N`` (whose processes
    receive a pickled copy of it) apply them too.
    """

    def __init__(self, app: Any, *, connection_limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, http=LimitedHttpToolsProtocol, **kwargs)
        self.connection_limits = connection_limits


class _Throttled:
    """A WARNING at most once per interval, with the number of occurrences held back."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._next = 0.0
        self._held = 0

    def warn(self, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        held, self._held = self._held, 0
        self._next = now + _WARN_INTERVAL_SECONDS
        suffix = f" ({held} more since the last report)" if held else ""
        logger.warning(self._message + suffix, *args)


_cap_reached = _Throttled(
    "connection cap reached: %d connections open (limits.maxConnections %d); "
    "new connections are answered 503"
)
_descriptors_low = _Throttled(
    "open file descriptors nearly exhausted (descriptor %d of limit %d); "
    "new connections are answered 503"
)


class _Refusal(Exception):
    """Raised from a parser callback to stop parsing a request that is refused."""


class _HeadSweep:
    """The header timeout of every connection of one server, checked by one timer.

    A timer per connection would cost one per request on kept-alive connections, or, armed
    once per connection, keep about 0.4 KiB alive for the whole timeout for every SSE stream
    just opened. Heads are checked every ``interval`` seconds instead, while the server has
    connections: a late head is answered between ``timeout`` and ``timeout + interval``.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, connections: set[Any], interval: float
    ) -> None:
        self._loop = loop
        self._connections = connections
        self._interval = interval
        self._handle: asyncio.TimerHandle | None = None

    def ensure(self) -> None:
        if self._handle is None:
            self._handle = self._loop.call_later(self._interval, self._tick)

    def _tick(self) -> None:
        self._handle = None
        now = self._loop.time()
        for connection in list(self._connections):
            if isinstance(connection, LimitedHttpToolsProtocol):
                connection.check_head(now)
        if self._connections:
            self.ensure()


_sweeps: weakref.WeakKeyDictionary[ServerState, _HeadSweep] = weakref.WeakKeyDictionary()


def _descriptor(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    return -1 if sock is None else int(sock.fileno())


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ConnectionLimits` (see the module)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = getattr(config, "connection_limits", None)
        self.limits = limits if isinstance(limits, ConnectionLimits) else ConnectionLimits()
        # The head being read: since the connection opened, or since the first byte of a
        # request on a kept-alive connection (the idle time between requests is uvicorn's
        # keep-alive timeout's).
        self._in_head = True
        self._head_bytes = 0
        self._head_started = 0.0
        self._linger: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None
        self._refused = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        if len(self.connections) > limits.max_connections:
            _cap_reached.warn(len(self.connections) - 1, limits.max_connections)
            self._refuse(503, "Too many open connections; retry later")
            return
        if limits.descriptor_limit is not None:
            fd = _descriptor(transport)
            if fd >= limits.descriptor_limit - _DESCRIPTOR_RESERVE:
                _descriptors_low.warn(fd, limits.descriptor_limit)
                self._refuse(503, "Too many open connections; retry later")
                return
        self._head_started = self.loop.time()
        sweep = _sweeps.get(self.server_state)
        if sweep is None:
            interval = min(1.0, limits.header_timeout_seconds / 2)
            sweep = _sweeps[self.server_state] = _HeadSweep(self.loop, self.connections, interval)
        sweep.ensure()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, which would answer a refusal raised from a parser
        # callback as "400 Invalid HTTP request" (httptools wraps it in HttpParserError).
        if self._refused:
            return  # answered already: dropped until the client leaves or the linger ends
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            refusal = self._refusal
            if refusal is not None:
                self._refuse(*refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head:
            # A head still not complete: everything read since it began is head. httptools
            # holds a header being read in memory, so this is checked on every read.
            if not self._head_bytes:
                # It began within this read, at an offset the parser does not tell: count
                # the whole read (more than the head only if requests are pipelined).
                self._head_bytes = len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(431, self._too_large())

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a later request on a kept-alive connection
            self._in_head = True
            self._head_started = self.loop.time()

    def on_headers_complete(self) -> None:
        self._in_head = False
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            self._stop(431, f"Too many request headers (max {limits.max_headers})")
        # The bytes counted may include the start of the body read with the head's end.
        if self._head_bytes > limits.max_header_bytes and (
            len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            > limits.max_header_bytes
        ):
            self._stop(431, self._too_large())
        if len(self.url) > limits.max_url_bytes:
            self._stop(414, f"Request URL too long (max {limits.max_url_bytes} bytes)")
        self._head_bytes = 0
        super().on_headers_complete()

    # -- limits ------------------------------------------------------------------------------

    def check_head(self, now: float) -> None:
        """Answer 408 (or just close) if the head being read is past the header timeout."""
        timeout = self.limits.header_timeout_seconds
        if not self._in_head or self._refused or now - self._head_started < timeout:
            return  # between requests, the keep-alive timeout is uvicorn's
        if self.transport.is_closing():
            return
        if self._head_bytes or self.cycle is not None:
            logger.debug("request head not complete within %.0f s; answering 408", timeout)
            self._refuse(408, f"Request head not received within {timeout:g} s")
        else:
            self.transport.close()  # nothing sent at all: nothing to answer

    def _too_large(self) -> str:
        return f"Request header fields too large (max {self.limits.max_header_bytes} bytes)"

    def _stop(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        raise _Refusal(message)

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        transport = self.transport
        if transport.is_closing():
            return
        body = to_json({"error": message})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        transport.write(b"".join(head) + body)
        if transport.can_write_eof():
            transport.write_eof()
        self.flow.resume_reading()
        self._linger = self.loop.call_later(_LINGER_SECONDS, transport.close)
