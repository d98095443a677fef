"""seriesFormat=accumulated: streams merge the deltas they relay (stores keep only deltas)."""

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskcast.core import (
    EventDraft,
    EventInput,
    StreamOptions,
    TaskEngine,
    TaskStream,
    accumulate,
    encode_count,
    new_id,
    now_ms,
)
from taskcast.core.testing import Frame, collect, events, parse

pytestmark = pytest.mark.anyio

ACC: dict[str, Any] = {"series_id": "out", "series_mode": "accumulate"}


def stream(engine: TaskEngine, task_id: str, **opts: Any) -> AsyncIterator[bytes]:
    return TaskStream(engine, task_id, StreamOptions(**opts)).frames()


def delta(text: Any, **extra: Any) -> EventInput:
    return EventInput(type="llm.delta", data={"delta": text, **extra}, **ACC)


async def running_task(engine: TaskEngine) -> str:
    task = await engine.create_task()
    await engine.transition_task(task.id, "running")
    return task.id


async def until_live(it: AsyncIterator[bytes], frames: int) -> list[Frame]:
    """The retry frame and ``frames - 1`` replayed ones."""
    return [parse(await anext(it)) for _ in range(frames)]


async def test_stores_keep_deltas_and_broadcast_them_as_they_are(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    result = await engine.short_term.commit_events(
        tid,
        [
            EventDraft(id=new_id(), timestamp=now_ms(), type="d", level="info", data=d, **ACC)
            for d in ({"delta": "ab"}, {"delta": "cd"})
        ],
    )
    assert [e.data for e in result.fresh] == [{"delta": "ab"}, {"delta": "cd"}]
    assert not any(e.has_accumulated for e in result.fresh)


async def test_live_values_after_a_resume_cursor(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    published = await engine.publish_events(
        tid, [delta("a"), EventInput(type="log", data=1), delta("b"), delta("c")]
    )
    it = stream(engine, tid, series_format="accumulated", since_id=published[2].id)
    got = await until_live(it, 2)
    # A resume replays raw deltas, as without merging.
    assert [e["data"] for e in events(got)] == [{"delta": "c"}]
    await engine.publish_event(tid, delta("d"))
    live = parse(await anext(it))
    assert live.data["data"] == {"delta": "abcd"} and live.data["rawIndex"] == 5
    await it.aclose()  # type: ignore[attr-defined]


async def test_a_limited_replay_still_merges_the_skipped_backlog(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    await engine.publish_events(tid, [delta(c) for c in "abcde"])
    it = stream(engine, tid, series_format="accumulated", limit=2)
    got = await until_live(it, 3)
    assert [e["data"] for e in events(got)] == [{"status": "running"}, {"delta": "a"}]
    # Publish once the stream has skipped the backlog and waits for live events.
    following = asyncio.ensure_future(anext(it))
    await asyncio.sleep(0.05)
    await engine.publish_event(tid, delta("f"))
    live = parse(await following)
    assert live.data["rawIndex"] == 6 and live.data["data"] == {"delta": "abcdef"}
    await it.aclose()  # type: ignore[attr-defined]


async def test_resets_follow_the_store_rules(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    it = stream(engine, tid, series_format="accumulated")
    await until_live(it, 2)
    await engine.publish_events(
        tid,
        [
            delta("a", n=1),
            delta("b", n=2),
            # The series switches to `latest` once: the next delta starts over.
            EventInput(type="p", data={"delta": "L"}, series_id="out", series_mode="latest"),
            delta("c"),
            delta(5),  # not a string: starts over with this data
            delta("x"),
            EventInput(type="llm.delta", data={"text": "t"}, series_acc_field="text", **ACC),
        ],
    )
    live = [parse(await anext(it)).data["data"] for _ in range(7)]
    assert live == [
        {"delta": "a", "n": 1},
        {"delta": "ab", "n": 2},
        {"delta": "L"},
        {"delta": "c"},
        {"delta": 5},
        {"delta": "x"},
        # Another field: the value so far holds no string there, so it starts over.
        {"text": "t"},
    ]
    await it.aclose()  # type: ignore[attr-defined]


async def test_subscribers_share_one_merge_and_one_encode_per_shape(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    await engine.publish_event(tid, delta("a"))
    streams = [TaskStream(engine, tid, StreamOptions(series_format="accumulated")) for _ in "abc"]
    merged = [s.frames() for s in streams]
    plain = stream(engine, tid)
    for it in [*merged, plain]:
        await until_live(it, 3)
    before = encode_count()
    await engine.publish_events(tid, [delta("b"), delta("c")])
    for it in merged:
        got = [parse(await anext(it)).data["data"] for _ in range(2)]
        assert got == [{"delta": "ab"}, {"delta": "abc"}]
    assert [parse(await anext(plain)).data["data"] for _ in range(2)] == [
        {"delta": "b"},
        {"delta": "c"},
    ]
    assert encode_count() - before == 4  # 2 events x (merged, delta)
    # The streams hold one text between them (the first merge's), not pieces each.
    texts = {id(s._merged["out"].value()["delta"]) for s in streams}
    assert len(texts) == 1
    for it in [*merged, plain]:
        await it.aclose()  # type: ignore[attr-defined]


async def test_a_gap_filled_from_the_store_is_merged_too(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    await engine.publish_event(tid, delta("a"))
    it = stream(engine, tid, series_format="accumulated")
    await until_live(it, 3)
    drafts = [
        EventDraft(id=new_id(), timestamp=now_ms(), type="d", level="info", data=d, **ACC)
        for d in ({"delta": "b"}, {"delta": "c"})
    ]
    commit = await engine.short_term.commit_events(tid, drafts)
    await engine.broadcast.publish(tid, commit.fresh[1:])  # the first is missed
    got = [parse(await anext(it)).data for _ in range(2)]
    assert [(f["rawIndex"], f["data"]) for f in got] == [
        (2, {"delta": "ab"}),
        (3, {"delta": "abc"}),
    ]
    # The stored events themselves are not changed: a new replay collapses the deltas.
    replay = events(await collect(stream(engine, tid), until_done=False, max_frames=3))
    assert replay[-1]["data"] == {"delta": "abc"} and replay[-1]["seriesSnapshot"] is True
    stored = await engine.get_events(tid)
    assert not any(e.has_accumulated for e in stored)
    await it.aclose()  # type: ignore[attr-defined]


async def test_a_terminal_replay_in_accumulated_format(engine: TaskEngine) -> None:
    tid = await running_task(engine)
    await engine.publish_events(tid, [delta(c) for c in "ab"])
    consumer = asyncio.create_task(collect(stream(engine, tid, series_format="accumulated")))
    await asyncio.sleep(0.01)
    await engine.publish_event(tid, delta("c"))
    await engine.transition_task(tid, "completed")
    frames = await asyncio.wait_for(consumer, 5)
    data = [e["data"] for e in events(frames)]
    assert data == [
        {"status": "running"},
        {"delta": "ab"},
        {"delta": "abc"},
        {"status": "completed"},
    ]
    assert frames[-1].data == {"reason": "completed"}


def _reference(published: list[Any]) -> dict[int, Any]:
    """Each accumulate event's merged value, as stores computed it before streams did."""
    states: dict[str, Any] = {}
    out: dict[int, Any] = {}
    for event in published:
        sid, mode = event.series_id, event.series_mode
        if sid is None or mode not in ("accumulate", "latest"):
            continue
        if mode == "latest":
            states[sid] = None
            continue
        out[event.index] = value = accumulate(states.get(sid), event)
        states[sid] = event.copy(data=value)
    return out


def _random_input(rng: random.Random) -> EventInput:
    sid = rng.choice(["a", "b"])
    kind = rng.choice(["delta"] * 6 + ["other-field", "non-string", "latest", "keep", "plain"])
    if kind == "delta":
        return delta(rng.choice(["x", "yy", "é", "\n", ""]), n=rng.randrange(3))
    if kind == "other-field":
        return EventInput(
            type="d", data={"text": "t"}, series_id=sid, series_mode="accumulate",
            series_acc_field="text",
        )  # fmt: skip
    if kind == "non-string":
        return EventInput(type="d", data=rng.choice([None, 3, ["l"]]), **ACC)
    if kind == "latest":
        return EventInput(type="p", data={"delta": "L"}, series_id=sid, series_mode="latest")
    if kind == "keep":
        return EventInput(type="k", data={"delta": "K"}, series_id=sid, series_mode="keep-all")
    return EventInput(type="log", data=rng.randrange(10))


@pytest.mark.parametrize("seed", range(8))
async def test_live_merged_values_match_what_stores_computed(engine: TaskEngine, seed: int) -> None:
    rng = random.Random(seed)
    tid = await running_task(engine)
    published: list[Any] = []
    readers: list[tuple[int, asyncio.Task[list[Frame]]]] = []
    for _ in range(5):
        # A subscriber joins (from the start, or resuming after a random event), reads its
        # replay up to the last published index, then everything after it is live.
        boundary = len(published)  # the status event is index 0
        opts: dict[str, Any] = {"series_format": "accumulated"}
        replayed = True
        if published and rng.random() < 0.5:
            cursor = rng.choice(published)
            opts["since_id"] = cursor.id
            replayed = cursor.index < boundary
        it = stream(engine, tid, **opts)
        async with asyncio.timeout(5):
            while replayed:
                frame = parse(await anext(it))
                if frame.event == "taskcast.event" and frame.data["rawIndex"] >= boundary:
                    break
        readers.append((boundary, asyncio.create_task(collect(it))))
        # Let it finish its replay: what a stream reads from the store (a replay, or the
        # rest of a task that ended meanwhile) is sent as stored, not merged.
        await asyncio.sleep(0.01)
        for _ in range(rng.randrange(1, 4)):
            batch = [_random_input(rng) for _ in range(rng.randrange(1, 12))]
            published.extend(await engine.publish_events(tid, batch))
    await engine.transition_task(tid, "completed")
    reference = _reference(published)
    checked = 0
    for boundary, reader in readers:
        frames = await asyncio.wait_for(reader, 5)
        assert frames[-1].data == {"reason": "completed"}
        for env in events(frames):
            index = env["rawIndex"]
            assert index > boundary  # everything after the replay came live, once
            if index in reference:
                assert env["data"] == reference[index], (seed, index)
                checked += 1
    assert checked > 0
