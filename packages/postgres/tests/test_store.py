"""PostgresLongTermStore against the real server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from taskcast.core import (
    ConfigError,
    EventDraft,
    EventQuery,
    InvalidInputError,
    LongTermStore,
    StorageUnavailableError,
    Task,
    TaskEvent,
    UsageError,
    new_id,
    now_ms,
)
from taskcast.core.testing import LongTermStoreContract
from taskcast.postgres import PostgresLongTermStore

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


def make_task(task_id: str | None = None, **fields: Any) -> Task:
    now = now_ms()
    fields.setdefault("created_at", now)
    fields.setdefault("updated_at", now)
    return Task(id=task_id or new_id(), **fields)


def event(task_id: str, index: int, data: Any = None, **fields: Any) -> TaskEvent:
    fields.setdefault("timestamp", 1000 + index)
    fields.setdefault("level", "info")
    return EventDraft(id=new_id(), type="log", data=data, **fields).at(task_id, index)


class TestPostgresContract(LongTermStoreContract):
    @pytest.fixture
    async def long_term(self, store: PostgresLongTermStore) -> AsyncIterator[LongTermStore]:
        yield store


async def test_is_a_long_term_store(store: PostgresLongTermStore) -> None:
    assert isinstance(store, LongTermStore)
    assert store.name == "postgres"
    await store.ping()
    assert store.pool_stats()["pool_max"] == 4


async def test_task_fields_round_trip(store: PostgresLongTermStore) -> None:
    task = make_task(
        type="llm.chat",
        status="blocked",
        params={"prompt": "héllo 🌍", "n": 1},
        result={"ok": True},
        error={"message": "x", "code": "E1"},
        metadata={"user": "u1", "nested": {"deep": [1, 2, {"x": None}]}},
        completed_at=None,
        ttl=60,
        auth_config={"rules": [{"match": {"scope": ["event:subscribe"]}}]},
        webhooks=[{"url": "http://example.invalid/hook", "events": ["*"]}],
        cleanup={"rules": []},
        tags=["a", "b"],
        assign_mode="external",
        cost=2,
        assigned_worker="w1",
        disconnect_policy="mark",
        reason="needs approval",
        resume_at=now_ms() + 5000,
        blocked_request={"type": "approval", "data": {"q": "ok?"}},
    )
    await store.save_task(task)
    got = await store.get_task(task.id)
    assert got is not None
    assert got.to_dict() == task.to_dict()
    assert await store.get_task("missing-" + new_id()) is None


async def test_jsonb_round_trip(store: PostgresLongTermStore) -> None:
    task = make_task()
    await store.save_task(task)
    payloads: list[Any] = [
        {"nested": {"list": [1, "two", None, {"x": 1.5}], "empty": {}, "none": None}},
        {"unicode": '中文 — émoji 🚀 \u2028 "quoted" \\ back', "ключ": "значение"},
        {"big": 2**70, "negative": -(2**63), "max_safe": 2**53 + 1, "float": 0.1},
        [1, [2, [3, [4]]]],
        "just a string",
        12345678901234567890,
        True,
        None,
    ]
    events = [event(task.id, i, data) for i, data in enumerate(payloads)]
    await store.save_events(events)
    stored = await store.get_events(task.id, EventQuery())
    assert [e.data for e in stored] == payloads
    assert [e.to_dict() for e in stored] == [e.to_dict() for e in events]


async def test_event_fields_round_trip(store: PostgresLongTermStore) -> None:
    task = make_task()
    await store.save_task(task)
    e = event(
        task.id,
        0,
        {"text": "a"},
        series_id="s",
        series_mode="accumulate",
        series_acc_field="text",
        idempotency_key="key-1",
        level="warn",
    )
    await store.save_events([e])
    (got,) = await store.get_events(task.id, EventQuery())
    assert got.to_dict() == e.to_dict()


async def test_queries(store: PostgresLongTermStore) -> None:
    task = make_task()
    await store.save_task(task)
    await store.save_events([event(task.id, i, i) for i in range(10)])

    async def indexes(**q: Any) -> list[int]:
        return [e.index for e in await store.get_events(task.id, EventQuery(**q))]

    assert await indexes() == list(range(10))
    assert await indexes(after_index=6) == [7, 8, 9]
    assert await indexes(after_index=2, limit=3) == [3, 4, 5]
    assert await indexes(after_timestamp=1007) == [8, 9]
    assert await indexes(after_index=1, after_timestamp=1007, limit=1) == [8]
    assert await indexes(limit=0) == list(range(10))  # 0 means no limit, as in the original
    assert await store.get_events("missing", EventQuery()) == []


async def test_latest_series_keeps_newest_row(store: PostgresLongTermStore) -> None:
    task = make_task()
    other = make_task()
    await store.save_task(task)
    await store.save_task(other)
    lat = {"series_id": "progress", "series_mode": "latest"}
    first = event(task.id, 0, {"pct": 1}, **lat)
    await store.save_events([first, event(task.id, 1, "x")])
    await store.save_events([event(other.id, 0, {"pct": 50}, **lat)])
    second = event(task.id, 2, {"pct": 2}, **lat)
    await store.save_events([second])
    assert [(e.index, e.data) for e in await store.get_events(task.id, EventQuery())] == [
        (1, "x"),
        (2, {"pct": 2}),
    ]
    # A replaced event arriving again (a retried write) does not come back.
    await store.save_events([first])
    # Several of one series in a batch: only the newest survives.
    batch = [event(task.id, 3, {"pct": 3}, **lat), event(task.id, 4, {"pct": 4}, **lat)]
    await store.save_events(batch)
    stored = await store.get_events(task.id, EventQuery())
    assert [(e.index, e.data) for e in stored] == [(1, "x"), (4, {"pct": 4})]
    assert stored[1].id == batch[1].id
    # An older event of the series arriving after a newer one is not stored.
    await store.save_events([event(task.id, 3, {"pct": 3}, **lat)])
    assert [e.index for e in await store.get_events(task.id, EventQuery())] == [1, 4]
    # The other task's series is untouched.
    assert [e.data for e in await store.get_events(other.id, EventQuery())] == [{"pct": 50}]


async def test_events_of_unknown_task_are_skipped(store: PostgresLongTermStore) -> None:
    task = make_task()
    await store.save_task(task)
    ghost = new_id()
    await store.save_events([event(ghost, 0), event(task.id, 0)])
    assert await store.get_events(ghost, EventQuery()) == []
    assert len(await store.get_events(task.id, EventQuery())) == 1
    await store.save_events([])


async def test_task_writes_arriving_out_of_order(store: PostgresLongTermStore) -> None:
    task = make_task(updated_at=1000)
    await store.save_task(task.copy(status="running", updated_at=2000))
    await store.save_task(task)  # older snapshot arrives late
    got = await store.get_task(task.id)
    assert got is not None and got.status == "running"
    done = task.copy(status="completed", updated_at=1500, completed_at=1500)
    await store.save_task(done)  # terminal wins even with an older clock
    await store.save_task(task.copy(status="running", updated_at=9000))
    got = await store.get_task(task.id)
    assert got is not None and got.status == "completed" and got.completed_at == 1500


async def test_delete_removes_task_and_events(store: PostgresLongTermStore) -> None:
    task = make_task()
    await store.save_task(task)
    await store.save_events([event(task.id, 0), event(task.id, 1)])
    await store.delete_task(task.id)
    assert await store.get_task(task.id) is None
    assert await store.get_events(task.id, EventQuery()) == []
    await store.delete_task(task.id)  # deleting again is harmless


async def test_unstorable_data_is_rejected(store: PostgresLongTermStore) -> None:
    task = make_task()
    await store.save_task(task)
    with pytest.raises(InvalidInputError):
        await store.save_events([event(task.id, 0, {"nul": "a\x00b"})])
    with pytest.raises(InvalidInputError):
        await store.save_events([event(task.id, 0, {"obj": object()})])
    with pytest.raises(InvalidInputError):
        await store.save_events([event(task.id, 0, {"nan": float("nan")})])
    with pytest.raises(InvalidInputError):
        await store.save_events([event(task.id, 0, [float("inf")])])
    with pytest.raises(InvalidInputError):
        await store.save_task(make_task(metadata={"nul": "\x00"}))
    assert await store.get_events(task.id, EventQuery()) == []


async def test_a_batch_keeps_every_value(pg_url: str, store: PostgresLongTermStore) -> None:
    task = make_task()
    await store.save_task(task)
    values: list[Any] = [
        None,
        {"text": 'é\u2028\U0001f600 "q" \\', "big": 2**70, "f": 0.1, "neg": -3},
        [1, [2, {"k": None}], True, False, ""],
        "plain",
        {"1": "int key as text"},
    ]
    events = [event(task.id, i, v) for i, v in enumerate(values)]
    events[1] = EventDraft(
        id=new_id(), type="d", level="warn", data=values[1], series_id="s",
        series_mode="accumulate", series_acc_field="text", idempotency_key="k1",
        timestamp=5,
    ).at(task.id, 1)  # fmt: skip
    await store.save_events(events)
    got = await store.get_events(task.id, EventQuery())
    assert [e.to_dict() for e in got] == [e.to_dict() for e in events]
    # A null data is the JSON null, as psycopg stored it before (not an SQL NULL).
    with psycopg.connect(pg_url) as conn:
        conn.execute(f"SET search_path TO {store.schema}")
        row = conn.execute(
            "SELECT data IS NULL, jsonb_typeof(data) FROM taskcast_events"
            " WHERE task_id = %s AND idx = 0",
            (task.id,),
        ).fetchone()
    assert row == (False, "null")


async def test_data_is_readable_without_the_schema_option(
    pg_url: str, migrated: str, store: PostgresLongTermStore
) -> None:
    task = make_task()
    await store.save_task(task)
    await store.save_events([event(task.id, 0, {"a": 1})])
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            f'SELECT idx, data, type, level FROM "{migrated}".taskcast_events WHERE task_id = %s',
            (task.id,),
        ).fetchone()
    assert row == (0, {"a": 1}, "log", "info")


async def test_lifecycle_and_usage_errors(pg_url: str, migrated: str) -> None:
    with pytest.raises(UsageError):
        PostgresLongTermStore(pg_url, min_size=3, max_size=2)
    s = PostgresLongTermStore(pg_url, schema=migrated, check_connections=False)
    with pytest.raises(UsageError):
        await s.get_task("x")
    await s.close()  # closing a store never opened is harmless
    await s.open()
    await s.open()
    await s.ping()
    await s.close()
    await s.close()
    await s.open()  # reopening after close (an engine started again) gets a fresh pool
    await s.ping()
    await s.close()


async def test_unreachable_server(pg_url: str) -> None:
    url = psycopg.conninfo.make_conninfo(pg_url, host="127.0.0.1", port="1")
    s = PostgresLongTermStore(url, timeout=0.5, connect_timeout=1)
    await s.open()
    try:
        with pytest.raises(StorageUnavailableError) as caught:
            await s.ping()
        assert caught.value.dependency == "postgres"
        with pytest.raises(StorageUnavailableError):
            await s.get_events("x", EventQuery())
    finally:
        await s.close()


async def test_missing_schema_asks_for_migrations(pg_url: str, schema: str) -> None:
    s = PostgresLongTermStore(pg_url, schema=schema)
    await s.open()
    try:
        with pytest.raises(ConfigError, match="taskcast migrate"):
            await s.get_task("x")
    finally:
        await s.close()


@contextlib.asynccontextmanager
async def _used_then_killed(
    pg_url: str, schema: str, check_idle_seconds: float
) -> AsyncIterator[PostgresLongTermStore]:
    """A store with one pooled connection, used once and then killed by the server."""
    name = "tc-check-" + new_id()
    s = PostgresLongTermStore(
        pg_url,
        schema=schema,
        min_size=1,
        max_size=1,
        check_idle_seconds=check_idle_seconds,
        connect_kwargs={"application_name": name},
    )
    await s.open()
    try:
        await s.ping()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            ).fetchone()
        assert row == (1,)
        yield s
    finally:
        await s.close()


async def test_a_connection_idle_for_a_while_is_checked_before_use(
    pg_url: str, migrated: str
) -> None:
    async with _used_then_killed(pg_url, migrated, check_idle_seconds=0.2) as s:
        # Idle longer than check_idle_seconds: the check finds it dead and the pool
        # hands out a new connection, so the operation succeeds.
        await asyncio.sleep(0.3)
        await s.ping()


async def test_a_connection_used_moments_ago_is_not_checked(pg_url: str, migrated: str) -> None:
    async with _used_then_killed(pg_url, migrated, check_idle_seconds=60) as s:
        # No round trip to check it: the dead connection fails this one operation (the
        # archive writer retries such failures), and is replaced for the next.
        with pytest.raises(StorageUnavailableError):
            await s.ping()
        await s.ping()


async def _timed(call: Any) -> tuple[float, BaseException | None]:
    started = asyncio.get_running_loop().time()
    try:
        await call
    except StorageUnavailableError as exc:
        return asyncio.get_running_loop().time() - started, exc
    return asyncio.get_running_loop().time() - started, None


async def test_an_outage_fails_fast_and_recovery_is_at_once(
    pg_url: str, migrated: str, proxy: Any
) -> None:
    # The default 10 s pool timeout: before the circuit breaker every read waited all of
    # it during an outage, and the first one after it still waited on the pool's backoff.
    s = PostgresLongTermStore(proxy.url(pg_url), schema=migrated, min_size=2, max_size=4)
    await s.open()
    try:
        await s.save_task(make_task("kept"))
        proxy.cut()
        for _ in range(5):
            elapsed, error = await _timed(s.get_task("kept"))
            assert isinstance(error, StorageUnavailableError), error
            assert elapsed < 1.0, f"{elapsed:.2f} s during the outage"
            await asyncio.sleep(0.2)
        assert s.breaker.state == "open"
        # Concurrent operations fail fast as well (none queues for a connection).
        results = await asyncio.gather(*(_timed(s.get_task("kept")) for _ in range(10)))
        assert all(isinstance(error, StorageUnavailableError) for _, error in results)
        assert max(elapsed for elapsed, _ in results) < 1.0

        proxy.restore()
        restored = asyncio.get_running_loop().time()
        while True:
            elapsed, error = await _timed(s.get_task("kept"))
            assert elapsed < 1.0, f"{elapsed:.2f} s after PostgreSQL came back"
            if error is None:
                break
            assert asyncio.get_running_loop().time() - restored < 2.0, "not recovered"
            await asyncio.sleep(0.05)
        assert s.breaker.state == "closed"
        assert (await s.get_task("kept")) is not None
    finally:
        await s.close()
