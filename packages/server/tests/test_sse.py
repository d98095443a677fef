"""The per-task SSE stream over a real uvicorn server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from taskcast.core import EventInput, TaskEngine

pytestmark = pytest.mark.anyio

DONE = lambda f: f.event == "taskcast.done"  # noqa: E731


async def running_task(engine: TaskEngine, n: int = 0, **kw: Any) -> str:
    task = await engine.create_task()
    await engine.transition_task(task.id, "running")
    for start in range(0, n, 1000):
        batch = range(start, min(n, start + 1000))
        await engine.publish_events(task.id, [EventInput(type="log", data=i, **kw) for i in batch])
    return task.id


async def test_headers_retry_and_terminal_replay(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any
) -> None:
    tid = await running_task(engine, 2)
    await engine.transition_task(tid, "completed", result={"ok": 1})
    async with open_sse(live, f"/tasks/{tid}/events") as s:
        headers = s.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        assert headers["connection"] == "keep-alive"
        frames = await s.rest()
    assert frames[0].retry == 1500
    events = [f for f in frames if f.event == "taskcast.event"]
    assert [e.data["rawIndex"] for e in events] == [0, 1, 2, 3]
    assert [e.data["filteredIndex"] for e in events] == [0, 1, 2, 3]
    assert all(e.id == e.data["eventId"] for e in events)
    first = events[0].data
    assert set(first) == {
        "filteredIndex",
        "rawIndex",
        "eventId",
        "taskId",
        "type",
        "timestamp",
        "level",
        "data",
    }
    assert first["type"] == "taskcast:status" and first["data"] == {"status": "running"}
    assert events[-1].data["data"] == {"status": "completed", "result": {"ok": 1}}
    assert frames[-1].event == "taskcast.done"
    assert frames[-1].data == {"reason": "completed"}
    assert frames[-1].id is None


async def test_unknown_task_404_before_streaming(live: httpx.AsyncClient) -> None:
    r = await live.get("/tasks/nope/events")
    assert (r.status_code, r.json()) == (404, {"error": "Task not found"})
    assert r.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "params",
    [
        {"since.index": "abc"},
        {"since.timestamp": "-1"},
        {"limit": "0"},
        {"wrap": "perhaps"},
        {"seriesFormat": "full"},
    ],
)
async def test_bad_query_400(
    live: httpx.AsyncClient, engine: TaskEngine, params: dict[str, str]
) -> None:
    tid = await running_task(engine)
    r = await live.get(f"/tasks/{tid}/events", params=params)
    assert r.status_code == 400
    assert r.json()["error"].startswith("Invalid query parameter")
    assert engine.subscriber_count(tid) == 0


async def test_replay_then_live_with_concurrent_publishers(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any
) -> None:
    tid = await running_task(engine, 3000)
    stop = asyncio.Event()

    async def publisher() -> None:
        while not stop.is_set():
            await engine.publish_event(tid, EventInput(type="live"))
            await asyncio.sleep(0)

    pubs = [asyncio.create_task(publisher()) for _ in range(3)]
    async with open_sse(live, f"/tasks/{tid}/events") as s:
        first = await s.events_until(lambda f: f.data["rawIndex"] >= 3100)
        stop.set()
        await asyncio.gather(*pubs)
        await engine.transition_task(tid, "completed")
        rest = await s.events_until(DONE)
    indexes = [f.data["rawIndex"] for f in first + rest if f.event == "taskcast.event"]
    last = await engine.last_index(tid)
    assert indexes == list(range(last + 1))
    assert rest[-1].data == {"reason": "completed"}


async def test_last_event_id_and_since_params(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any
) -> None:
    tid = await running_task(engine, 5)
    await engine.transition_task(tid, "completed")
    async with open_sse(live, f"/tasks/{tid}/events") as s:
        all_events = [f for f in await s.rest() if f.event == "taskcast.event"]
    third = all_events[2].id

    async def raw_indexes(
        params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> list[int]:
        async with open_sse(live, f"/tasks/{tid}/events", params=params, headers=headers) as s:
            frames = await s.rest()
        assert frames[-1].event == "taskcast.done"
        return [f.data["rawIndex"] for f in frames if f.event == "taskcast.event"]

    assert await raw_indexes(headers={"Last-Event-ID": third}) == [3, 4, 5, 6]
    assert await raw_indexes({"since.id": all_events[4].id}) == [5, 6]
    # Explicit since.* wins over Last-Event-ID.
    assert await raw_indexes({"since.index": "4"}, {"Last-Event-ID": third}) == [5, 6]
    ts = all_events[0].data["timestamp"]
    assert all(i > 0 for i in await raw_indexes({"since.timestamp": str(ts)}))
    assert await raw_indexes({"limit": "2"}) == [0, 1]


async def test_unknown_cursor_resyncs(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any
) -> None:
    tid = await running_task(engine, 1)
    await engine.transition_task(tid, "cancelled")
    async with open_sse(live, f"/tasks/{tid}/events", headers={"Last-Event-ID": "gone"}) as s:
        frames = [f for f in await s.rest() if f.event]
    assert frames[0].event == "taskcast.resync"
    assert frames[0].data == {"reason": "unknown-cursor", "cursor": "gone", "status": "cancelled"}
    assert [f.data["rawIndex"] for f in frames[1:-1]] == [0, 1, 2]
    assert frames[-1].data == {"reason": "cancelled"}


async def test_wrap_false_sends_full_event(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any
) -> None:
    tid = await running_task(engine)
    await engine.publish_event(
        tid,
        EventInput(type="llm.delta", data={"delta": "x"}, series_id="s", series_mode="keep-all"),
    )
    await engine.transition_task(tid, "completed")
    async with open_sse(live, f"/tasks/{tid}/events", params={"wrap": "false"}) as s:
        frames = [f for f in await s.rest() if f.event == "taskcast.event"]
    stored = await engine.get_events(tid)
    assert [f.data for f in frames] == [e.to_dict() for e in stored]
    assert frames[1].id == stored[1].id


async def test_filters_and_filtered_index(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any
) -> None:
    tid = await running_task(engine)
    await engine.publish_events(
        tid,
        [
            EventInput(type="llm.delta"),
            EventInput(type="log", level="warn"),
            EventInput(type="llm.done", level="error"),
            EventInput(type="llm", level="warn"),
        ],
    )
    await engine.transition_task(tid, "completed")

    async def pairs(params: dict[str, str]) -> list[tuple[int, int]]:
        async with open_sse(live, f"/tasks/{tid}/events", params=params) as s:
            frames = await s.rest()
        assert frames[-1].data == {"reason": "completed"}
        return [
            (f.data["filteredIndex"], f.data["rawIndex"])
            for f in frames
            if f.event == "taskcast.event"
        ]

    assert await pairs({"types": "llm.*"}) == [(0, 1), (1, 3)]
    assert await pairs({"levels": "warn,error"}) == [(0, 2), (1, 3), (2, 4)]
    assert await pairs({"includeStatus": "false"}) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert await pairs({"types": "llm.*", "since.index": "0"}) == [(1, 3)]
    assert await pairs({"types": ""}) == []


async def test_live_filtered_index_continues(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any
) -> None:
    tid = await running_task(engine)
    await engine.publish_event(tid, EventInput(type="a"))
    async with open_sse(
        live, f"/tasks/{tid}/events", params={"types": "a", "includeStatus": "false"}
    ) as s:
        first = await s.events_until(lambda f: True)
        await engine.publish_events(tid, [EventInput(type="b"), EventInput(type="a")])
        second = await s.events_until(lambda f: True)
    assert (first[0].data["filteredIndex"], first[0].data["rawIndex"]) == (0, 1)
    assert (second[0].data["filteredIndex"], second[0].data["rawIndex"]) == (1, 3)


async def test_accumulated_series_format(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any
) -> None:
    tid = await running_task(engine)
    acc = {"series_id": "s", "series_mode": "accumulate"}
    await engine.publish_events(tid, [EventInput(type="t", data={"delta": c}, **acc) for c in "ab"])  # type: ignore[arg-type]
    async with open_sse(live, f"/tasks/{tid}/events", params={"seriesFormat": "accumulated"}) as s:
        replay = await s.events_until(lambda f: f.data.get("seriesSnapshot"))
        await engine.publish_event(tid, EventInput(type="t", data={"delta": "c"}, **acc))  # type: ignore[arg-type]
        live_frames = await s.events_until(lambda f: True)
    # Late join: consecutive deltas collapse into one snapshot carrying the last delta's id.
    snapshot = replay[-1]
    assert snapshot.data["data"] == {"delta": "ab"}
    assert snapshot.data["rawIndex"] == 2 and snapshot.data["seriesSnapshot"] is True
    # Live: accumulated data replaces the delta.
    assert live_frames[0].data["data"] == {"delta": "abc"}
    async with open_sse(live, f"/tasks/{tid}/events", params={"since.index": "0"}) as s:
        deltas = await s.events_until(lambda f: f.data["rawIndex"] == 3)
    assert [f.data["data"] for f in deltas] == [{"delta": "a"}, {"delta": "b"}, {"delta": "c"}]


async def test_heartbeats(live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any) -> None:
    tid = await running_task(engine)
    async with open_sse(live, f"/tasks/{tid}/events") as s:
        seen: list[Any] = []
        while len([f for f in seen if f.comment == "ping"]) < 2:
            frame = await s.next()
            assert frame is not None
            seen.append(frame)
    assert seen[0].retry == 1500


async def test_pending_hold(live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any) -> None:
    task = await engine.create_task()
    await engine.publish_events(task.id, [EventInput(type="early", data=i) for i in range(3)])
    async with open_sse(live, f"/tasks/{task.id}/events") as s:
        # Held: only the retry hint and heartbeats arrive.
        held = [await s.next() for _ in range(3)]
        assert all(f is not None and f.event is None for f in held)
        await engine.transition_task(task.id, "running")
        await engine.publish_event(task.id, EventInput(type="late"))
        frames = await s.events_until(lambda f: f.data["type"] == "late")
    assert [f.data["rawIndex"] for f in frames] == [0, 1, 2, 3, 4]
    assert frames[3].data["data"] == {"status": "running"}


async def test_pending_cancelled_replays_and_ends(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any, eventually: Any
) -> None:
    task = await engine.create_task()
    async with open_sse(live, f"/tasks/{task.id}/events") as s:
        await eventually(lambda: engine.subscriber_count(task.id) == 1)
        await engine.transition_task(task.id, "cancelled")
        frames = await s.events_until(DONE)
    assert frames[0].data["data"] == {"status": "cancelled"}
    assert frames[-1].data == {"reason": "cancelled"}


async def test_delete_with_live_subscriber(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any
) -> None:
    tid = await running_task(engine)
    async with open_sse(live, f"/tasks/{tid}/events") as s:
        await s.events_until(lambda f: True)
        r = await live.get(f"/tasks/{tid}")
        assert r.json()["hot"] is True and r.json()["subscriberCount"] == 1
        assert (await live.delete(f"/tasks/{tid}")).status_code == 204
        frames = await s.events_until(DONE)
        assert await s.rest() == []
    assert frames[-1].data == {"reason": "deleted"}


async def test_disconnect_releases_subscriber(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any, eventually: Any
) -> None:
    tid = await running_task(engine)
    async with open_sse(live, f"/tasks/{tid}/events") as s:
        await s.events_until(lambda f: True)
        assert engine.subscriber_count(tid) == 1
    await eventually(lambda: engine.subscriber_count(tid) == 0)
    assert engine.hub.total == 0


async def test_shutdown_sends_retry_without_done(
    app: Any, engine: TaskEngine, serve_app: Any, open_sse: Any
) -> None:
    tid = await running_task(engine)
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(base_url=url) as c,
        open_sse(c, f"/tasks/{tid}/events") as s,
    ):
        await s.events_until(lambda f: True)
        engine.hub.shutdown()
        rest = await s.rest()
    assert rest[-1].retry == 1500
    assert all(f.event != "taskcast.done" for f in rest)


class _WrappedSend:
    """Wraps ``send`` as a middleware would: live events can then only go through the queue."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def forward(message: Any) -> None:
            await send(message)

        await self.app(scope, receive, forward)


async def test_slow_consumer_is_cut(serve_app: Any, open_sse: Any) -> None:
    from taskcast.core import MemoryShortTermStore
    from taskcast.server import create_app

    engine = TaskEngine(short_term=MemoryShortTermStore(), queue_limit=5)
    app = create_app(engine)
    tid = await running_task(engine)
    async with (
        serve_app(_WrappedSend(app), engine) as url,
        httpx.AsyncClient(base_url=url) as c,
        open_sse(c, f"/tasks/{tid}/events") as s,
    ):
        await s.events_until(lambda f: True)
        # Six events land in the queue at once: over the bound of five.
        await engine.publish_events(tid, [EventInput(type="x") for _ in range(6)])
        rest = await s.rest()
    assert rest[-1].comment == "slow consumer, resume with Last-Event-ID"
    assert all(f.event != "taskcast.event" for f in rest)


async def test_idle_reader_takes_a_burst_larger_than_its_queue(
    serve_app: Any, open_sse: Any
) -> None:
    # On uvicorn's httptools protocol, live events to a parked reader are written from the
    # hub's dispatch: a burst over the queue bound is not a slow consumer while the socket
    # takes the bytes (the queue only fills when the client stops reading).
    from taskcast.core import MemoryShortTermStore
    from taskcast.server import create_app

    engine = TaskEngine(short_term=MemoryShortTermStore(), queue_limit=5)
    app = create_app(engine)
    tid = await running_task(engine)
    async with (
        serve_app(app, engine) as url,
        httpx.AsyncClient(base_url=url) as c,
        open_sse(c, f"/tasks/{tid}/events?types=x") as s,
    ):
        # Once the first event has arrived the server is parked waiting for the next.
        await engine.publish_events(tid, [EventInput(type="x", data=-1)])
        await s.events_until(lambda f: True)
        await engine.publish_events(
            tid, [EventInput(type="x" if i % 2 else "y", data=i) for i in range(12)]
        )
        await engine.transition_task(tid, "completed")
        rest = await s.rest()
    events = [f for f in rest if f.event == "taskcast.event"]
    assert [f.data["data"] for f in events] == [1, 3, 5, 7, 9, 11]
    assert [f.data["filteredIndex"] for f in events] == [1, 2, 3, 4, 5, 6]
    assert rest[-1].event == "taskcast.done"


@pytest.mark.parametrize("cursor", ["since.index", "since.id", "Last-Event-ID"])
@pytest.mark.parametrize(
    ("params", "collapsed"),
    [({}, [0, 2, 3, 5, 6]), ({"types": "llm.*,log"}, [2, 3, 5]), ({"types": "llm.*"}, [5])],
)
async def test_resume_after_collapsed_late_join_sends_exactly_the_rest(
    live: httpx.AsyncClient,
    engine: TaskEngine,
    open_sse: Any,
    cursor: str,
    params: dict[str, str],
    collapsed: list[int],
) -> None:
    # A late joiner gets the answer collapsed (snapshot "Hel", log, merged delta "lo!"); after
    # any frame it received, a resume with any cursor sends what follows it: no delta twice.
    tid = await running_task(engine)
    acc: Any = {"series_id": "answer", "series_mode": "accumulate"}
    pieces = ["He", "l", None, "lo", "!"]
    await engine.publish_events(
        tid,
        [
            EventInput(type="log")
            if p is None
            else EventInput(type="llm.delta", data={"delta": p}, **acc)
            for p in pieces
        ],
    )
    await engine.transition_task(tid, "completed")

    async def raw_indexes(query: dict[str, str], headers: dict[str, str]) -> list[int]:
        async with open_sse(live, f"/tasks/{tid}/events", params=query, headers=headers) as s:
            frames = await s.rest()
        return [f.data["rawIndex"] for f in frames if f.event == "taskcast.event"]

    # Every event the filters let through, uncollapsed (a cursor turns collapsing off).
    every = await raw_indexes({**params, "since.index": "-1"}, {})
    async with open_sse(live, f"/tasks/{tid}/events", params=params) as s:
        joined = [f for f in await s.rest() if f.event == "taskcast.event"]
    assert [f.data["rawIndex"] for f in joined] == collapsed
    # The filtered stream is what collapses: with `llm.*` the log does not split the run.
    first = next(f.data for f in joined if f.data["type"] == "llm.delta")
    assert first["seriesSnapshot"] is True
    assert first["data"] == {"delta": "Hel" if 3 in collapsed else "Hello!"}
    for seen in joined:
        query, headers = dict(params), {}
        if cursor == "since.index":
            query["since.index"] = str(seen.data["filteredIndex"])
        elif cursor == "since.id":
            query["since.id"] = seen.id
        else:
            headers["Last-Event-ID"] = seen.id
        after = seen.data["rawIndex"]
        assert await raw_indexes(query, headers) == [i for i in every if i > after], seen.data
