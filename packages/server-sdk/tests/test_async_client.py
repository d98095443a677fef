"""AsyncTaskcastServerClient against the in-memory fake server (httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from taskcast.server_sdk import (
    AsyncTaskcastServerClient,
    BlockedRequest,
    ConflictError,
    EventInput,
    NotFoundError,
    RetryConfig,
    ServiceUnavailableError,
    TaskcastTransportError,
    TaskError,
)

pytestmark = pytest.mark.anyio

FAST = RetryConfig(attempts=3, backoff=0.001, max_backoff=0.002)


@pytest.fixture
async def client(fake: Any) -> AsyncIterator[AsyncTaskcastServerClient]:
    async with AsyncTaskcastServerClient(
        "http://tc.test", token="tok", retry=FAST, transport=httpx.MockTransport(fake.handler)
    ) as c:
        yield c


def statuses(fake: Any, tid: str) -> list[str]:
    return [e["data"]["status"] for e in fake.events[tid] if e["type"] == "taskcast:status"]


async def test_every_route(client: AsyncTaskcastServerClient, fake: Any) -> None:
    task = await client.create_task(id="a", type="t", params={"p": 1}, tags=["x"])
    assert task.status == "pending" and fake.requests[-1].headers["authorization"] == "Bearer tok"
    assert (await client.get_task("a")).subscriber_count == 2
    await client.create_task(id="b")
    page = await client.list_tasks(status="pending", limit=1)
    assert [t.id for t in page.tasks] == ["a"] and page.next_cursor == "1"
    assert fake.requests[-1].url.params["status"] == "pending"
    assert [t.id async for t in client.iter_tasks(status=["pending"], page_size=1)] == ["a", "b"]
    assert [t.id async for t in client.iter_tasks()] == ["a", "b"]
    await client.delete_task("b")
    with pytest.raises(NotFoundError):
        await client.get_task("b")

    await client.transition_task("a", "running", ttl=5)
    await client.transition_task(
        "a", "blocked", reason="r", resume_after_ms=1, blocked_request=BlockedRequest(type="q")
    )
    assert await client.get_request("a") == BlockedRequest(type="q", data=None)
    assert (await client.resolve("a", 42)).status == "running"
    assert fake.body() == {"data": 42}

    event = await client.publish_event("a", "x", {"v": 1}, level="warn", idempotency_key="k")
    assert (event.type, event.level, event.idempotency_key) == ("x", "warn", "k")
    events = await client.publish_events("a", [EventInput(type="y"), {"type": "z"}])
    assert [e.type for e in events] == ["y", "z"]
    history = await client.get_history("a", since_index=0, types="x", limit=5)
    assert dict(fake.requests[-1].url.params) == {"since.index": "0", "types": "x", "limit": "5"}
    assert [e.type for e in history][-3:] == ["x", "y", "z"]

    assert (await client.health()).ok
    assert (await client.server_info()).api_version == "v1"
    done = await client.transition_task("a", "failed", error=TaskError(message="m"))
    assert done.error == TaskError(message="m")


async def test_retries(client: AsyncTaskcastServerClient, fake: Any) -> None:
    fake.fail_next(httpx.Response(503), httpx.ReadError("cut"))
    assert (await client.health()).ok
    fake.fail_next(*[httpx.Response(503, json={"error": "down"})] * 3)
    with pytest.raises(ServiceUnavailableError, match="down"):
        await client.health()
    fake.fail_next(httpx.ConnectError("refused"))
    assert (await client.create_task(id="c")).id == "c"
    fake.fail_next(httpx.ReadError("cut"))
    with pytest.raises(TaskcastTransportError):
        await client.create_task(id="d")


async def test_http_client_is_not_closed(fake: Any) -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
    async with AsyncTaskcastServerClient(http_client=http) as c:
        assert (await c.health()).ok
    assert not http.is_closed
    await http.aclose()


async def test_run_paths(client: AsyncTaskcastServerClient, fake: Any) -> None:
    for tid in ("ok", "bad", "manual", "manual2"):
        await client.create_task(id=tid)
    async with client.run("ok", result={"a": 1}) as run:
        await run.publish("log", "line")
    assert statuses(fake, "ok") == ["running", "completed"]
    assert fake.tasks["ok"]["result"] == {"a": 1}

    with pytest.raises(LookupError):
        async with client.run("bad"):
            raise LookupError("gone")
    assert fake.tasks["bad"]["error"] == {"code": "LookupError", "message": "gone"}

    async with client.run("manual") as run:
        await run.complete({"x": 1})
    with pytest.raises(ValueError):
        async with client.run("manual2") as run:
            await run.fail("explicit")
            raise ValueError
    assert statuses(fake, "manual") == ["running", "completed"]
    assert fake.tasks["manual2"]["error"] == {"message": "explicit"}


async def test_run_cancelled_marks_cancelled(client: AsyncTaskcastServerClient, fake: Any) -> None:
    await client.create_task(id="cx")
    entered = anyio.Event()

    async def worker() -> None:
        async with client.run("cx"):
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await entered.wait()
        tg.cancel_scope.cancel()
    assert statuses(fake, "cx") == ["running", "cancelled"]
    assert fake.tasks["cx"]["error"]["code"] == "CancelledError"


async def test_run_failure_transition_error_is_logged(
    client: AsyncTaskcastServerClient, fake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await client.create_task(id="lg")
    with pytest.raises(ZeroDivisionError):
        async with client.run("lg"):
            fake.tasks["lg"]["status"] = "cancelled"
            _ = 1 / 0
    assert "Could not mark task lg failed" in caplog.text
    await client.create_task(id="lg2")
    with pytest.raises(ConflictError):
        async with client.run("lg2"):
            fake.tasks["lg2"]["status"] = "timeout"


def is_publish(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith("/events")


async def test_publish_stream_async_iterator(client: AsyncTaskcastServerClient, fake: Any) -> None:
    await client.create_task(id="s")
    chunks = [f"w{i} " for i in range(1000)]

    async def produce() -> AsyncIterator[str]:
        for chunk in chunks:
            yield chunk

    result = await client.publish_stream("s", produce(), max_batch_chars=500, max_interval=10)
    assert result.text == "".join(chunks) == fake.text("s")
    assert result.requests == fake.count(is_publish) < 30
    assert result.last_event is not None and result.chunks == 1000


async def test_publish_stream_sync_iterator(client: AsyncTaskcastServerClient, fake: Any) -> None:
    await client.create_task(id="sy")

    def produce() -> Iterator[str]:
        yield from ["a", "", "b", "c"]

    result = await client.publish_stream("sy", produce(), max_batch_chars=1, type="t.x")
    assert fake.text("sy") == "abc" and result.events == 3
    assert {e["type"] for e in fake.events["sy"]} == {"t.x"}


async def test_publish_stream_flushes_on_interval(
    client: AsyncTaskcastServerClient, fake: Any
) -> None:
    await client.create_task(id="iv")
    snapshot: list[str] = []

    async def slow() -> AsyncIterator[str]:
        yield "one "
        with anyio.fail_after(5):
            while not fake.events["iv"]:  # noqa: ASYNC110 - the fake server has no event
                await anyio.sleep(0.005)
        snapshot.append(fake.text("iv"))
        yield "two"

    result = await client.publish_stream("iv", slow(), max_interval=0.01)
    assert snapshot == ["one "] and fake.text("iv") == "one two" and result.events == 2


async def test_publish_stream_many_deltas_one_request(
    client: AsyncTaskcastServerClient, fake: Any
) -> None:
    await client.create_task(id="md")
    result = await client.publish_stream("md", ["abcdefgh"], max_batch_chars=3)
    assert (result.events, result.requests) == (3, 1)
    assert fake.text("md") == "abcdefgh"


async def test_publish_stream_iterator_error(client: AsyncTaskcastServerClient, fake: Any) -> None:
    await client.create_task(id="er")

    async def broken() -> AsyncIterator[str]:
        yield "so far"
        raise OSError("stream reset")

    with pytest.raises(OSError, match="stream reset"):
        await client.publish_stream("er", broken(), max_interval=10)
    assert fake.text("er") == "so far"


async def test_publish_stream_publish_error_cancels_reader(
    client: AsyncTaskcastServerClient,
) -> None:
    closed = anyio.Event()

    async def endless() -> AsyncIterator[str]:
        try:
            while True:
                yield "x"
                await anyio.lowlevel.checkpoint()
        finally:
            closed.set()

    with pytest.raises(NotFoundError):
        await client.publish_stream("missing", endless(), max_batch_chars=3)
    with anyio.fail_after(5):
        await closed.wait()


async def test_publish_stream_rejects_non_str(client: AsyncTaskcastServerClient) -> None:
    await client.create_task(id="ns")
    with pytest.raises(TypeError):
        await client.publish_stream("ns", [b"bytes"])  # type: ignore[list-item]


async def test_run_publish_stream(client: AsyncTaskcastServerClient, fake: Any) -> None:
    await client.create_task(id="rs")
    async with client.run("rs") as run:
        result = await run.publish_stream(["x", "y"])
    assert result.text == "xy" and fake.tasks["rs"]["status"] == "completed"


async def test_publish_stream_closes_a_blocked_producer() -> None:
    # The first publish hangs until the reader has filled its buffer and blocks on it;
    # when that publish fails, the producer is closed at once (not left to the GC).
    produced = 0
    closed = anyio.Event()

    async def endless() -> AsyncIterator[str]:
        nonlocal produced
        try:
            while True:
                produced += 1
                yield "x"
        finally:
            closed.set()

    async def slow_404(request: httpx.Request) -> httpx.Response:
        with anyio.fail_after(5):
            while produced < 1026:  # noqa: ASYNC110 - waiting on the producer under test
                await anyio.sleep(0.005)
        await anyio.sleep(0.05)
        return httpx.Response(404, json={"error": "Task not found: t"})

    async with AsyncTaskcastServerClient(transport=httpx.MockTransport(slow_404)) as client:
        with pytest.raises(NotFoundError):
            await client.publish_stream("t", endless(), max_batch_chars=1)
    assert closed.is_set() and produced == 1026


async def test_publish_stream_plain_async_iterator(
    client: AsyncTaskcastServerClient, fake: Any
) -> None:
    class Chunks:
        """An async iterator that is not a generator (no ``aclose``)."""

        def __init__(self) -> None:
            self.items = ["p", "q"]

        def __aiter__(self) -> Chunks:
            return self

        async def __anext__(self) -> str:
            if not self.items:
                raise StopAsyncIteration
            return self.items.pop(0)

    await client.create_task(id="pl")
    result = await client.publish_stream("pl", Chunks())
    assert result.text == "pq" == fake.text("pl")
