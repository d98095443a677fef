"""In-process fan-out: one broadcast subscription per task per process.

SSE connections never subscribe to the broadcast provider themselves (with Redis that would
be a connection each). The hub subscribes once per task, wraps each committed event in a
:class:`WireEvent` once, and pushes it into every local subscriber's bounded queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

from ._models import TaskEvent
from ._ports import BroadcastProvider, Unsubscribe
from ._wire import WireEvent

__all__ = ["Hub", "Subscriber"]

logger = logging.getLogger("taskcast.core.hub")


class Subscriber:
    """A bounded queue of wire events for one stream.

    When more than ``maxsize`` events are waiting the subscriber is marked ``overflowed``
    and its queue dropped: the stream closes and the client resumes by cursor, so a reader
    that stalls costs bounded memory.
    """

    __slots__ = ("_items", "_waiter", "closing", "key", "maxsize", "overflowed")

    def __init__(self, key: str | None, maxsize: int) -> None:
        self.key = key
        self.maxsize = maxsize
        self._items: deque[WireEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.closing = False

    def push(self, wires: Sequence[WireEvent]) -> None:
        if self.overflowed:
            return
        if len(self._items) + len(wires) > self.maxsize:
            self.overflowed = True
            self._items.clear()
        else:
            self._items.extend(wires)
        self._wake()

    def close_soon(self) -> None:
        self.closing = True
        self._wake()

    def reset(self) -> None:
        """Forget queued events and any overflow (the caller re-reads from the store)."""
        self._items.clear()
        self.overflowed = False

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, timeout: float) -> list[WireEvent] | None:
        """Everything queued, waiting up to ``timeout`` seconds; None if nothing came."""
        if not self._items and not self.overflowed and not self.closing:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                # Events may have landed as the timer fired; they are not lost to a heartbeat.
                if not self._items:
                    return None
            finally:
                self._waiter = None
        items = list(self._items)
        self._items.clear()
        return items


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
