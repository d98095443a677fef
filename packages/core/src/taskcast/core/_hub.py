"""In-process fan-out: one broadcast subscription per task per process.

SSE connections never subscribe to the broadcast provider themselves (with Redis that would
be a connection each). The hub subscribes once per task, wraps each committed event in a
:class:`WireEvent` once, and pushes it into every local subscriber's bounded queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from ._models import TaskEvent
from ._ports import BroadcastProvider, Unsubscribe
from ._wire import WireEvent

__all__ = ["Hub", "StreamObserver", "Subscriber"]

logger = logging.getLogger("taskcast.core.hub")


class Subscriber:
    """A bounded queue of wire events for one stream.

    When more than ``maxsize`` events are waiting the subscriber is marked ``overflowed``
    and its queue dropped: the stream closes and the client resumes by cursor, so a reader
    that stalls costs bounded memory.
    """

    __slots__ = (
        "_due",
        "_items",
        "_timer",
        "_waiter",
        "closing",
        "key",
        "maxsize",
        "overflowed",
        "sink",
    )

    def __init__(self, key: str | None, maxsize: int) -> None:
        self.key = key
        self.maxsize = maxsize
        # A list, not a deque: an empty deque holds a 64-slot block (~0.5 KiB per idle
        # stream), and get() hands the whole list over instead of copying it.
        self._items: list[WireEvent] = []
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.closing = False
        # Heartbeats come from one repeating timer per subscriber rather than a timeout per
        # wait (asyncio.wait_for cost ~13% of the server's CPU at 1,000 busy subscribers).
        self._timer: asyncio.TimerHandle | None = None
        self._due = False
        self.sink: Callable[[Sequence[WireEvent]], bool] | None = None
        """Set by a stream while it waits for live events: takes them synchronously and
        says whether it did. Fan-out then costs no task wake-up per subscriber."""

    def push(self, wires: Sequence[WireEvent]) -> None:
        if self.overflowed:
            return
        sink = self.sink
        if sink is not None and not self._items and not self.closing:
            # Only while the reader is parked in get() with nothing queued: anything else
            # (replaying, writing, already woken) must see events in order through the queue.
            waiter = self._waiter
            if waiter is not None and not waiter.done() and sink(wires):
                return
        if len(self._items) + len(wires) > self.maxsize:
            self.overflowed = True
            self._items = []
        else:
            self._items.extend(wires)
        self._wake()

    def close_soon(self) -> None:
        self.closing = True
        self._wake()

    def reset(self) -> None:
        """Forget queued events and any overflow (the caller re-reads from the store)."""
        self._items = []
        self.overflowed = False

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, timeout: float) -> list[WireEvent] | None:
        """Everything queued, waiting if there is nothing; None when a heartbeat is due.

        A heartbeat falls due every ``timeout`` seconds; it is reported by the first call
        that finds nothing queued, so an idle stream sends one per interval.
        """
        if not self._items and not self.overflowed and not self.closing:
            if self._due:
                self._due = False
                return None
            loop = asyncio.get_running_loop()
            if self._timer is None:
                self._timer = loop.call_later(timeout, self._tick)
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
            # Events may have landed as the timer fired; they are not lost to a heartbeat.
            if not self._items and self._due and not self.overflowed and not self.closing:
                self._due = False
                return None
        items = self._items
        self._items = []
        return items

    def _tick(self) -> None:
        self._timer = None
        self._due = True
        self._wake()

    def stop(self) -> None:
        """Cancel the heartbeat timer (the stream is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class StreamObserver(Protocol):
    """Told what task streams do (metrics). Called on the event loop; must not block."""

    def on_replay(self, events: int) -> None:
        """A stream finished its replay, having sent ``events`` stored events."""

    def on_live_lag(self, seconds: float) -> None:
        """A stream woke up for live events; the oldest was committed ``seconds`` ago."""

    def on_resync(self) -> None:
        """A stream's resume cursor was unknown and it sent ``taskcast.resync``."""

    def on_stream_end(self, reason: str) -> None:
        """A stream ended (``slow-consumer``, ``storage-error``, a terminal status, ...)."""


class _Channel:
    __slots__ = ("ready", "subscribers", "unsubscribe")

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.unsubscribe: Unsubscribe | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Hub:
    """Per-process registry of stream subscribers, fed by the broadcast provider."""

    def __init__(self, broadcast: BroadcastProvider, *, queue_limit: int = 10_000) -> None:
        self._broadcast = broadcast
        self._queue_limit = queue_limit
        self._channels: dict[str | None, _Channel] = {}
        self.observer: StreamObserver | None = None
        """Set by a metrics integration; ``None`` (the default) costs nothing."""

    def count(self, task_id: str) -> int:
        channel = self._channels.get(task_id)
        return 0 if channel is None else len(channel.subscribers)

    @property
    def total(self) -> int:
        return sum(len(c.subscribers) for c in self._channels.values())

    async def open(self, task_id: str | None, *, maxsize: int | None = None) -> Subscriber:
        """A subscriber for one task (or, with ``None``, for every task)."""
        sub = Subscriber(task_id, maxsize or self._queue_limit)
        channel = self._channels.get(task_id)
        if channel is None:
            channel = self._channels[task_id] = _Channel()
            channel.subscribers.add(sub)
            try:
                if task_id is None:
                    channel.unsubscribe = await self._broadcast.subscribe_all(self._dispatch_all)
                else:
                    channel.unsubscribe = await self._broadcast.subscribe(task_id, self._dispatch)
            except BaseException as exc:
                del self._channels[task_id]
                channel.ready.set_exception(exc)
                channel.ready.exception()  # mark retrieved; the waiters re-raise their own
                raise
            channel.ready.set_result(None)
        else:
            channel.subscribers.add(sub)
            await asyncio.shield(channel.ready)
        return sub

    async def close(self, sub: Subscriber) -> None:
        sub.stop()
        channel = self._channels.get(sub.key)
        if channel is None:
            return
        channel.subscribers.discard(sub)
        if not channel.subscribers and channel.ready.done():
            del self._channels[sub.key]
            if channel.unsubscribe is not None:
                try:
                    await channel.unsubscribe()
                except Exception:
                    logger.warning("broadcast unsubscribe failed", exc_info=True)

    def _dispatch(self, task_id: str, events: Sequence[TaskEvent]) -> None:
        channel = self._channels.get(task_id)
        if channel is None or not channel.subscribers:
            return
        wires = [WireEvent(e) for e in events]
        for sub in tuple(channel.subscribers):
            sub.push(wires)

    def _dispatch_all(self, task_id: str, events: Sequence[TaskEvent]) -> None:
        channel = self._channels.get(None)
        if channel is None:
            return
        wires = [WireEvent(e) for e in events]
        for sub in tuple(channel.subscribers):
            sub.push(wires)

    def notify_gap(self) -> None:
        """Wake every subscriber so it re-checks the store (after a broadcast outage)."""
        for channel in self._channels.values():
            for sub in channel.subscribers:
                sub._wake()

    def shutdown(self) -> None:
        """Ask every open stream to end (graceful server shutdown)."""
        for channel in self._channels.values():
            for sub in channel.subscribers:
                sub.close_soon()
