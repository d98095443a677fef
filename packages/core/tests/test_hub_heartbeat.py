"""Subscriber heartbeats: one repeating timer per subscriber, never a lost event."""

import asyncio

import pytest

from taskcast.core import MemoryShortTermStore, TaskEngine
from taskcast.core._hub import Subscriber
from taskcast.core._wire import WireEvent

pytestmark = pytest.mark.anyio


async def test_heartbeat_due_while_busy_is_reported_by_the_next_empty_get() -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    task = await engine.create_task()
    await engine.transition_task(task.id, "running")
    event = (await engine.get_events(task.id))[0]
    sub = Subscriber(task.id, 10)
    sub.push([WireEvent(event)])
    # Items queued: returned at once, and the heartbeat timer is not started.
    assert [w.event.id for w in await sub.get(0.01) or []] == [event.id]
    # Waiting arms the timer; it fires with nothing queued: a heartbeat (None).
    assert await sub.get(0.01) is None
    # A wait arms the timer; an event ends the wait, and the timer then fires while the
    # reader is busy (not waiting) ...
    waiter = asyncio.ensure_future(sub.get(0.02))
    await asyncio.sleep(0)
    sub.push([WireEvent(event)])
    assert len(await waiter or []) == 1
    await asyncio.sleep(0.05)
    # ... so the next call that finds nothing reports the heartbeat without waiting.
    assert await asyncio.wait_for(sub.get(60), 1) is None
    sub.stop()
    sub.stop()  # idempotent


async def test_events_arriving_with_the_timer_are_not_lost_to_a_heartbeat() -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    task = await engine.create_task()
    await engine.transition_task(task.id, "running")
    event = (await engine.get_events(task.id))[0]
    sub = Subscriber(task.id, 10)
    getter = asyncio.ensure_future(sub.get(0.01))
    await asyncio.sleep(0)
    # The timer wakes the waiter; an event lands before the waiter runs.
    sub._tick()
    sub.push([WireEvent(event)])
    assert len(await getter or []) == 1
    sub.stop()
