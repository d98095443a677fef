"""The Redis broadcast: one pub/sub connection per process, fanned out in-process.

A single background task owns the pub/sub connection. It reads every message, decodes each
commit's JSON once and calls the local handlers on the event loop, in the order Redis
delivered them (which, for a task channel, is the commit order, hence index order). When
the connection drops it reconnects with capped, jittered exponential backoff, subscribes to
every channel and pattern again and then reports through ``on_reconnect``, so the engine
can make its streams re-check the store for events published during the outage.

redis-py's ``PubSub`` helper is not used: it reconnects and re-subscribes on its own inside
individual calls, and its health check reads the PING reply inline. Owning the raw
connection keeps reconnection, re-subscription and liveness in one place.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from taskcast.core import BroadcastHandler, StorageUnavailableError, TaskEvent, Unsubscribe

from ._client import RESP_PROTOCOL, command_client
from ._codec import dumps, loads
from ._errors import DEPENDENCY, TRANSIENT_ERRORS, error_kind, guard
from ._keys import KeySpace

__all__ = ["BroadcastState", "ReconnectBackoff", "RedisBroadcast"]

logger = logging.getLogger(__name__)

BroadcastState = Literal["starting", "healthy", "reconnecting", "unhealthy", "closed"]

# Errors that end one connection's life; the listener then reconnects. A ResponseError is
# among them because an error reply to (P)SUBSCRIBE leaves the subscription set unknown.
_CONNECTION_ERRORS: Final = (*TRANSIENT_ERRORS, rx.ResponseError)

_Key = tuple[bool, bytes]
"""(is_pattern, channel or pattern name)."""

ReconnectCallback = Callable[[], object]


@dataclass(slots=True, frozen=True, kw_only=True)
class ReconnectBackoff:
    """Delay between reconnection attempts: exponential, capped, with equal jitter.

    Attempt ``n`` waits ``c/2 + random() * c/2`` seconds with ``c = min(cap, base * 2**n)``
    (the original's managed mode uses base 0.5 s, cap 10 s for pub/sub).
    """

    base: float = 0.5
    cap: float = 10.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("need 0 < base <= cap")

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 32))
        return ceiling / 2 + random.random() * ceiling / 2


class _Entry:
    """A channel or pattern this process follows, with its local handlers."""

    __slots__ = ("confirmed", "handlers", "waiters")

    def __init__(self) -> None:
        self.handlers: list[BroadcastHandler] = []
        self.confirmed = False
        self.waiters: list[asyncio.Future[None]] = []

    def settle(self, error: BaseException | None) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
        self.waiters.clear()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(StorageUnavailableError(DEPENDENCY, "timeout"))


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


class RedisBroadcast:
    """:class:`~taskcast.core.BroadcastProvider` over Redis pub/sub.

    Args:
        url_or_client: A Redis URL, or a ``redis.asyncio.Redis`` (its connection settings
            are reused for the pub/sub connection; it is not closed by :meth:`close`).
        prefix: Channel prefix; must match the paired :class:`RedisShortTermStore`.
        health_check_interval: Seconds of silence after which the connection is probed
            with PING; no reply within another interval counts as a lost connection.
        backoff: Delays between reconnection attempts.
        subscribe_timeout: Seconds :meth:`subscribe` waits for Redis to confirm.
        connect_timeout: Seconds to wait for a connection.
        on_reconnect: Called (on the event loop) once the connection is back and every
            subscription confirmed again; events published meanwhile were not delivered,
            so wire this to ``engine.hub.notify_gap``. May return an awaitable.
        client_name: ``CLIENT SETNAME`` of the pub/sub connection (shows in ``CLIENT LIST``).
    """

    name = "redis"
    shared_across_processes = True

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        prefix: str = "taskcast",
        health_check_interval: float = 15.0,
        backoff: ReconnectBackoff | None = None,
        subscribe_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        on_reconnect: ReconnectCallback | None = None,
        client_name: str | None = "taskcast-pubsub",
    ) -> None:
        if health_check_interval <= 0:
            raise ValueError("health_check_interval must be positive")
        # socket_timeout=None: a subscription that is quiet for hours is healthy; liveness
        # comes from our PING every health_check_interval instead.
        overrides: dict[str, Any] = {
            "protocol": RESP_PROTOCOL,
            "socket_timeout": None,
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
            "decode_responses": False,
        }
        if client_name is not None:
            overrides["client_name"] = client_name
        if isinstance(url_or_client, str):
            self._client = command_client(
                url_or_client, socket_timeout=5.0, connect_timeout=connect_timeout
            )
            self._owned = True
            pool: ConnectionPool = ConnectionPool.from_url(url_or_client, **overrides)
            self._make_connection: Callable[[], AbstractConnection] = pool.make_connection
        else:
            self._client = url_or_client
            self._owned = False
            source = url_or_client.connection_pool
            kwargs = {**source.connection_kwargs, **overrides}
            connection_class = source.connection_class

            def make() -> AbstractConnection:
                return connection_class(**kwargs)

            self._make_connection = make
        self.keys = KeySpace(prefix)
        self.on_reconnect = on_reconnect
        self._interval = health_check_interval
        self._backoff = backoff or ReconnectBackoff()
        self._subscribe_timeout = subscribe_timeout
        self._pattern = self.keys.channel_pattern.encode()
        self._prefix_len = len(self.keys.channel("").encode())

        self._entries: dict[_Key, _Entry] = {}
        self._pending: dict[_Key, int] = {}
        self._conn: AbstractConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._resyncing = False
        self._callbacks: set[asyncio.Future[Any]] = set()
        self._decoded: tuple[bytes, list[TaskEvent]] | None = None
        self._received = 0
        self._stalled = False

        self._state: BroadcastState = "starting"
        self._changed_at = time.time()
        self._last_error_kind: str | None = None
        self._failures = 0
        self._reconnect_attempts = 0

    # -- health ----------------------------------------------------------------------

    @property
    def state(self) -> BroadcastState:
        return self._state

    def health(self) -> dict[str, Any]:
        """The pub/sub dependency's state, in the shape of ``/health/detail``."""
        out: dict[str, Any] = {
            "configured": True,
            "state": self._state,
            "lastTransitionAt": _iso(self._changed_at),
            "consecutiveFailures": self._failures,
            "reconnectAttempts": self._reconnect_attempts,
            "subscriptions": len(self._entries),
        }
        if self._last_error_kind is not None:
            out["lastErrorKind"] = self._last_error_kind
        return out

    async def ping(self) -> None:
        """Raise :class:`StorageUnavailableError` unless the pub/sub connection is up.

        Checked by ``/health/ready``: while the listener reconnects, events published by
        other instances do not reach this one's subscribers.
        """
        if self._state != "healthy":
            raise StorageUnavailableError(DEPENDENCY, self._last_error_kind or self._state)
        with guard():
            await self._client.ping()

    def _set_state(self, state: BroadcastState) -> None:
        if state != self._state:
            self._state = state
            self._changed_at = time.time()

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the pub/sub connection (raises ``StorageUnavailableError`` if it cannot)."""
        if self._task is not None:
            return
        self._closing = False
        try:
            conn = await self._connect()
        except _CONNECTION_ERRORS as exc:
            self._record_failure(exc)
            self._set_state("unhealthy")
            raise StorageUnavailableError(DEPENDENCY, error_kind(exc)) from exc
        self._failures = 0
        self._set_state("healthy")
        self._task = asyncio.create_task(self._run(conn), name="taskcast-redis-pubsub")

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)
        closed = StorageUnavailableError(DEPENDENCY, "connection_closed")
        for entry in self._entries.values():
            entry.settle(closed)
        self._entries.clear()
        self._pending.clear()
        self._set_state("closed")
        if self._owned:
            await self._client.aclose()

    # -- publish / subscribe ---------------------------------------------------------

    async def publish(self, task_id: str, events: Sequence[TaskEvent]) -> None:
        """PUBLISH events (only needed with a store that does not publish on commit)."""
        if not events:
            return
        payload = "[" + ",".join(dumps(e.to_dict()) for e in events) + "]"
        with guard():
            await self._client.publish(self.keys.channel(task_id), payload)

    async def subscribe(self, task_id: str, handler: BroadcastHandler) -> Unsubscribe:
        """Follow one task; returns once Redis has confirmed the subscription."""
        return await self._add((False, self.keys.channel(task_id).encode()), handler)

    async def subscribe_all(self, handler: BroadcastHandler) -> Unsubscribe:
        """Follow every task under the prefix (one PSUBSCRIBE per process)."""
        return await self._add((True, self._pattern), handler)

    async def _add(self, key: _Key, handler: BroadcastHandler) -> Unsubscribe:
        if self._task is None:
            raise RuntimeError("RedisBroadcast is not open")
        conn = self._conn
        if conn is None:
            raise StorageUnavailableError(DEPENDENCY, self._last_error_kind or "unavailable")
        entry = self._entries.get(key)
        first = entry is None
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.handlers.append(handler)
        unsubscribe = self._remover(key, entry, handler)
        if entry.confirmed:
            return unsubscribe
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        entry.waiters.append(waiter)
        # A timer fails the waiter rather than cancelling this coroutine: the outcome is the
        # same and nothing is thrown into the caller's frames.
        timer = loop.call_later(self._subscribe_timeout, _expire, waiter)
        try:
            if first:
                await self._send(conn, key, subscribe=True)
            await waiter
        except BaseException as exc:
            await unsubscribe()
            if isinstance(exc, TRANSIENT_ERRORS):
                raise StorageUnavailableError(DEPENDENCY, error_kind(exc)) from exc
            raise
        finally:
            timer.cancel()
        return unsubscribe

    def _remover(self, key: _Key, entry: _Entry, handler: BroadcastHandler) -> Unsubscribe:
        async def unsubscribe() -> None:
            if handler not in entry.handlers:
                return
            entry.handlers.remove(handler)
            if entry.handlers or self._entries.get(key) is not entry:
                return
            del self._entries[key]
            conn = self._conn
            if conn is not None:
                try:
                    await self._send(conn, key, subscribe=False)
                except TRANSIENT_ERRORS:
                    # The listener sees the broken connection too; the key is gone from
                    # the registry, so it is not re-subscribed.
                    logger.debug("unsubscribe not sent", exc_info=True)

        return unsubscribe

    async def _send(self, conn: AbstractConnection, key: _Key, *, subscribe: bool) -> None:
        is_pattern, name = key
        if subscribe:
            self._pending[key] = self._pending.get(key, 0) + 1
            command = "PSUBSCRIBE" if is_pattern else "SUBSCRIBE"
        else:
            command = "PUNSUBSCRIBE" if is_pattern else "UNSUBSCRIBE"
        await conn.send_command(command, name, check_health=False)

    # -- the listener ----------------------------------------------------------------

    async def _connect(self) -> AbstractConnection:
        """A fresh connection with every registered channel and pattern subscribed."""
        conn = self._make_connection()
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            self._pending.clear()
            for entry in self._entries.values():
                entry.confirmed = False
            channels = [name for (is_pattern, name) in self._entries if not is_pattern]
            patterns = [name for (is_pattern, name) in self._entries if is_pattern]
            for command, names, is_pattern in (
                ("SUBSCRIBE", channels, False),
                ("PSUBSCRIBE", patterns, True),
            ):
                for start in range(0, len(names), 500):
                    chunk = names[start : start + 500]
                    for name in chunk:
                        self._pending[(is_pattern, name)] = 1
                    await conn.send_command(command, *chunk, check_health=False)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        self._conn = conn
        return conn

    async def _run(self, conn: AbstractConnection | None) -> None:
        attempt = 0
        while True:
            if conn is not None:
                try:
                    await self._listen(conn)
                except _CONNECTION_ERRORS as exc:
                    self._lost(exc)
                except Exception as exc:
                    # Never let a surprise end the only listener: start over on a new
                    # connection, as after a drop.
                    logger.exception("redis pub/sub listener failed")
                    self._lost(exc)
                finally:
                    self._conn = None
                    await conn.disconnect(nowait=True)
                conn = None
            await asyncio.sleep(self._backoff.delay(attempt))
            attempt += 1
            self._reconnect_attempts += 1
            try:
                conn = await self._connect()
            except _CONNECTION_ERRORS as exc:
                self._record_failure(exc)
                logger.debug("redis pub/sub reconnect attempt %d failed", attempt, exc_info=True)
                continue
            attempt = 0
            logger.info("redis pub/sub reconnected; re-subscribing %d", len(self._entries))
            self._resyncing = True
            if not self._pending:
                self._resynced()

    async def _listen(self, conn: AbstractConnection) -> None:
        # Reads block without a timeout (a quiet subscription is normal); the watchdog
        # checks liveness next to it, so a read is never cancelled half-way.
        watchdog = asyncio.ensure_future(self._watch(conn))
        try:
            while True:
                reply = await conn.read_response(timeout=None, disconnect_on_error=False)
                self._received += 1
                self._handle(reply)
        finally:
            watchdog.cancel()

    async def _watch(self, conn: AbstractConnection) -> None:
        """PING after a silent interval; drop the connection if another passes silently."""
        seen = self._received
        probing = False
        while True:
            await asyncio.sleep(self._interval)
            if self._received != seen:
                seen, probing = self._received, False
                continue
            if probing:
                self._stalled = True
                # Closing the socket ends the blocked read with a ConnectionError.
                await conn.disconnect(nowait=True)
                return
            try:
                await conn.send_command("PING", check_health=False)
            except TRANSIENT_ERRORS:
                return  # the reader fails on the same connection
            probing = True

    def _handle(self, reply: Any) -> None:
        kind = reply[0]
        if kind == b"message":
            self._dispatch((False, reply[1]), reply[1], reply[2])
        elif kind == b"pmessage":
            self._dispatch((True, reply[1]), reply[2], reply[3])
        elif kind == b"subscribe":
            self._confirm((False, reply[1]))
        elif kind == b"psubscribe":
            self._confirm((True, reply[1]))
        # unsubscribe / punsubscribe confirmations and PING replies need nothing.

    def _confirm(self, key: _Key) -> None:
        left = self._pending.get(key, 0) - 1
        if left > 0:
            # A later SUBSCRIBE for the same name is still on its way; wait for that one.
            self._pending[key] = left
            return
        self._pending.pop(key, None)
        entry = self._entries.get(key)
        if entry is not None:
            entry.confirmed = True
            entry.settle(None)
        if not self._pending and self._resyncing:
            self._resynced()

    def _resynced(self) -> None:
        self._resyncing = False
        self._failures = 0
        self._set_state("healthy")
        callback = self.on_reconnect
        if callback is None:
            return
        try:
            result = callback()
        except Exception:
            logger.exception("on_reconnect callback failed")
            return
        if inspect.isawaitable(result):
            future = asyncio.ensure_future(result)
            self._callbacks.add(future)
            future.add_done_callback(self._callback_done)

    def _callback_done(self, future: asyncio.Future[Any]) -> None:
        self._callbacks.discard(future)
        if not future.cancelled() and future.exception() is not None:
            logger.error("on_reconnect callback failed", exc_info=future.exception())

    def _dispatch(self, key: _Key, channel: bytes, data: bytes) -> None:
        entry = self._entries.get(key)
        if entry is None or not entry.handlers:
            return
        # Only our own channels reach here: they are subscribed by name or match the
        # prefix's pattern.
        task_id = channel[self._prefix_len :].decode("utf-8", "surrogateescape")
        events = self._decode(data)
        if events is None:
            return
        for handler in tuple(entry.handlers):
            try:
                handler(task_id, events)
            except Exception:
                logger.exception("broadcast handler failed for task %s", task_id)

    def _decode(self, data: bytes) -> list[TaskEvent] | None:
        # A task channel and the PSUBSCRIBE pattern receive the same message back to back:
        # decode it once.
        cached = self._decoded
        if cached is not None and cached[0] == data:
            return cached[1]
        try:
            payload = loads(data)
            items = payload if isinstance(payload, list) else [payload]
            events = [TaskEvent.from_dict(item) for item in items]
        except (ValueError, TypeError, KeyError):
            logger.warning("ignoring a malformed broadcast message (%d bytes)", len(data))
            return None
        self._decoded = (data, events)
        return events

    def _record_failure(self, exc: BaseException) -> None:
        self._failures += 1
        self._last_error_kind = error_kind(exc)

    def _lost(self, exc: BaseException) -> None:
        if self._stalled:
            self._stalled = False
            exc = rx.TimeoutError("no reply to PING on the pub/sub connection")
        self._record_failure(exc)
        self._pending.clear()
        self._resyncing = False
        lost = StorageUnavailableError(DEPENDENCY, error_kind(exc))
        for entry in self._entries.values():
            entry.confirmed = False
            entry.settle(lost)
        self._set_state("reconnecting")
        logger.warning("redis pub/sub connection lost (%s); reconnecting", self._last_error_kind)
