import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskcast.core import (
    EventFilter,
    EventInput,
    MemoryShortTermStore,
    StreamOptions,
    TaskEngine,
    TaskEvent,
    TaskStream,
    encode_count,
)
from taskcast.core.testing import Frame, collect, events, parse

pytestmark = pytest.mark.anyio


def stream(engine: TaskEngine, task_id: str, **opts: Any) -> AsyncIterator[bytes]:
    return TaskStream(engine, task_id, StreamOptions(**opts)).frames()


async def running_task(engine: TaskEngine, n: int = 0) -> str:
    task = await engine.create_task()
    await engine.transition_task(task.id, "running")
    if n:
        await engine.publish_events(task.id, [EventInput(type="log", data=i) for i in range(n)])
    return task.id


async def test_terminal_task_replays_then_done(engine: TaskEngine) -> None:
    tid = await running_task(engine, 3)
    await engine.transition_task(tid, "completed")
    frames = await collect(stream(engine, tid))
    assert frames[0].retry == 3000
    envs = events(frames)
    assert [e["rawIndex"] for e in envs] == [0, 1, 2, 3, 4]
    assert [e["filteredIndex"] for e in envs] == [0, 1, 2, 3, 4]
    assert envs[0]["type"] == "taskcast:status" and envs[0]["data"] == {"status": "running"}
    assert set(envs[1]) == {
        "filteredIndex",
        "rawIndex",
        "eventId",
        "taskId",
        "type",
        "timestamp",
        "level",
        "data",
    }
    assert frames[-1].event == "taskcast.done" and frames[-1].data == {"reason": "completed"}
    assert frames[1].id == envs[0]["eventId"]


async def test_live_events_after_replay_without_gap(engine: TaskEngine) -> None:
    tid = await running_task(engine, 5)

    async def publisher() -> None:
        for i in range(200):
            await engine.publish_event(tid, EventInput(type="log", data=i))
            if i % 10 == 0:
                await asyncio.sleep(0)
        await engine.transition_task(tid, "completed")

    consumer = asyncio.create_task(collect(stream(engine, tid, page_size=7)))
    await asyncio.sleep(0)
    await publisher()
    frames = await asyncio.wait_for(consumer, 5)
    assert [e["rawIndex"] for e in events(frames)] == list(range(207))
    assert frames[-1].data == {"reason": "completed"}


async def test_wrap_false_and_filters(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    await engine.publish_events(tid, [
        EventInput(type="llm.delta", level="debug", data=1),
        EventInput(type="tool.call", level="info", data=2),
        EventInput(type="llm.done", level="info", data=3),
    ])  # fmt: skip
    await engine.transition_task(tid, "completed")
    frames = await collect(stream(engine, tid, wrap=False, filter=EventFilter(types=("llm.*",))))
    full = events(frames)
    assert [e["data"] for e in full] == [1, 3]
    assert full[0]["taskId"] == tid and full[0]["index"] == 1 and "filteredIndex" not in full[0]
    frames = await collect(
        stream(engine, tid, filter=EventFilter(levels=("info",), include_status=False))
    )
    assert [(e["filteredIndex"], e["rawIndex"]) for e in events(frames)] == [(0, 2), (1, 3)]
    assert frames[-1].event == "taskcast.done"


async def test_since_cursors(engine: TaskEngine) -> None:
    tid = await running_task(engine, 5)
    all_events = await engine.get_events(tid)
    await engine.transition_task(tid, "completed")
    by_id = events(await collect(stream(engine, tid, since_id=all_events[2].id)))
    assert [e["rawIndex"] for e in by_id] == [3, 4, 5, 6]
    assert [e["filteredIndex"] for e in by_id] == [0, 1, 2, 3]
    by_index = events(await collect(stream(engine, tid, since_index=3)))
    assert [e["filteredIndex"] for e in by_index] == [4, 5, 6]
    by_ts = events(await collect(stream(engine, tid, since_timestamp=all_events[-1].timestamp)))
    assert all(e["timestamp"] > all_events[-1].timestamp for e in by_ts)
    limited = await collect(stream(engine, tid, limit=2))
    assert [e["rawIndex"] for e in events(limited)] == [0, 1]
    assert limited[-1].data == {"reason": "completed"}


async def test_unknown_cursor_resyncs_then_full_replay(engine: TaskEngine) -> None:
    tid = await running_task(engine, 2)
    await engine.transition_task(tid, "cancelled")
    frames = await collect(stream(engine, tid, since_id="01UNKNOWNCURSOR"))
    assert frames[1].event == "taskcast.resync"
    assert frames[1].data == {
        "reason": "unknown-cursor",
        "cursor": "01UNKNOWNCURSOR",
        "status": "cancelled",
    }
    assert [e["rawIndex"] for e in events(frames)] == [0, 1, 2, 3]


async def test_collapse_and_accumulated_format(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    acc = {"series_id": "out", "series_mode": "accumulate"}
    await engine.publish_events(
        tid, [EventInput(type="llm.delta", data={"delta": c}, **acc) for c in "abc"]
    )  # type: ignore[arg-type]
    late = stream(engine, tid, series_format="accumulated", heartbeat_seconds=5)
    frames = [parse(await anext(late)) for _ in range(3)]
    replay = events(frames)
    assert [(e["rawIndex"], e["data"], e.get("seriesSnapshot")) for e in replay] == [
        (0, {"status": "running"}, None),
        (3, {"delta": "abc"}, True),
    ]
    await engine.publish_event(tid, EventInput(type="llm.delta", data={"delta": "d"}, **acc))  # type: ignore[arg-type]
    live = parse(await anext(late))
    assert live.data["data"] == {"delta": "abcd"} and live.data["rawIndex"] == 4
    await late.aclose()  # type: ignore[attr-defined]
    # With a cursor nothing collapses: raw deltas.
    cursor = events(await collect(stream(engine, tid, since_index=0), max_frames=4))
    assert [e["data"] for e in cursor] == [{"delta": "a"}, {"delta": "b"}, {"delta": "c"}]


async def test_pending_hold(engine: TaskEngine) -> None:
    task = await engine.create_task()
    await engine.publish_event(task.id, EventInput(type="early"))
    it = stream(engine, task.id, heartbeat_seconds=0.05)
    assert parse(await anext(it)).retry == 3000
    assert parse(await anext(it)).comment == "ping"
    assert parse(await anext(it)).comment == "ping"
    await engine.transition_task(task.id, "running")
    await engine.publish_event(task.id, EventInput(type="late"))
    got = [parse(await anext(it)) for _ in range(3)]
    assert [f.data["type"] for f in got] == ["early", "taskcast:status", "late"]
    await it.aclose()  # type: ignore[attr-defined]


async def test_pending_then_cancelled_replays_and_ends(engine: TaskEngine) -> None:
    task = await engine.create_task()
    consumer = asyncio.create_task(collect(stream(engine, task.id, heartbeat_seconds=0.05)))
    await asyncio.sleep(0.02)
    await engine.transition_task(task.id, "cancelled")
    frames = await asyncio.wait_for(consumer, 2)
    assert [e["data"] for e in events(frames)] == [{"status": "cancelled"}]
    assert frames[-1].data == {"reason": "cancelled"}


async def test_heartbeat_on_idle_running_stream(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    it = stream(engine, tid, heartbeat_seconds=0.02)
    got = [parse(await anext(it)) for _ in range(4)]
    assert [f.comment for f in got[2:]] == ["ping", "ping"]
    await it.aclose()  # type: ignore[attr-defined]


async def test_delete_ends_live_subscribers(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    consumer = asyncio.create_task(collect(stream(engine, tid)))
    await asyncio.sleep(0.01)
    await engine.delete_task(tid)
    frames = await asyncio.wait_for(consumer, 2)
    assert frames[-1].data == {"reason": "deleted"}
    gone = await collect(stream(engine, tid))
    assert gone[-1].data == {"reason": "deleted"}


async def test_slow_consumer_is_cut_and_resumes_exactly(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    it = stream(engine, tid)
    received: list[Frame] = [parse(await anext(it)), parse(await anext(it))]  # retry, status
    # The consumer stops reading while 200 events are published (queue limit is 50).
    for i in range(200):
        await engine.publish_event(tid, EventInput(type="log", data=i))
    async for raw in it:
        received.append(parse(raw))
    assert received[-1].comment and "slow consumer" in received[-1].comment
    last_id = [f.id for f in received if f.id][-1]
    await engine.transition_task(tid, "completed")
    resumed = events(await collect(stream(engine, tid, since_id=last_id)))
    seen = [e["rawIndex"] for e in events(received)] + [e["rawIndex"] for e in resumed]
    assert seen == list(range(202))


async def test_shutdown_sends_retry_and_no_done(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    consumer = asyncio.create_task(collect(stream(engine, tid, retry_ms=1234)))
    await asyncio.sleep(0.01)
    engine.hub.shutdown()
    frames = await asyncio.wait_for(consumer, 2)
    assert frames[-1].retry == 1234
    assert all(f.event != "taskcast.done" for f in frames)


async def test_gap_is_filled_from_store(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    it = stream(engine, tid)
    [parse(await anext(it)) for _ in range(2)]
    # Commit two events but broadcast only the second: the stream must fetch the first.
    commit = await engine.short_term.commit_events(tid, [
        *(await _drafts(2)),
    ])  # fmt: skip
    await engine.broadcast.publish(tid, commit.fresh[1:])
    got = [parse(await anext(it)) for _ in range(2)]
    assert [f.data["rawIndex"] for f in got] == [1, 2]
    await it.aclose()  # type: ignore[attr-defined]


async def _drafts(n: int) -> list[Any]:
    from taskcast.core import EventDraft, new_id, now_ms

    return [
        EventDraft(id=new_id(), timestamp=now_ms(), type="x", level="info", data=i)
        for i in range(n)
    ]


async def test_one_encode_per_event_per_shape(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    streams = [stream(engine, tid) for _ in range(100)]
    for it in streams:
        await anext(it)  # retry
        await anext(it)  # replayed status event
    before = encode_count()
    await engine.publish_events(tid, [EventInput(type="x", data=i) for i in range(5)])
    for it in streams:
        got = [parse(await anext(it)) for _ in range(5)]
        assert [f.data["rawIndex"] for f in got] == [1, 2, 3, 4, 5]
    assert encode_count() - before == 5
    for it in streams:
        await it.aclose()  # type: ignore[attr-defined]
    assert engine.subscriber_count(tid) == 0


def test_stream_options_cursor_flag() -> None:
    assert not StreamOptions().has_cursor
    assert StreamOptions(since_timestamp=1).has_cursor
    assert isinstance(TaskEvent, type)


async def test_missed_broadcast_is_caught_up_on_wake_and_heartbeat(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    it = stream(engine, tid, heartbeat_seconds=0.05)
    [parse(await anext(it)) for _ in range(2)]
    # Commit without broadcasting (as during a pub/sub outage), then wake the stream.
    await engine.short_term.commit_events(tid, await _drafts(2))
    engine.hub.notify_gap()
    got: list[Frame] = []
    while len(got) < 2:
        frame = parse(await anext(it))
        if frame.event == "taskcast.event":
            got.append(frame)
    assert [f.data["rawIndex"] for f in got] == [1, 2]
    # Finished during the "outage": the next heartbeat notices and ends the stream.
    current = await engine.short_term.get_task_revision(tid)
    assert current is not None
    from taskcast.core import EventDraft, new_id, now_ms

    status = EventDraft(
        id=new_id(),
        timestamp=now_ms(),
        type="taskcast:status",
        level="info",
        data={"status": "completed"},
    )
    await engine.short_term.commit_transition(
        current[0].copy(status="completed"), current[1], [status]
    )
    rest = [parse(raw) async for raw in it]
    assert any(f.comment == "ping" for f in rest)
    assert rest[-1].data == {"reason": "completed"}
    assert rest[-2].data["rawIndex"] == 3


class _SlowPages(MemoryShortTermStore):
    """Records each page read; a read takes a little while, as from SQLite or Redis."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int]] = []

    async def get_events(self, task_id: str, query: Any) -> list[TaskEvent]:
        self.log.append(("read", query.after_index))
        await asyncio.sleep(0.01)
        page = await super().get_events(task_id, query)
        self.log.append(("got", query.after_index))
        return page


async def test_replay_reads_the_next_page_while_the_current_one_is_sent() -> None:
    store = _SlowPages()
    async with TaskEngine(short_term=store) as engine:
        tid = await running_task(engine, 24)  # 25 events with the status
        await engine.transition_task(tid, "completed")
        frames = TaskStream(engine, tid, StreamOptions(page_size=10)).frames()
        seen: list[int] = []
        async for frame in frames:
            env = parse(frame)
            if env.event == "taskcast.event":
                seen.append(env.data["rawIndex"])
                if env.data["rawIndex"] == 0:
                    # The first page is in hand: the second is already being read.
                    assert store.log[-1] == ("read", 9)
        assert seen == list(range(26))
        reads = [after for kind, after in store.log if kind == "read"]
        assert reads[:3] == [-1, 9, 19]


async def test_replay_with_a_limit_reads_no_page_beyond_it() -> None:
    store = _SlowPages()
    async with TaskEngine(short_term=store) as engine:
        tid = await running_task(engine, 30)
        stream_ = TaskStream(engine, tid, StreamOptions(page_size=10, limit=20)).frames()
        frames = await collect(stream_, max_frames=21)  # the retry hint and 20 events
        await stream_.aclose()  # type: ignore[attr-defined]
        assert [e["rawIndex"] for e in events(frames)] == list(range(20))
        reads = [after for kind, after in store.log if kind == "read"]
        assert reads[:2] == [-1, 9]
        assert 19 not in reads  # the limit was reached: no third page


async def test_a_stream_closed_mid_replay_cancels_its_read_ahead() -> None:
    store = _SlowPages()
    async with TaskEngine(short_term=store) as engine:
        tid = await running_task(engine, 24)
        await engine.transition_task(tid, "completed")
        frames = TaskStream(engine, tid, StreamOptions(page_size=10)).frames()
        async for frame in frames:
            if parse(frame).event == "taskcast.event":
                break
        await frames.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        # The second page's read was started, then dropped: it never completed.
        assert ("read", 9) in store.log and ("got", 9) not in store.log


async def test_a_catch_up_between_an_import_and_its_broadcast_ends_replaced(
    engine: TaskEngine,
) -> None:
    """An overwrite import writes the new history, then broadcasts the end of the old one. A
    stream catching up from the store in between read the new history's later events as if
    they followed the old ones (seen as ['old0', 'new2'] by a client), and never ended."""
    from taskcast.core import TaskInput

    tid = await running_task(engine, 2)
    source = TaskEngine(short_term=MemoryShortTermStore())
    async with source:
        await source.create_task(TaskInput(id=tid))
        await source.transition_task(tid, "running")
        await source.publish_events(tid, [EventInput(type="new", data=i) for i in range(5)])
        archive = await source.export_task_archive(tid)
    it = stream(engine, tid, heartbeat_seconds=0.05)
    seen = [parse(await anext(it)) for _ in range(4)]  # retry hint, status, log 0, log 1
    assert [f.data["rawIndex"] for f in seen if f.event == "taskcast.event"] == [0, 1, 2]
    # The import's store write, without (yet) its broadcast: the next heartbeat catches up.
    assert await engine.short_term.import_task(archive.task, archive.events, replace=True)
    rest: list[Frame] = []
    async with asyncio.timeout(10):
        async for raw in it:
            frame = parse(raw)
            rest.append(frame)
            if frame.event is not None:
                break
    assert rest[-1].event == "taskcast.done", rest
    assert rest[-1].data == {"reason": "replaced"}
