"""The circuit breaker's states, without a database."""

from __future__ import annotations

import asyncio

import pytest

from taskcast.postgres import CircuitBreaker

pytestmark = pytest.mark.anyio


async def test_one_probe_after_retry_seconds_then_closed() -> None:
    breaker = CircuitBreaker(retry_seconds=0.05)
    assert breaker.allow() and breaker.state == "closed"
    breaker.failed("cannot connect")
    assert breaker.state == "open" and breaker.last_error == "cannot connect"
    assert not breaker.allow()
    await asyncio.sleep(0.06)
    assert breaker.allow() and breaker.state == "half-open"
    assert not breaker.allow(), "only one probe at a time"
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.last_error is None
    assert breaker.allow()


async def test_a_failed_probe_opens_again_and_an_abandoned_one_lets_the_next_probe() -> None:
    breaker = CircuitBreaker(retry_seconds=0.05)
    breaker.failed("x")
    await asyncio.sleep(0.06)
    assert breaker.allow()
    breaker.failed("y")
    assert breaker.state == "open" and not breaker.allow()
    await asyncio.sleep(0.06)
    assert breaker.allow()
    breaker.abandoned()  # the probe was cancelled: no answer either way
    assert breaker.state == "open"
    assert breaker.allow() and breaker.state == "half-open"


async def test_waiters_hear_of_a_trip() -> None:
    breaker = CircuitBreaker(retry_seconds=1.0)
    waiter = asyncio.ensure_future(breaker.wait_tripped())
    await asyncio.sleep(0)
    assert not waiter.done()
    breaker.failed("cannot connect")
    await asyncio.wait_for(waiter, 1.0)
