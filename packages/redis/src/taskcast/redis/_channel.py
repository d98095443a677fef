"""A pipelined Redis connection of our own for the scripts on the publish and replay paths.

Every publish is one commit script and every replay page one read script. Through redis-py
a lone ``EVALSHA`` costs ~60 µs more per round trip than the round trip itself (measured:
128 µs against 67 µs for a bare protocol, sequential calls on loopback): a pool checkout
with its timeout, the retry wrapper, the observability hooks, and asyncio streams under
it. That time sits between a publisher's request and the fan-out, so it is paid in every
subscriber's latency.

:class:`RespChannel` is hand-written for that reason. It keeps one connection, writes the
commands of one event-loop turn in one ``write`` (Redis runs them in order; each caller
gets its own reply), parses replies with hiredis (the parser redis-py itself uses) straight
from ``data_received`` and resolves the callers' futures in order, with no task per
connection or call. It speaks RESP2 and only what these scripts need: ``AUTH``, ``SELECT``,
``CLIENT SETNAME``, ``EVALSHA`` and ``EVAL``. Anything it cannot reproduce of the client it
was configured from (TLS, credential providers, custom connection classes) makes
:func:`channel_settings` return ``None``, and the store keeps using redis-py.

Failures look like redis-py's, so the store's error mapping is unchanged: a refused or
lost connection raises ``redis.exceptions.ConnectionError``, a reply that does not come
within ``socket_timeout`` raises ``redis.exceptions.TimeoutError`` (and drops the
connection, as the commands behind it may or may not have run), error replies raise
``ResponseError`` with Redis's full message (``NoScriptError``, ``ReadOnlyError`` and
``BusyLoadingError`` for those codes). The next call after a failure connects again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

import hiredis

from redis import exceptions as rx
from redis.asyncio.connection import Connection, UnixDomainSocketConnection

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["ChannelSettings", "RespChannel", "ScriptCall", "channel_settings"]

_Arg = str | bytes | int

# Error codes redis-py turns into their own exception classes; kept for the store's
# error mapping (BusyLoadingError is a ConnectionError, i.e. an outage, as in redis-py).
_ERROR_CLASSES: Final[tuple[tuple[str, type[rx.ResponseError]], ...]] = (
    ("NOSCRIPT", rx.NoScriptError),
    ("READONLY", rx.ReadOnlyError),
)


@dataclass(slots=True, frozen=True, kw_only=True)
class ChannelSettings:
    """Where and how to connect: what :func:`channel_settings` read off a redis-py pool."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    """A Unix socket instead of host and port."""
    db: int = 0
    username: str | None = None
    password: str | None = None
    client_name: str | None = None


def channel_settings(client: Redis) -> ChannelSettings | None:
    """The settings of ``client``'s connections, or None if this channel cannot copy them."""
    pool = client.connection_pool
    kind = pool.connection_class
    kwargs = pool.connection_kwargs
    if kwargs.get("credential_provider") is not None or kwargs.get("protocol", 2) not in (
        2,
        "2",
        None,
    ):
        return None
    if kind is Connection:
        where = ChannelSettings(
            host=str(kwargs.get("host") or "localhost"), port=int(kwargs.get("port") or 6379)
        )
    elif kind is UnixDomainSocketConnection:
        where = ChannelSettings(path=str(kwargs["path"]))
    else:
        return None
    return replace(
        where,
        db=int(kwargs.get("db") or 0),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        client_name=kwargs.get("client_name"),
    )


def pack(args: Sequence[_Arg]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = arg
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _error(message: str) -> Exception:
    for code, kind in _ERROR_CLASSES:
        if message.startswith(code):
            return kind(message)
    if message.startswith("LOADING"):
        return rx.BusyLoadingError(message)
    return rx.ResponseError(message)


class _Protocol(asyncio.Protocol):
    """The socket side: feeds hiredis, hands each reply to the oldest waiting caller."""

    __slots__ = ("_channel", "_reader", "transport")

    def __init__(self, channel: RespChannel) -> None:
        self._channel = channel
        self._reader = hiredis.Reader(notEnoughData=False)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        replies = self._channel._replies
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._channel._fail(self, rx.ConnectionError(f"Protocol error: {exc}"))
                return
            if reply is False:
                return
            if not replies:  # pragma: no cover - Redis never answers what was not asked
                self._channel._fail(self, rx.ConnectionError("unexpected reply from Redis"))
                return
            future = replies.popleft()[0]
            if not future.done():  # a caller that stopped waiting leaves its slot here
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(_error(str(reply)))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        error = rx.ConnectionError("Connection closed by server.")
        error.__cause__ = exc
        self._channel._fail(self, error)


class RespChannel:
    """Commands over one pipelined connection; see the module docstring."""

    def __init__(
        self,
        settings: ChannelSettings,
        *,
        socket_timeout: float | None,
        connect_timeout: float,
    ) -> None:
        self._settings = settings
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        # (caller's future, monotonic send time), oldest first, one per command written.
        self._replies: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    async def call(self, *args: _Arg) -> Any:
        """Send one command; its reply (or raise its error)."""
        protocol = self._protocol
        if protocol is None:
            protocol = await self._connect()
        return await self._send(protocol, pack(args))

    async def close(self) -> None:
        self._closed = True
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            self._fail(protocol, rx.ConnectionError("channel closed"))

    # -- sending ---------------------------------------------------------------------

    def _send(self, protocol: _Protocol, command: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._out:
            # Written at the end of this loop turn, together with what else it queues.
            loop.call_soon(self._flush, protocol)
        self._out.append(command)
        if not self._replies and self._socket_timeout is not None:
            self._arm(loop)
        self._replies.append((future, time.monotonic()))
        return future

    def _flush(self, protocol: _Protocol) -> None:
        if protocol is not self._protocol or protocol.transport is None:
            # The connection was lost meanwhile: _fail answered its callers and emptied the
            # buffer; what is there now belongs to a newer connection and its own flush.
            return
        out, self._out = self._out, []
        if out:
            protocol.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._socket_timeout is not None:
            self._timer = loop.call_later(self._socket_timeout / 2, self._check)

    def _check(self) -> None:
        """Drop the connection if its oldest command has waited longer than the timeout."""
        self._timer = None
        replies, protocol, limit = self._replies, self._protocol, self._socket_timeout
        if not replies or protocol is None or limit is None:
            return
        if time.monotonic() - replies[0][1] > limit:
            if protocol.transport is not None:
                protocol.transport.abort()
            self._fail(protocol, rx.TimeoutError("Timeout reading from Redis"))
            return
        self._arm(asyncio.get_running_loop())

    def _fail(self, protocol: _Protocol, error: Exception) -> None:
        """The connection behind ``protocol`` is gone: answer every waiting caller."""
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._out = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        replies, self._replies = self._replies, deque()
        for future, _ in replies:
            if not future.done():
                future.set_exception(error)

    # -- connecting ------------------------------------------------------------------

    async def _connect(self) -> _Protocol:
        if self._closed:
            raise rx.ConnectionError("channel closed")
        connecting = self._connecting
        if connecting is None:
            connecting = self._connecting = asyncio.ensure_future(self._open())
            connecting.add_done_callback(self._connected)
        return await asyncio.shield(connecting)

    def _connected(self, future: asyncio.Future[_Protocol]) -> None:
        self._connecting = None
        if not future.cancelled() and future.exception() is None:
            self._protocol = future.result()

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        s = self._settings
        protocol = _Protocol(self)
        try:
            async with asyncio.timeout(self._connect_timeout):
                if s.path is not None:
                    await loop.create_unix_connection(lambda: protocol, s.path)
                else:
                    await loop.create_connection(lambda: protocol, s.host, s.port)
        except TimeoutError as exc:
            raise rx.TimeoutError("Timeout connecting to Redis") from exc
        except OSError as exc:
            where = s.path or f"{s.host}:{s.port}"
            raise rx.ConnectionError(f"Error connecting to {where}: {exc}") from exc
        # The handshake goes through the same reply queue; its commands come first.
        self._protocol = protocol
        try:
            handshake = []
            if s.password is not None:
                auth = (
                    ("AUTH", s.password) if s.username is None else ("AUTH", s.username, s.password)
                )
                handshake.append(self._send(protocol, pack(auth)))
            if s.db:
                handshake.append(self._send(protocol, pack(("SELECT", s.db))))
            if s.client_name is not None:
                handshake.append(self._send(protocol, pack(("CLIENT", "SETNAME", s.client_name))))
            for reply in handshake:
                await reply
        except rx.ResponseError as exc:
            self._protocol = None
            if protocol.transport is not None:
                protocol.transport.close()
            if "WRONGPASS" in str(exc) or "NOAUTH" in str(exc) or "invalid password" in str(exc):
                raise rx.AuthenticationError(str(exc)) from exc
            raise
        except BaseException:
            self._protocol = None
            if protocol.transport is not None:
                protocol.transport.close()
            raise
        return protocol


class ScriptCall:
    """``EVALSHA`` of one script over a channel, falling back to ``EVAL`` on ``NOSCRIPT``."""

    def __init__(self, channel: RespChannel, source: str) -> None:
        self._channel = channel
        self._source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[_Arg], args: Sequence[_Arg]) -> Any:
        try:
            return await self._channel.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except rx.NoScriptError:
            # The server lost its script cache (a restart, SCRIPT FLUSH): EVAL runs the
            # script and caches it again. The EVALSHA did not run, so nothing is doubled.
            return await self._channel.call("EVAL", self._source, len(keys), *keys, *args)
