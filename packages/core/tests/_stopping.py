"""Shared by the tests of background loops that must stop even when a cancel is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from taskcast.core import MemoryShortTermStore, TaskPage, TaskQuery


async def returns(stop: Awaitable[None]) -> bool:
    """Whether ``stop`` returns (within a generous 30 s)."""
    stopping = asyncio.ensure_future(stop)
    done, _ = await asyncio.wait({stopping}, timeout=30)
    for task in done:
        task.result()
    return bool(done)


class ListingLosesCancellation(MemoryShortTermStore):
    """A slow store whose task listing absorbs a cancellation, as redis-py's commands do on
    Python 3.11: their socket write runs in ``asyncio.wait_for``, which returns instead of
    raising when the cancel lands just after the write finished (CPython gh-86296)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = True
        self.listing = asyncio.Event()
        self.gate = asyncio.Event()
        self.lost = 0

    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        if self.slow:
            self.listing.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.lost += 1
        return await super().list_tasks(query)
