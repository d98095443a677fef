"""Subscription behaviour against scripted SSE answers, for the sync and async clients."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from taskcast.client import (
    AsyncTaskcastClient,
    ForbiddenError,
    NotFoundError,
    ReconnectConfig,
    Resync,
    StreamEvent,
    StreamInterruptedError,
    TaskcastClient,
    TaskcastClientError,
    TaskcastHTTPError,
    UnauthorizedError,
)

pytestmark = pytest.mark.anyio

FAST = ReconnectConfig(initial_delay=0.001, max_delay=0.002)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def collect(
    mode: str,
    script: Any,
    task_id: str = "t1",
    *,
    client_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[list[StreamEvent | Resync], Any]:
    kwargs: dict[str, Any] = {"reconnect": FAST, **(client_kwargs or {})}
    transport = httpx.MockTransport(script.handler)
    if mode == "sync":

        def run() -> tuple[list[StreamEvent | Resync], Any]:
            with (
                TaskcastClient("http://tc.test/", transport=transport, **kwargs) as client,
                client.subscribe(task_id, **options) as sub,
            ):
                return list(sub), sub

        return await anyio.to_thread.run_sync(run)
    async with (
        AsyncTaskcastClient("http://tc.test/", transport=transport, **kwargs) as client,
        client.subscribe(task_id, **options) as sub,
    ):
        return [item async for item in sub], sub


def indexes(items: list[StreamEvent | Resync]) -> list[int | str]:
    return [i.index if isinstance(i, StreamEvent) else "resync" for i in items]


async def test_events_then_done(mode: str, script: Any, frames: Any) -> None:
    script.stream(
        b": ping\n\n", b"retry: 3000\n\n", frames.event(0), frames.event(1), frames.done()
    )
    items, sub = await collect(mode, script)
    assert indexes(items) == [0, 1]
    first = items[0]
    assert isinstance(first, StreamEvent)
    assert (first.id, first.task_id, first.type, first.level, first.timestamp, first.data) == (
        "E0",
        "t1",
        "llm.delta",
        "info",
        1000,
        {"delta": "0"},
    )
    assert first.filtered_index == 0 and first.series_id is None and not first.series_snapshot
    assert sub.done_reason == "completed" and sub.last_event_id == "E1" and sub.connections == 1
    request = script.requests[0]
    assert str(request.url) == "http://tc.test/tasks/t1/events"
    assert request.headers["accept"] == "text/event-stream"
    assert "authorization" not in request.headers and "last-event-id" not in request.headers


async def test_query_and_token(mode: str, script: Any, frames: Any) -> None:
    script.stream(frames.done("cancelled"))
    _, sub = await collect(
        mode,
        script,
        "a/b",
        client_kwargs={"token": "tok"},
        types=["llm.*", "x"],
        levels="warn",
        include_status=False,
        wrap=False,
        series_format="accumulated",
        since_id="E5",
        since_index=4,
        since_timestamp=77,
    )
    request = script.requests[0]
    assert request.url.raw_path.startswith(b"/tasks/a%2Fb/events?")
    assert dict(request.url.params) == {
        "types": "llm.*,x",
        "levels": "warn",
        "includeStatus": "false",
        "wrap": "false",
        "seriesFormat": "accumulated",
        "since.id": "E5",
        "since.index": "4",
        "since.timestamp": "77",
    }
    assert request.headers["authorization"] == "Bearer tok"
    assert sub.done_reason == "cancelled"


async def test_unwrapped_events(mode: str, script: Any) -> None:
    raw = {
        "id": "E3",
        "taskId": "t1",
        "index": 3,
        "timestamp": 9,
        "type": "llm.delta",
        "level": "debug",
        "data": {"delta": "abc"},
        "seriesId": "out",
        "seriesMode": "accumulate",
        "seriesAccField": "delta",
        "seriesSnapshot": True,
    }
    frame = f"event: taskcast.event\ndata: {json.dumps(raw)}\nid: E3\n\n".encode()
    script.stream(frame, b'event: taskcast.done\ndata: {"reason":"failed"}\n\n')
    items, sub = await collect(mode, script, wrap=False)
    (event,) = items
    assert isinstance(event, StreamEvent)
    assert (event.id, event.index, event.filtered_index, event.level) == ("E3", 3, None, "debug")
    assert (event.series_id, event.series_mode, event.series_acc_field, event.series_snapshot) == (
        "out",
        "accumulate",
        "delta",
        True,
    )
    assert sub.done_reason == "failed"


async def test_reconnect_resumes_with_last_event_id(mode: str, script: Any, frames: Any) -> None:
    script.stream(frames.event(0), frames.event(1), error=httpx.ReadError("socket cut"))
    # The resumed replay numbers filtered events from 0 again and repeats one event.
    script.stream(
        frames.event(1, fi=0), frames.event(2, fi=0), frames.event(3, fi=1), frames.done()
    )
    items, sub = await collect(mode, script, since_index=-1, types=["llm.*"])
    assert indexes(items) == [0, 1, 2, 3]
    assert [i.filtered_index for i in items if isinstance(i, StreamEvent)] == [0, 1, 2, 3]
    first, second = script.requests
    assert "last-event-id" not in first.headers and first.url.params["since.index"] == "-1"
    assert second.headers["last-event-id"] == "E1"
    assert "since.index" not in second.url.params and second.url.params["types"] == "llm.*"
    assert sub.connections == 2


async def test_reconnect_before_any_event_keeps_cursor(mode: str, script: Any, frames: Any) -> None:
    script.fail(httpx.ConnectError("refused"))
    script.status(503, {"error": "store down"})
    script.stream(frames.event(5), frames.done())
    items, _ = await collect(mode, script, since_id="E4")
    assert indexes(items) == [5]
    assert all(r.url.params["since.id"] == "E4" for r in script.requests)
    assert all("last-event-id" not in r.headers for r in script.requests)


async def test_stream_closed_without_done_reconnects(mode: str, script: Any, frames: Any) -> None:
    script.stream(frames.event(0), b"retry: 60000\n\n")  # server shutdown: retry hint, no done
    script.stream(frames.event(0), frames.event(1), frames.done())
    items, sub = await collect(mode, script)
    assert indexes(items) == [0, 1]
    assert sub.connections == 2 and script.requests[1].headers["last-event-id"] == "E0"


async def test_duplicate_ids_dropped(mode: str, script: Any, frames: Any) -> None:
    dup = frames.envelope(2)
    dup["eventId"] = "E1"
    frame = f"event: taskcast.event\ndata: {json.dumps(dup)}\n\n".encode()
    script.stream(frames.event(1), frame, frames.event(0), frames.event(3), frames.done())
    items, _ = await collect(mode, script)
    assert indexes(items) == [1, 3]


async def test_resync_resets_dedupe(mode: str, script: Any, frames: Any) -> None:
    script.stream(frames.event(4), error=httpx.RemoteProtocolError("peer closed"))
    resync = {"reason": "unknown-cursor", "cursor": "E4", "status": "running"}
    script.stream(
        f"event: taskcast.resync\ndata: {json.dumps(resync)}\n\n".encode(),
        frames.event(0),
        frames.event(1),
        frames.done(),
    )
    items, _ = await collect(mode, script)
    assert indexes(items) == [4, "resync", 0, 1]
    marker = items[1]
    assert isinstance(marker, Resync)
    assert (marker.reason, marker.cursor, marker.status, marker.data) == (
        "unknown-cursor",
        "E4",
        "running",
        resync,
    )
    assert [i.filtered_index for i in items if isinstance(i, StreamEvent)] == [4, 0, 1]


async def test_resync_minimal_payload(mode: str, script: Any, frames: Any) -> None:
    script.stream(b"event: taskcast.resync\ndata: {}\n\n", frames.done())
    items, _ = await collect(mode, script)
    assert items == [Resync(reason="", cursor=None, status=None, data={})]


async def test_malformed_frames_ignored(
    mode: str, script: Any, frames: Any, caplog: pytest.LogCaptureFixture
) -> None:
    script.stream(
        b"event: taskcast.event\ndata: {not json\n\n",
        b"event: taskcast.event\ndata: [1, 2]\n\n",
        b'event: taskcast.event\ndata: {"eventId": "x"}\n\n',
        b"event: something.else\ndata: {}\n\n",
        b"data: plain message\n\n",
        frames.event(0),
        frames.done(),
    )
    items, _ = await collect(mode, script)
    assert indexes(items) == [0]
    assert "malformed data" in caplog.text and "non-object" in caplog.text
    assert "without the event fields" in caplog.text


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (404, NotFoundError),
        (403, ForbiddenError),
        (401, UnauthorizedError),
        (400, TaskcastHTTPError),
    ],
)
async def test_fatal_statuses(
    mode: str, script: Any, status: int, cls: type[TaskcastHTTPError]
) -> None:
    script.status(status, {"error": "no way"})
    with pytest.raises(cls) as info:
        await collect(mode, script)
    assert type(info.value) is cls
    assert (info.value.status_code, info.value.message) == (status, "no way")
    assert str(info.value) == f"HTTP {status}: no way"
    assert len(script.requests) == 1


async def test_error_bodies(mode: str, script: Any) -> None:
    script.answers.append(httpx.Response(404, text="404 Not Found"))
    with pytest.raises(NotFoundError, match="404 Not Found"):
        await collect(mode, script)
    script.answers.append(httpx.Response(404))
    with pytest.raises(NotFoundError, match="HTTP 404") as info:
        await collect(mode, script)
    assert info.value.body is None
    script.status(400, {"error": {"fieldErrors": {}}})
    with pytest.raises(TaskcastHTTPError, match="fieldErrors"):
        await collect(mode, script)
    script.status(400, ["odd"])
    with pytest.raises(TaskcastHTTPError, match="HTTP 400"):
        await collect(mode, script)


async def test_not_an_event_stream(mode: str, script: Any) -> None:
    script.stream(b"<html>", content_type="text/html")
    with pytest.raises(TaskcastClientError, match="Not an SSE stream"):
        await collect(mode, script)


async def test_gives_up_after_max_attempts(mode: str, script: Any) -> None:
    script.fail(httpx.ConnectError("refused")).status(502).status(500)
    config = ReconnectConfig(initial_delay=0.001, max_delay=0.001, max_attempts=2)
    with pytest.raises(StreamInterruptedError, match="interrupted") as info:
        await collect(mode, script, client_kwargs={"reconnect": config})
    assert isinstance(info.value.__cause__, TaskcastHTTPError)
    assert info.value.__cause__.status_code == 500
    assert len(script.requests) == 3


async def test_gives_up_on_a_time_budget_not_a_count(mode: str, script: Any) -> None:
    # A short retry: hint makes attempts cheap: a budget of time is what a user waits, so
    # many quick failures within it are retried (taskcast logs used to stop after 5).
    for _ in range(200):
        script.fail(httpx.ConnectError("refused"))
    config = ReconnectConfig(initial_delay=0.01, max_delay=0.01, jitter=0, max_elapsed=0.5)
    started = time.monotonic()
    with pytest.raises(StreamInterruptedError, match="refused"):
        await collect(mode, script, client_kwargs={"reconnect": config})
    assert time.monotonic() - started >= 0.5
    assert 10 < len(script.requests) < 200


async def test_reconnect_disabled(mode: str, script: Any, frames: Any) -> None:
    script.stream(frames.event(0))
    with pytest.raises(StreamInterruptedError, match=r"closed without taskcast\.done") as info:
        await collect(mode, script, client_kwargs={"reconnect": ReconnectConfig(enabled=False)})
    assert info.value.__cause__ is None


async def test_token_refresh_on_401(mode: str, script: Any, frames: Any) -> None:
    calls: list[int] = []

    def refresh() -> str:
        calls.append(1)
        return "fresh"

    script.status(401).stream(frames.event(0), error=httpx.ReadError("cut"))
    script.status(401).stream(frames.done())
    items, _ = await collect(
        mode, script, client_kwargs={"token": "stale", "refresh_token": refresh}
    )
    assert indexes(items) == [0] and len(calls) == 2
    auth = [r.headers["authorization"] for r in script.requests]
    assert auth == ["Bearer stale", "Bearer fresh", "Bearer fresh", "Bearer fresh"]


async def test_token_refresh_gives_up(mode: str, script: Any) -> None:
    script.status(401).status(401, {"error": "Invalid or expired token"})
    with pytest.raises(UnauthorizedError, match="Invalid or expired"):
        await collect(mode, script, client_kwargs={"refresh_token": lambda: "again"})
    assert len(script.requests) == 2
    script.status(401)
    with pytest.raises(UnauthorizedError):
        await collect(mode, script, client_kwargs={"refresh_token": lambda: None})


async def test_server_retry_hint_is_capped(mode: str, script: Any, frames: Any) -> None:
    script.stream(b"retry: 600000\n\n", frames.event(0), error=httpx.ReadError("cut"))
    script.stream(frames.done())
    with anyio.fail_after(5):
        items, _ = await collect(mode, script)
    assert indexes(items) == [0]


async def test_logs_reconnects(
    mode: str, script: Any, frames: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskcast.client")
    script.fail(httpx.ConnectError("refused")).stream(frames.event(0)).stream(frames.done())
    await collect(mode, script)
    assert "failed (ConnectError" in caplog.text and "closed without taskcast.done" in caplog.text


def test_breaking_out_closes_the_response_sync(script: Any, frames: Any) -> None:
    script.stream(frames.event(0), frames.event(1), frames.event(2), frames.done())
    with TaskcastClient(transport=httpx.MockTransport(script.handler)) as client:
        sub = client.subscribe("t1")
        with sub:
            for item in sub:
                assert isinstance(item, StreamEvent)
                break
        assert script.streams[0].closed
        sub.close()  # idempotent
        with pytest.raises(StopIteration):
            next(sub)
    client.subscribe("t1").close()  # never started


async def test_breaking_out_closes_the_response_async(script: Any, frames: Any) -> None:
    script.stream(frames.event(0), frames.event(1), frames.done())
    async with AsyncTaskcastClient(transport=httpx.MockTransport(script.handler)) as client:
        async with client.subscribe("t1") as sub:
            async for _ in sub:
                break
        assert script.streams[0].closed
        await sub.aclose()
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
        await client.subscribe("t1").aclose()


def test_http_client_is_not_closed(script: Any, frames: Any) -> None:
    script.stream(frames.done())
    http = httpx.Client(transport=httpx.MockTransport(script.handler))
    with TaskcastClient("http://x", http_client=http) as client:
        assert list(client.subscribe("t")) == []
    assert not http.is_closed
    http.close()


async def test_async_http_client_is_not_closed(script: Any, frames: Any) -> None:
    script.stream(frames.done())
    http = httpx.AsyncClient(transport=httpx.MockTransport(script.handler))
    async with AsyncTaskcastClient("http://x", http_client=http) as client:
        assert [i async for i in client.subscribe("t")] == []
    assert not http.is_closed
    await http.aclose()


async def test_async_refresh_may_be_a_coroutine(script: Any, frames: Any) -> None:
    async def refresh() -> str:
        return "new"

    script.status(401).stream(frames.done())
    client = AsyncTaskcastClient(
        transport=httpx.MockTransport(script.handler), refresh_token=refresh
    )
    assert [i async for i in client.subscribe("t")] == []
    assert client.token == "new"
    await client.aclose()


def test_reconnect_config() -> None:
    with pytest.raises(ValueError, match="jitter"):
        ReconnectConfig(jitter=2)
    with pytest.raises(ValueError, match="multiplier"):
        ReconnectConfig(multiplier=0.5)
    config = ReconnectConfig(initial_delay=1, max_delay=10, jitter=0)
    assert [config.delay(n, None) for n in (1, 2, 3, 5)] == [1, 2, 4, 10]
    assert config.delay(1, 3000) == 3
    jittered = ReconnectConfig(initial_delay=1, jitter=0.5).delay(1, None)
    assert 0.5 <= jittered <= 1
    assert not config.gives_up(100)
    assert ReconnectConfig(max_attempts=1).gives_up(2)
    assert ReconnectConfig(max_elapsed=15).gives_up(1, 15.0)
    assert not ReconnectConfig(max_elapsed=15).gives_up(1000, 14.9)
    with pytest.raises(ValueError, match="max_elapsed"):
        ReconnectConfig(max_elapsed=-1)


def test_timeouts() -> None:
    client = TaskcastClient(timeout=3)
    assert client.timeout.read is None and client.timeout.connect == 3
    custom = httpx.Timeout(1.0)
    assert TaskcastClient(timeout=custom).timeout is custom
    client.close()


# -- callbacks -----------------------------------------------------------------------------


def test_listen_sync(script: Any, frames: Any) -> None:
    resync = b'event: taskcast.resync\ndata: {"reason": "unknown-cursor"}\n\n'
    script.stream(resync, frames.event(0), frames.done("timeout"))
    seen: list[Any] = []
    with TaskcastClient(transport=httpx.MockTransport(script.handler)) as client:
        reason = client.listen(
            "t1",
            on_event=seen.append,
            on_done=lambda r: seen.append(("done", r)),
            on_resync=lambda r: seen.append(r.reason),
            types=["llm.*"],
        )
        assert reason == "timeout"
        assert seen[0] == "unknown-cursor" and seen[1].index == 0 and seen[2] == ("done", "timeout")
        script.stream(resync, frames.done())
        assert client.listen("t1", on_event=seen.append) == "completed"
        script.status(404)
        errors: list[Exception] = []
        assert client.listen("t1", on_event=seen.append, on_error=errors.append) is None
        assert isinstance(errors[0], NotFoundError)
        script.status(404)
        with pytest.raises(NotFoundError):
            client.listen("t1", on_event=seen.append)
    assert script.requests[0].url.params["types"] == "llm.*"


async def test_listen_async(script: Any, frames: Any) -> None:
    resync = b'event: taskcast.resync\ndata: {"reason": "unknown-cursor"}\n\n'
    script.stream(resync, frames.event(0), frames.event(1), frames.done())
    seen: list[Any] = []

    async def on_event(event: StreamEvent) -> None:
        seen.append(event.index)

    def on_done(reason: str) -> None:
        seen.append(reason)

    async with AsyncTaskcastClient(transport=httpx.MockTransport(script.handler)) as client:
        on_resync: Callable[[Resync], None] = lambda r: seen.append("resync")  # noqa: E731
        reason = await client.listen("t1", on_event=on_event, on_done=on_done, on_resync=on_resync)
        assert reason == "completed" and seen == ["resync", 0, 1, "completed"]
        script.stream(resync, frames.done())
        assert await client.listen("t1", on_event=on_event) == "completed"
        script.status(403)
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        assert await client.listen("t1", on_event=on_event, on_error=on_error) is None
        assert isinstance(errors[0], ForbiddenError)
        script.status(403)
        with pytest.raises(ForbiddenError):
            await client.listen("t1", on_event=on_event)


def test_remembered_ids_are_bounded(frames: Any) -> None:
    from httpx_sse import ServerSentEvent

    from taskcast.client import SubscribeOptions
    from taskcast.client._state import StreamState

    state = StreamState(SubscribeOptions())
    for i in range(5000):
        sse = ServerSentEvent(event="taskcast.event", data=json.dumps(frames.envelope(i)))
        assert isinstance(state.handle(sse), StreamEvent)
    assert len(state._ids) == 4096 and state.last_event_id == "E4999"
