"""RedisShortTermStore beyond the contract: fidelity, series parity, paging, errors."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from typing import Any, cast

import pytest
import redis.asyncio as aredis

from taskcast.core import (
    EventDraft,
    EventQuery,
    InvalidInputError,
    MemoryShortTermStore,
    StaleRevisionError,
    StorageUnavailableError,
    Task,
    TaskConflictError,
    TaskEvent,
    TaskNotFoundError,
    TaskQuery,
    TaskTerminalError,
    new_id,
    now_ms,
)
from taskcast.redis import RedisShortTermStore, script_source
from taskcast.redis._codec import ARGS_PER_DRAFT, draft_args, event_json

pytestmark = pytest.mark.anyio


def make_task(task_id: str | None = None, **fields: Any) -> Task:
    now = now_ms()
    fields.setdefault("created_at", now)
    fields.setdefault("updated_at", now)
    return Task(id=task_id or new_id(), **fields)


def draft(data: Any = None, type_: str = "log", **fields: Any) -> EventDraft:
    return EventDraft(
        id=new_id(), timestamp=now_ms(), type=type_, level="info", data=data, **fields
    )


AWKWARD_DATA: list[Any] = [
    {},
    [],
    {"empty": {}, "list": [], "nested": [{}, [[]], {"a": []}]},
    {"big": 2**63 + 1, "huge": 10**40, "neg": -(2**70), "f": 0.1 + 0.2, "tiny": 5e-324},
    {"unicode": 'héllo wörld 😀 \u2028 \u0001 "q" \\ / \\u0000', "日本": "語"},
    "plain string",
    12345678901234567890,
    1.5,
    None,
    True,
    [1, "two", None, {"x": 1.5}],
    {"deep": {"a": {"b": {"c": {"d": [1, [2, [3, {}]]]}}}}},
]


# -- encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", AWKWARD_DATA)
def test_spliced_json_equals_to_dict(data: Any) -> None:
    d = EventDraft(
        id=new_id(),
        timestamp=1,
        type="t",
        level="warn",
        data=data,
        series_id="s",
        series_mode="accumulate",
        series_acc_field="f",
        idempotency_key="k",
    )
    args = draft_args("task-1", d)
    assert len(args) == ARGS_PER_DRAFT
    p1, p2, data_json, p3 = args[4:8]
    assert p1 + "7" + p2 + data_json + p3 == event_json(d.at("task-1", 7))


@pytest.mark.parametrize("data", ["\u0000", {"k": ["a\u0000"]}, {"k\u0000": 1}])
def test_data_holding_nul_is_refused_before_it_is_committed(data: Any) -> None:
    # PostgreSQL cannot archive a NUL; the HTTP API refuses it too (architecture: NUL).
    with pytest.raises(InvalidInputError, match="contains a NUL character"):
        draft_args("task-1", draft(data))


def test_accumulate_drafts_travel_like_any_other() -> None:
    # No accumulate-specific values: the script stores and publishes the delta as itself.
    acc = draft({"a": 1, "delta": "x", "z": [{}]}, series_id="s", series_mode="accumulate")
    plain = dataclasses.replace(acc, series_mode="keep-all")
    a, p = draft_args("t", acc), draft_args("t", plain)
    assert len(a) == len(p) == ARGS_PER_DRAFT
    assert a[3] == "accumulate" and a[:3] + a[4:7] == p[:3] + p[4:7]


def test_scripts_ship_as_files() -> None:
    assert "position_after" in script_source("commit")
    assert "PUBLISH" in script_source("commit")
    assert "LRANGE" in script_source("read_events")


@pytest.mark.parametrize("data", AWKWARD_DATA)
async def test_data_round_trips_exactly(store: RedisShortTermStore, data: Any) -> None:
    task = make_task()
    await store.create_task(task)
    d = draft(data, idempotency_key="k")
    result = await store.commit_events(task.id, [d])
    (stored,) = await store.get_events(task.id, EventQuery())
    assert stored.data == data
    assert type(stored.data) is type(data)
    assert stored.to_dict() == result.events[0].to_dict()
    again = await store.commit_events(task.id, [draft("other", idempotency_key="k")])
    assert again.events[0].data == data and again.fresh == []


async def test_task_round_trips_exactly(store: RedisShortTermStore) -> None:
    task = make_task(params={"n": 2**64, "e": {}, "l": [], "u": "ü😀"}, metadata={})
    await store.create_task(task)
    got = await store.get_task(task.id)
    assert got is not None and got.to_dict() == task.to_dict()


# -- accumulate / latest parity with the memory store ------------------------------------


def _random_drafts(rng: random.Random, n: int) -> list[EventDraft]:
    out = []
    for _ in range(n):
        roll = rng.random()
        sid = rng.choice(["a", "b", ""])
        fld = rng.choice([None, "text"])
        data: Any
        choice = rng.random()
        key = fld or "delta"
        if choice < 0.55:
            data = {key: rng.choice(["x", "yz", "ü", "😀", "", '\\n"/']), "n": rng.randint(0, 3)}
        elif choice < 0.65:
            data = {key: 5}
        elif choice < 0.75:
            data = {"other": "s"}
        elif choice < 0.85:
            data = ["delta"]
        elif choice < 0.9:
            data = {}
        else:
            data = "str"
        if roll < 0.55:
            mode = "accumulate"
        elif roll < 0.8:
            mode = "latest"
        elif roll < 0.9:
            mode = "keep-all"
        else:
            mode = None
        idem = rng.choice([None, None, None, "k1", "k2", ""])
        out.append(
            EventDraft(
                id=new_id(),
                timestamp=now_ms(),
                type="t",
                level="info",
                data=data,
                series_id=sid if mode is not None else None,
                series_mode=mode,  # type: ignore[arg-type]
                series_acc_field=fld,
                idempotency_key=idem,
            )
        )
    return out


@pytest.mark.parametrize("seed", range(12))
async def test_series_behaviour_matches_memory_store(store: RedisShortTermStore, seed: int) -> None:
    rng = random.Random(seed)
    memory = MemoryShortTermStore()
    task = make_task()
    await memory.create_task(task)
    await store.create_task(task)
    for _ in range(12):
        batch = _random_drafts(rng, rng.randint(1, 6))
        want = await memory.commit_events(task.id, batch)
        got = await store.commit_events(task.id, batch)
        assert [e.to_dict() for e in got.events] == [e.to_dict() for e in want.events]
        assert [e.to_dict() for e in got.fresh] == [e.to_dict() for e in want.fresh]
        # The store computes no accumulated values (subscribers' streams do).
        assert not any(e.has_accumulated for e in got.fresh)
    stored_mem = await memory.get_events(task.id, EventQuery())
    stored = await store.get_events(task.id, EventQuery())
    assert [e.to_dict() for e in stored] == [e.to_dict() for e in stored_mem]
    for after in range(-1, await store.last_index(task.id) + 1):
        q = EventQuery(after_index=after, limit=3)
        assert [e.index for e in await store.get_events(task.id, q)] == [
            e.index for e in await memory.get_events(task.id, q)
        ]


async def test_accumulate_deltas_are_stored_as_themselves(store: RedisShortTermStore) -> None:
    task = make_task()
    await store.create_task(task)
    acc = {"series_id": "s", "series_mode": "accumulate"}
    keys = store.keys.for_task(task.id)
    parts = ['He said "hi"', " \\ / \n", "😀ü", "\u0001", "", "\ud800"]
    for i, part in enumerate(parts):
        d = draft({"delta": part, "big": 2**70}, **acc)
        r = await store.commit_events(task.id, [d])
        (event,) = r.fresh
        assert event.index == i and not event.has_accumulated
        assert event.to_dict() == d.at(task.id, i).to_dict()
        # The series state is the delta itself; the meta its mode and index.
        assert await store.client.hget(keys.series_state, "s") == event_json(event).encode()
        assert await store.client.hget(keys.series_meta, "s") == f"accumulate {i}".encode()
    stored = await store.get_events(task.id, EventQuery())
    assert [e.data for e in stored] == [{"delta": p, "big": 2**70} for p in parts]


async def test_publish_carries_events_as_stored(store: RedisShortTermStore) -> None:
    task = make_task()
    await store.create_task(task)
    pubsub = store.client.pubsub()
    await pubsub.subscribe(store.keys.channel(task.id))
    try:
        acc = {"series_id": "s", "series_mode": "accumulate"}
        await store.commit_events(task.id, [draft({"delta": "a"}, **acc)])
        await store.commit_events(
            task.id,
            [
                draft({"delta": "b", "n": 1}, **acc),
                draft({"p": 1}, series_id="q", series_mode="latest"),
            ],
        )
        payloads: list[bytes] = []
        for _ in range(500):
            if len(payloads) == 2:
                break
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.01)
            if message is not None:
                payloads.append(message["data"])
        events_key = store.keys.for_task(task.id).events
        raws = cast("list[bytes]", await store.client.lrange(events_key, 0, -1))
        assert payloads == [b"[" + raws[0] + b"]", b"[" + raws[1] + b"," + raws[2] + b"]"]
        assert b"_accumulatedData" not in b"".join(payloads)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_accumulate_state_after_switching_modes(store: RedisShortTermStore) -> None:
    memory = MemoryShortTermStore()
    task = make_task()
    for s in (memory, store):
        await s.create_task(task)
    batches = [
        [draft({"delta": "a"}, series_id="s", series_mode="accumulate")],
        [draft({"delta": "b"}, series_id="s", series_mode="accumulate")],
        [draft({"p": 1}, series_id="s", series_mode="latest")],
        [draft({"delta": "c"}, series_id="s", series_mode="accumulate")],
        [draft({"p": 2}, series_id="s", series_mode="latest")],
    ]
    for batch in batches:
        await memory.commit_events(task.id, batch)
        await store.commit_events(task.id, batch)
    assert [e.to_dict() for e in await store.get_events(task.id, EventQuery())] == [
        e.to_dict() for e in await memory.get_events(task.id, EventQuery())
    ]


# -- paging ------------------------------------------------------------------------------


async def test_long_history_pages_with_replaced_entries(redis_url: str, prefix: str) -> None:
    store = RedisShortTermStore(redis_url, prefix=prefix, page_size=300)
    await store.open()
    try:
        task = make_task()
        await store.create_task(task)
        memory = MemoryShortTermStore()
        await memory.create_task(task)
        batch: list[EventDraft] = []
        for i in range(10_000):
            if i % 7 == 3:
                batch.append(
                    EventDraft(
                        id=new_id(),
                        timestamp=i,
                        type="p",
                        level="info",
                        data={"pct": i},
                        series_id=f"p{i % 3}",
                        series_mode="latest",
                    )
                )
            else:
                batch.append(EventDraft(id=new_id(), timestamp=i, type="t", level="info", data=i))
            if len(batch) == 1000:
                await store.commit_events(task.id, batch)
                await memory.commit_events(task.id, batch)
                batch = []
        everything = await store.get_events(task.id, EventQuery())
        assert [e.index for e in everything] == [
            e.index for e in await memory.get_events(task.id, EventQuery())
        ]
        replaced = len(range(3, 10_000, 7)) - 3
        assert len(everything) == 10_000 - replaced
        for after in (-1, 0, 2, 3, 10, 4999, 9996, 9999, 20_000):
            for limit in (None, 1, 5, 301) if after in (-1, 4999, 9996) else (1, 5, 301):
                q = EventQuery(after_index=after, limit=limit)
                assert [e.index for e in await store.get_events(task.id, q)] == [
                    e.index for e in await memory.get_events(task.id, q)
                ]
        for q in (
            EventQuery(after_timestamp=9990, limit=4),
            EventQuery(after_timestamp=5000, after_index=7000, limit=2),
            EventQuery(after_timestamp=9000),
        ):
            assert [e.index for e in await store.get_events(task.id, q)] == [
                e.index for e in await memory.get_events(task.id, q)
            ]
        assert await store.last_index(task.id) == 9999
    finally:
        await store.close()


async def test_list_tasks_pages_through_equal_timestamps(store: RedisShortTermStore) -> None:
    created = [make_task(f"t{i:03d}", created_at=5000 + i // 40) for i in range(130)]
    rng = random.Random(1)
    for task in rng.sample(created, len(created)):
        await store.create_task(task)
    seen: list[str] = []
    after = None
    while True:
        page = await store.list_tasks(TaskQuery(limit=17, after=after))
        seen.extend(t.id for t in page.tasks)
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [t.id for t in created]
    everything = await store.list_tasks(TaskQuery())
    assert [t.id for t in everything.tasks] == seen and everything.next_after is None
    # A cursor whose task was deleted still resumes at the right place, even past a whole
    # batch of tasks created in the same millisecond.
    same = [make_task(f"s{i:03d}", created_at=1) for i in range(130)]
    for task in same:
        await store.create_task(task)
    await store.delete_task("s120")
    past = await store.list_tasks(TaskQuery(after=(1, "s120"), limit=2))
    assert [t.id for t in past.tasks] == ["s121", "s122"]
    await store.delete_task("t050")
    rest = await store.list_tasks(TaskQuery(after=(created[50].created_at, "t050"), limit=3))
    assert [t.id for t in rest.tasks] == ["t051", "t052", "t053"]


async def test_list_tasks_filters(store: RedisShortTermStore) -> None:
    a = make_task("a", type="llm.chat", created_at=1)
    b = make_task("b", type="job", status="running", created_at=2)
    c = make_task("c", created_at=3)
    for t in (a, b, c):
        await store.create_task(t)
    assert [t.id for t in (await store.list_tasks(TaskQuery(types=("llm.*",)))).tasks] == ["a"]
    running = await store.list_tasks(TaskQuery(statuses=("running",), limit=1))
    assert [t.id for t in running.tasks] == ["b"] and running.next_after is None
    many = await store.list_tasks(TaskQuery(statuses=("pending",), limit=1))
    assert [t.id for t in many.tasks] == ["a"] and many.next_after == (1, "a")
    by_id = await store.list_tasks(TaskQuery(task_ids=frozenset({"c", "a", "zz"}), after=(1, "a")))
    assert [t.id for t in by_id.tasks] == ["c"]
    assert (await store.list_tasks(TaskQuery(task_ids=frozenset()))).tasks == []
    zero = await store.list_tasks(TaskQuery(limit=0))
    assert zero.tasks == [] and zero.next_after is None


# -- lifecycle and layout ----------------------------------------------------------------


async def test_key_layout_and_delete_removes_everything(
    store: RedisShortTermStore, prefix: str
) -> None:
    task = make_task("t1")
    await store.create_task(task)
    await store.commit_events(
        "t1",
        [
            draft({"delta": "a"}, series_id="s", series_mode="accumulate", idempotency_key="k"),
            draft({"pct": 1}, series_id="p", series_mode="latest"),
        ],
    )
    current = await store.get_task_revision("t1")
    assert current is not None
    await store.commit_transition(current[0].copy(status="running"), current[1], [])
    client = store.client
    types = {
        k.decode(): (await client.type(k)).decode()  # type: ignore[union-attr]
        async for k in client.scan_iter(match=f"{prefix}:*")
    }
    assert types == {
        f"{prefix}:task:t1": "string",
        f"{prefix}:taskStatus:t1": "string",
        f"{prefix}:taskRevision:t1": "string",
        f"{prefix}:tasks": "set",
        f"{prefix}:tasksByCreated": "zset",
        f"{prefix}:events:t1": "list",
        f"{prefix}:idx:t1": "string",
        f"{prefix}:seriesState:t1": "hash",
        f"{prefix}:seriesMeta:t1": "hash",
        f"{prefix}:idem:t1": "hash",
        f"{prefix}:eventIdx:t1": "hash",
        f"{prefix}:archivePending": "zset",
    }
    assert await client.get(f"{prefix}:taskStatus:t1") == b"running"
    state = json.loads(await client.hget(f"{prefix}:seriesState:t1", "s") or "null")
    assert state["data"] == {"delta": "a"} and state["index"] == 0
    assert await store.delete_task("t1") is True
    assert [k async for k in client.scan_iter(match=f"{prefix}:*")] == []


async def test_missing_task_reads(store: RedisShortTermStore) -> None:
    assert await store.get_task_revision("nope") is None
    assert await store.get_task("nope") is None
    assert await store.delete_task("nope") is False
    task = make_task()
    await store.create_task(task)
    await store.commit_events(task.id, [draft(), draft()])
    assert await store.get_events(task.id, EventQuery(limit=0)) == []


async def test_transition_missing_and_stale(
    store: RedisShortTermStore, other_store: RedisShortTermStore
) -> None:
    with pytest.raises(TaskNotFoundError):
        await store.commit_events("nope", [draft()])
    task = make_task()
    await store.create_task(task)
    with pytest.raises(TaskConflictError):
        await other_store.create_task(task)
    got = await other_store.get_task_revision(task.id)
    assert got is not None and got[1] == 0
    await store.commit_transition(task.copy(status="running"), 0, [draft(type_="taskcast:status")])
    with pytest.raises(StaleRevisionError):
        await other_store.commit_transition(task.copy(status="cancelled"), 0, [draft()])
    latest = await other_store.get_task_revision(task.id)
    assert latest is not None and latest[1] == 1 and latest[0].status == "running"
    await other_store.commit_transition(latest[0].copy(status="failed"), 1, [draft()])
    with pytest.raises(TaskTerminalError) as info:
        await store.commit_events(task.id, [draft()])
    assert info.value.status == "failed"


async def test_terminal_check_falls_back_to_task_json(store: RedisShortTermStore) -> None:
    task = make_task(status="completed")
    await store.create_task(task)
    await store.client.delete(store.keys.for_task(task.id).status)
    with pytest.raises(TaskTerminalError):
        await store.commit_events(task.id, [draft()])


async def test_external_client_is_left_open(redis_url: str, prefix: str) -> None:
    client = aredis.Redis.from_url(redis_url)
    store = RedisShortTermStore(client, prefix=prefix)
    await store.open()
    await store.create_task(make_task("x"))
    await store.close()
    assert await client.exists(f"{prefix}:task:x") == 1
    await client.aclose()


def test_page_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RedisShortTermStore("redis://127.0.0.1:1/0", page_size=0)


async def test_unreachable_redis_raises_storage_unavailable() -> None:
    store = RedisShortTermStore("redis://127.0.0.1:1/0", connect_timeout=1)
    with pytest.raises(StorageUnavailableError) as info:
        await store.open()
    assert info.value.dependency == "redis"
    assert info.value.kind == "connection_refused"
    with pytest.raises(StorageUnavailableError):
        await store.commit_events("t", [draft()])
    with pytest.raises(StorageUnavailableError):
        await store.get_events("t", EventQuery())
    await store.close()


# -- several processes -------------------------------------------------------------------


async def test_two_processes_commit_contiguous_indexes(
    store: RedisShortTermStore, other_store: RedisShortTermStore
) -> None:
    task = make_task()
    await store.create_task(task)

    async def writer(s: RedisShortTermStore, tag: str) -> list[int]:
        out: list[int] = []
        for i in range(40):
            r = await s.commit_events(task.id, [draft({"w": tag, "i": i}) for _ in range(3)])
            out.extend(e.index for e in r.events)
        return out

    a, b = await asyncio.gather(writer(store, "a"), writer(other_store, "b"))
    assert sorted(a + b) == list(range(240))
    assert not set(a) & set(b)
    stored = await other_store.get_events(task.id, EventQuery())
    assert [e.index for e in stored] == list(range(240))
    for tag in "ab":
        mine = [e.data["i"] for e in stored if e.data["w"] == tag]
        assert mine == sorted(mine)


async def test_two_processes_transition_race_one_winner(
    store: RedisShortTermStore, other_store: RedisShortTermStore
) -> None:
    task = make_task()
    await store.create_task(task)
    current = await store.get_task_revision(task.id)
    assert current is not None

    async def attempt(s: RedisShortTermStore, i: int) -> bool:
        try:
            await s.commit_transition(
                current[0].copy(status="cancelled", metadata={"w": i}), current[1], [draft()]
            )
        except StaleRevisionError:
            return False
        return True

    results = await asyncio.gather(
        *(attempt(store if i % 2 else other_store, i) for i in range(30))
    )
    assert results.count(True) == 1
    winner = results.index(True)
    final = await store.get_task(task.id)
    assert final is not None and final.metadata == {"w": winner}
    assert len(await store.get_events(task.id, EventQuery())) == 1


async def test_idempotency_across_processes(
    store: RedisShortTermStore, other_store: RedisShortTermStore
) -> None:
    task = make_task()
    await store.create_task(task)
    results = await asyncio.gather(
        *(
            (store if i % 2 else other_store).commit_events(
                task.id, [draft({"i": i}, idempotency_key="once")]
            )
            for i in range(20)
        )
    )
    ids = {r.events[0].id for r in results}
    assert len(ids) == 1
    assert sum(len(r.fresh) for r in results) == 1
    assert len(await store.get_events(task.id, EventQuery())) == 1


async def test_accumulate_and_latest_across_processes(
    store: RedisShortTermStore, other_store: RedisShortTermStore
) -> None:
    task = make_task()
    await store.create_task(task)
    acc = {"series_id": "out", "series_mode": "accumulate"}
    lat = {"series_id": "pct", "series_mode": "latest"}

    async def writer(s: RedisShortTermStore, letter: str) -> None:
        for i in range(25):
            await s.commit_events(
                task.id, [draft({"delta": letter}, **acc), draft({"pct": i}, **lat)]
            )

    await asyncio.gather(writer(store, "a"), writer(other_store, "b"))
    stored = await store.get_events(task.id, EventQuery())
    deltas = [e for e in stored if e.series_id == "out"]
    latest = [e for e in stored if e.series_id == "pct"]
    assert len(deltas) == 50 and len(latest) == 1
    assert latest[0].index == 99
    assert sorted("".join(e.data["delta"] for e in deltas)) == sorted("a" * 25 + "b" * 25)
    # The series state is the newest delta: no lost or reordered update.
    keys = store.keys.for_task(task.id)
    final = await store.client.hget(keys.series_state, "out")
    assert final == event_json(deltas[-1]).encode()
    meta = await store.client.hget(keys.series_meta, "out")
    assert meta == f"accumulate {deltas[-1].index}".encode()


async def _write_old_accumulate_state(
    store: RedisShortTermStore, task_id: str, sid: str, event: TaskEvent, text: str, meta: str
) -> None:
    """A series state as versions that merged in Lua left it: the accumulated event, and a
    meta with the literal's position after the mode and index."""
    keys = store.keys.for_task(task_id)
    state = event.copy(data={"k": 1, "delta": text})
    await store.client.hset(keys.series_state, sid, event_json(state))
    await store.client.hset(keys.series_meta, sid, meta)


@pytest.mark.parametrize("meta_tail", [" 57 300 delta", " 9 3 my field", " 1 2", ""])
async def test_accumulate_state_of_the_previous_format_is_read(
    store: RedisShortTermStore, meta_tail: str
) -> None:
    task = make_task()
    await store.create_task(task)
    acc = {"series_id": "s", "series_mode": "accumulate"}
    keys = store.keys.for_task(task.id)
    first = await store.commit_events(
        task.id,
        [
            draft("plain"),
            draft({"k": 1, "delta": "a"}, **acc),
            draft({"k": 1, "delta": "b"}, **acc),
        ],
    )
    last = first.fresh[2]
    await _write_old_accumulate_state(store, task.id, "s", last, 'é"ab', f"accumulate 2{meta_tail}")
    # Another delta: appended after it, the state becomes the delta.
    r = await store.commit_events(task.id, [draft({"k": 2, "delta": "c"}, **acc)])
    assert r.fresh[0].index == 3 and not r.fresh[0].has_accumulated
    assert await store.client.hget(keys.series_meta, "s") == b"accumulate 3"
    assert await store.client.hget(keys.series_state, "s") == event_json(r.fresh[0]).encode()
    # A switch to latest replaces the entry at the state's index, as before.
    r = await store.commit_events(task.id, [draft({"p": 1}, series_id="s", series_mode="latest")])
    assert r.fresh[0].index == 4
    assert await store.client.hget(keys.series_meta, "s") == b"latest 4"
    stored = await store.get_events(task.id, EventQuery())
    assert [e.index for e in stored] == [0, 1, 2, 4]
    assert stored[2].to_dict() == last.to_dict()

    # An old state followed directly by a latest event: the entry at its index goes.
    t_acc = {"series_id": "t", "series_mode": "accumulate"}
    (delta,) = (await store.commit_events(task.id, [draft({"delta": "x"}, **t_acc)])).fresh
    assert delta.index == 5
    await _write_old_accumulate_state(store, task.id, "t", delta, "wx", f"accumulate 5{meta_tail}")
    r = await store.commit_events(task.id, [draft({"p": 2}, series_id="t", series_mode="latest")])
    assert r.fresh[0].index == 6
    assert [e.index for e in await store.get_events(task.id, EventQuery())] == [0, 1, 2, 4, 6]
    assert await store.client.hget(keys.series_meta, "t") == b"latest 6"
