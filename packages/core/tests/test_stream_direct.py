"""Live events written straight from the hub's dispatch (``TaskStream.attach``)."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from taskcast.core import (
    EventDraft,
    EventFilter,
    EventInput,
    StreamOptions,
    TaskEngine,
    TaskStream,
    new_id,
    now_ms,
)
from taskcast.core.testing import Frame, parse

pytestmark = pytest.mark.anyio


def split(chunk: bytes) -> list[Frame]:
    return [parse(part + b"\n\n") for part in chunk.split(b"\n\n") if part]


class Reader:
    """Iterates a stream in a task, recording every frame in arrival order and by path."""

    def __init__(self, stream: TaskStream) -> None:
        self.frames: list[Frame] = []
        self.direct: list[Frame] = []
        self.accept = True
        stream.attach(self.write)
        self._task = asyncio.create_task(self._read(stream))

    def write(self, chunk: bytes) -> bool:
        if not self.accept:
            return False
        frames = split(chunk)
        self.frames.extend(frames)
        self.direct.extend(frames)
        return True

    async def _read(self, stream: TaskStream) -> None:
        async for chunk in stream.chunks():
            self.frames.extend(split(chunk))

    def data(self, frames: list[Frame] | None = None) -> list[Any]:
        return [
            f.data["data"]
            for f in (self.frames if frames is None else frames)
            if f.event == "taskcast.event" and f.data["type"] != "taskcast:status"
        ]

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not predicate():  # noqa: ASYNC110 - frames arrive from another task
                await asyncio.sleep(0.005)

    async def finish(self) -> None:
        async with asyncio.timeout(5):
            await self._task


async def running_task(engine: TaskEngine) -> str:
    task = await engine.create_task()
    await engine.transition_task(task.id, "running")
    return task.id


async def publish(engine: TaskEngine, tid: str, *data: Any, type: str = "x") -> None:
    await engine.publish_events(tid, [EventInput(type=type, data=d) for d in data])
    # The in-process broadcast fans out right after the publisher's step (a publish
    # request answers first); one turn of the loop later the events are out.
    await asyncio.sleep(0)


async def test_idle_reader_gets_live_events_written_directly_in_order(
    engine: TaskEngine,
) -> None:
    tid = await running_task(engine)
    reader = Reader(TaskStream(engine, tid, StreamOptions()))
    await publish(engine, tid, "a")
    await reader.until(lambda: reader.data() == ["a"])
    # The reader is parked: a batch goes out from the dispatch as one write.
    await publish(engine, tid, "b", "c")
    assert reader.data(reader.direct) == ["b", "c"]
    # A refused write (the socket is backed up) leaves the events to the iterator.
    reader.accept = False
    await publish(engine, tid, "d")
    await reader.until(lambda: reader.data()[-1:] == ["d"])
    reader.accept = True
    await publish(engine, tid, "e")
    assert reader.data(reader.direct) == ["b", "c", "e"]
    # A terminal status always takes the iterator, which ends the stream.
    await engine.transition_task(tid, "completed")
    await reader.finish()
    assert reader.data() == ["a", "b", "c", "d", "e"]
    events = [f.data for f in reader.frames if f.event == "taskcast.event"]
    assert [e["filteredIndex"] for e in events] == list(range(len(events)))
    assert [e["rawIndex"] for e in events] == list(range(len(events)))
    assert reader.frames[-1].data == {"reason": "completed"}


async def test_filters_and_since_index_apply_to_direct_writes(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    await publish(engine, tid, 0, 1)
    options = StreamOptions(filter=EventFilter(types=("x",)), since_index=0)
    reader = Reader(TaskStream(engine, tid, options))
    await reader.until(lambda: reader.data() == [1])
    await publish(engine, tid, "skip", type="y")
    await publish(engine, tid, 2, 3)
    assert reader.data(reader.direct) == [2, 3]
    await engine.transition_task(tid, "completed")
    await reader.finish()
    events = [f.data for f in reader.frames if f.event == "taskcast.event"]
    assert [e["filteredIndex"] for e in events] == [1, 2, 3]


async def test_gap_goes_to_the_iterator_which_fills_it(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    reader = Reader(TaskStream(engine, tid, StreamOptions()))
    await publish(engine, tid, "a")
    await reader.until(lambda: reader.data() == ["a"])
    # Commit two events but broadcast only the second: the first must come from the store.
    drafts = [
        EventDraft(id=new_id(), timestamp=now_ms(), type="x", level="info", data=d)
        for d in ("b", "c")
    ]
    commit = await engine.short_term.commit_events(tid, drafts)
    await engine.broadcast.publish(tid, commit.fresh[1:])
    await reader.until(lambda: reader.data() == ["a", "b", "c"])
    assert reader.direct == []
    await publish(engine, tid, "d")
    assert reader.data(reader.direct) == ["d"]
    await engine.transition_task(tid, "completed")
    await reader.finish()


async def test_delete_goes_to_the_iterator(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    reader = Reader(TaskStream(engine, tid, StreamOptions()))
    await publish(engine, tid, "a")
    await reader.until(lambda: reader.data() == ["a"])
    await engine.delete_task(tid)
    await reader.finish()
    assert reader.frames[-1].data == {"reason": "deleted"}
    assert reader.direct == []


async def test_accumulated_format_through_direct_writes(engine: TaskEngine) -> None:
    acc: dict[str, Any] = {"series_id": "s", "series_mode": "accumulate"}

    async def deltas(*texts: str) -> list[Any]:
        out = await engine.publish_events(
            tid, [EventInput(type="d", data={"delta": t}, **acc) for t in texts]
        )
        await asyncio.sleep(0)
        return out

    tid = await running_task(engine)
    first = await deltas("a", "b")
    fresh = Reader(TaskStream(engine, tid, StreamOptions(series_format="accumulated")))
    options = StreamOptions(series_format="accumulated", since_id=first[0].id)
    resumed = Reader(TaskStream(engine, tid, options))
    await fresh.until(lambda: fresh.data() == [{"delta": "ab"}])  # the snapshot
    await resumed.until(lambda: resumed.data() == [{"delta": "b"}])  # a raw delta
    await deltas("c")
    # The resumed stream has not read the history before its cursor: that delta goes to
    # the iterator, which reads it and merges; the fresh one writes it directly.
    await fresh.until(lambda: len(fresh.data()) == 2)
    await resumed.until(lambda: len(resumed.data()) == 2)
    assert fresh.data(fresh.direct) == [{"delta": "abc"}]
    assert resumed.data()[-1] == {"delta": "abc"} and resumed.direct == []
    await deltas("d", "e")
    expected = [{"delta": "abcd"}, {"delta": "abcde"}]
    assert fresh.data(fresh.direct)[-2:] == expected
    assert resumed.data(resumed.direct) == expected  # merged from here on, directly
    await engine.transition_task(tid, "completed")
    await fresh.finish()
    await resumed.finish()
