"""Shared by the tests of background loops that must stop even when a cancel is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def returns(stop: Awaitable[None]) -> bool:
    """Whether ``stop`` returns (within a generous 30 s)."""
    stopping = asyncio.ensure_future(stop)
    done, _ = await asyncio.wait({stopping}, timeout=30)
    for task in done:
        task.result()
    return bool(done)
