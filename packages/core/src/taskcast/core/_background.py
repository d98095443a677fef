"""Stopping background loops even when their cancellation is lost.

On Python 3.11 ``asyncio.wait_for`` returns the inner result instead of raising when a
cancellation lands after the inner awaitable finished but before wait_for resumed (CPython
gh-86296, fixed in 3.12). redis-py wraps the socket write of every command in wait_for and
psycopg_pool waits for a connection with it, so a task cancelled inside a store call can
carry on as if nothing happened. A ``while True`` loop that only a CancelledError ends then
runs forever, and whoever awaits it on shutdown hangs.

So each run of a background loop has a :class:`StopSignal` of its own: the loop checks it
every turn and after its awaited store calls, and waits between turns with
:meth:`StopSignal.sleep` (a timer, no wait_for, no inner task). Its owner stops it with
:func:`stop_task`: set the signal, cancel (which only cuts short a call in progress), and
wait with a bound, logging where a loop that is still running waits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["StopSignal", "awaiting", "stop_task"]


def _settle(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)


class StopSignal(asyncio.Event):
    """An event set when one run of a background loop must end; also its idle wait."""

    def __init__(self) -> None:
        super().__init__()
        self._sleepers: set[asyncio.Future[None]] = set()

    def set(self) -> None:
        super().set()
        for sleeper in self._sleepers:
            _settle(sleeper)

    async def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``, or less if the signal is set meanwhile; whether it is set."""
        if self.is_set():
            return True
        loop = asyncio.get_running_loop()
        sleeper: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(max(0.0, seconds), _settle, sleeper)
        self._sleepers.add(sleeper)
        try:
            await sleeper
        finally:
            timer.cancel()
            self._sleepers.discard(sleeper)
        return self.is_set()


def awaiting(task: asyncio.Task[Any]) -> str:
    """Where ``task`` is suspended: its chain of awaits, outermost first."""
    places = []
    awaitable: Any = task.get_coro()
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            places.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return " -> ".join(places) or repr(task)


async def stop_task(
    task: asyncio.Task[Any],
    signal: StopSignal,
    *,
    timeout: float,
    what: str,
    log: logging.Logger,
) -> bool:
    """Stop one run of a background loop; whether it ended within ``timeout`` seconds.

    Sets ``signal`` first, so the loop ends at its next check even if the cancellation is
    lost, then cancels the task to cut short a call in progress, and waits with
    ``asyncio.wait``, which does not depend on the task acting on its cancellation. A task
    still running after ``timeout`` is logged with the place it waits at and left behind;
    one that failed is logged.
    """
    signal.set()
    task.cancel()
    await asyncio.wait({task}, timeout=timeout)
    if not task.done():
        log.error(
            "%s did not stop within %.1f s; left running at %s", what, timeout, awaiting(task)
        )
        return False
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", what, exc_info=task.exception())
    return True
