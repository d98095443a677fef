"""Behaviour every storage adapter must have (see :mod:`taskcast.core.testing`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from .._errors import StaleRevisionError, TaskConflictError, TaskNotFoundError, TaskTerminalError
from .._ids import new_id, now_ms
from .._models import EventDraft, EventQuery, Task, TaskEvent, TaskQuery
from .._ports import BroadcastProvider, LongTermStore, ShortTermStore


def make_task(task_id: str | None = None, **fields: Any) -> Task:
    now = now_ms()
    fields.setdefault("created_at", now)
    fields.setdefault("updated_at", now)
    return Task(id=task_id or new_id(), **fields)


def draft(type_: str = "log", data: Any = None, **fields: Any) -> EventDraft:
    return EventDraft(
        id=new_id(), timestamp=now_ms(), type=type_, level="info", data=data, **fields
    )


class ShortTermStoreContract:
    """Subclass and provide an async ``store`` fixture yielding an opened store."""

    pytestmark = pytest.mark.anyio

    async def test_create_and_get_round_trip(self, store: ShortTermStore) -> None:
        task = make_task(
            type="llm.chat",
            params={"prompt": "hi", "n": 1},
            metadata={"user": "u1"},
            ttl=60,
            tags=["a", "b"],
            webhooks=[{"url": "http://example.invalid/hook"}],
            cleanup={"rules": []},
            auth_config={"rules": []},
            assign_mode="external",
            cost=2,
            disconnect_policy="mark",
            deadline_at=now_ms() + 60_000,
            reason="r",
            resume_at=5,
            blocked_request={"type": "approve", "data": [1]},
            result={"r": True},
            error={"message": "m", "code": "c"},
            completed_at=7,
        )
        await store.create_task(task)
        got = await store.get_task(task.id)
        assert got is not None
        assert got.to_dict() == task.to_dict()
        assert await store.get_task("missing-" + new_id()) is None

    async def test_duplicate_id_conflicts(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        with pytest.raises(TaskConflictError):
            await store.create_task(make_task(task.id, type="other"))
        got = await store.get_task(task.id)
        assert got is not None and got.type is None

    async def test_indexes_are_contiguous_from_zero(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        first = await store.commit_events(task.id, [draft(data={"n": 0})])
        second = await store.commit_events(task.id, [draft(data={"n": 1}), draft(data={"n": 2})])
        assert [e.index for e in first.events] == [0]
        assert [e.index for e in second.events] == [1, 2]
        assert [e.index for e in second.fresh] == [1, 2]
        stored = await store.get_events(task.id, EventQuery())
        assert [(e.index, e.data) for e in stored] == [(0, {"n": 0}), (1, {"n": 1}), (2, {"n": 2})]
        assert all(e.task_id == task.id for e in stored)
        assert await store.last_index(task.id) == 2

    async def test_event_queries(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        drafts = [
            EventDraft(id=new_id(), timestamp=1000 + i, type="t", level="info", data=i)
            for i in range(10)
        ]
        await store.commit_events(task.id, drafts)
        after = await store.get_events(task.id, EventQuery(after_index=6))
        assert [e.index for e in after] == [7, 8, 9]
        limited = await store.get_events(task.id, EventQuery(after_index=2, limit=3))
        assert [e.index for e in limited] == [3, 4, 5]
        by_time = await store.get_events(task.id, EventQuery(after_timestamp=1007))
        assert [e.index for e in by_time] == [8, 9]
        assert await store.get_events("missing-" + new_id(), EventQuery()) == []

    async def test_event_fields_round_trip(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        d = EventDraft(
            id=new_id(),
            timestamp=123,
            type="llm.delta",
            level="warn",
            data={"nested": [1, "two", None, {"x": 1.5}]},
            series_id="s",
            series_mode="keep-all",
            series_acc_field="text",
            idempotency_key="k1",
        )
        await store.commit_events(task.id, [d])
        (stored,) = await store.get_events(task.id, EventQuery())
        assert stored.to_dict() == d.at(task.id, 0).to_dict()

    async def test_commit_to_missing_task(self, store: ShortTermStore) -> None:
        with pytest.raises(TaskNotFoundError):
            await store.commit_events("missing-" + new_id(), [draft()])

    async def test_commit_to_terminal_task_stores_nothing(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        await store.commit_events(task.id, [draft()])
        current = await store.get_task_revision(task.id)
        assert current is not None
        await store.commit_transition(
            current[0].copy(status="completed", completed_at=now_ms()), current[1], []
        )
        with pytest.raises(TaskTerminalError):
            await store.commit_events(task.id, [draft(), draft()])
        assert [e.index for e in await store.get_events(task.id, EventQuery())] == [0]
        assert await store.last_index(task.id) == 0

    async def test_idempotency_keys(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        one = await store.commit_events(task.id, [draft(data=1, idempotency_key="a")])
        again = await store.commit_events(task.id, [draft(data=2, idempotency_key="a")])
        assert again.events[0].id == one.events[0].id
        assert again.events[0].index == 0
        assert again.events[0].data == 1
        assert again.fresh == []
        mixed = await store.commit_events(
            task.id,
            [
                draft(data=3, idempotency_key="b"),
                draft(data=4, idempotency_key="a"),
                draft(data=5, idempotency_key="b"),
            ],
        )
        assert [e.index for e in mixed.events] == [1, 0, 1]
        assert [e.index for e in mixed.fresh] == [1]
        assert [e.data for e in await store.get_events(task.id, EventQuery())] == [1, 3]

    async def test_transition_compare_and_set(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        current = await store.get_task_revision(task.id)
        assert current is not None
        got, revision = current
        result = await store.commit_transition(
            got.copy(status="running"), revision, [draft("taskcast:status", {"status": "running"})]
        )
        assert [e.index for e in result.fresh] == [0]
        with pytest.raises(StaleRevisionError):
            await store.commit_transition(
                got.copy(status="cancelled"), revision, [draft("taskcast:status")]
            )
        after = await store.get_task(task.id)
        assert after is not None and after.status == "running"
        assert len(await store.get_events(task.id, EventQuery())) == 1
        newer = await store.get_task_revision(task.id)
        assert newer is not None and newer[1] != revision
        with pytest.raises(TaskNotFoundError):
            await store.commit_transition(make_task(), 0, [])

    async def test_concurrent_transitions_one_winner(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        current = await store.get_task_revision(task.id)
        assert current is not None
        got, revision = current

        async def attempt(i: int) -> bool:
            try:
                await store.commit_transition(
                    got.copy(status="cancelled", metadata={"winner": i}),
                    revision,
                    [draft("taskcast:status")],
                )
            except StaleRevisionError:
                return False
            return True

        results = await asyncio.gather(*(attempt(i) for i in range(20)))
        assert results.count(True) == 1
        assert len(await store.get_events(task.id, EventQuery())) == 1

    async def test_concurrent_commits_contiguous(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        results = await asyncio.gather(
            *(store.commit_events(task.id, [draft(data=i), draft(data=i)]) for i in range(25))
        )
        indexes = sorted(e.index for r in results for e in r.events)
        assert indexes == list(range(50))
        stored = await store.get_events(task.id, EventQuery())
        assert [e.index for e in stored] == list(range(50))

    async def test_accumulate_series(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        acc = {"series_id": "out", "series_mode": "accumulate"}
        r1 = await store.commit_events(task.id, [draft(data={"delta": "Hel"}, **acc)])
        r2 = await store.commit_events(
            task.id, [draft(data={"delta": "lo"}, **acc), draft(data={"delta": "!"}, **acc)]
        )
        # Deltas are stored and returned as they are; streams in seriesFormat=accumulated
        # merge them (stores do not, which would rewrite the whole text per delta).
        assert r1.events[0].data == {"delta": "Hel"}
        assert [e.data for e in r2.events] == [{"delta": "lo"}, {"delta": "!"}]
        assert not any(e.has_accumulated for e in [*r1.fresh, *r2.fresh])
        stored = await store.get_events(task.id, EventQuery())
        assert [e.data for e in stored] == [{"delta": "Hel"}, {"delta": "lo"}, {"delta": "!"}]
        assert [e.series_mode for e in stored] == ["accumulate"] * 3
        # A `latest` event of the same series replaces the newest delta's entry (the state).
        r3 = await store.commit_events(
            task.id, [draft(data={"pct": 1}, series_id="out", series_mode="latest")]
        )
        stored = await store.get_events(task.id, EventQuery())
        assert [e.index for e in stored] == [0, 1, r3.events[0].index]

    async def test_latest_series_keeps_one_entry(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        lat = {"series_id": "progress", "series_mode": "latest"}
        r1 = await store.commit_events(task.id, [draft(data={"pct": 1}, **lat)])
        await store.commit_events(task.id, [draft("other", data="x")])
        r3 = await store.commit_events(
            task.id, [draft(data={"pct": 2}, **lat), draft(data={"pct": 3}, **lat)]
        )
        stored = await store.get_events(task.id, EventQuery())
        assert [(e.index, e.data) for e in stored] == [(1, "x"), (3, {"pct": 3})]
        assert await store.resolve_cursor(task.id, r1.events[0].id) == 0
        assert await store.resolve_cursor(task.id, r3.events[0].id) == 2
        assert await store.resolve_cursor(task.id, r3.events[1].id) == 3
        assert [e.index for e in r3.fresh] == [2, 3]
        assert await store.last_index(task.id) == 3

    async def test_resolve_cursor(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        r = await store.commit_events(task.id, [draft(), draft()])
        assert await store.resolve_cursor(task.id, r.events[1].id) == 1
        assert await store.resolve_cursor(task.id, "nope") is None
        assert await store.resolve_cursor("missing-" + new_id(), r.events[0].id) is None
        assert await store.last_index("missing-" + new_id()) == -1

    async def test_list_tasks(self, store: ShortTermStore) -> None:
        marker = new_id()
        created = []
        for i, (status, type_) in enumerate(
            [
                ("pending", "llm.chat"),
                ("running", "llm.embed"),
                ("pending", "job"),
                ("pending", None),
            ]
        ):
            task = make_task(f"{marker}-{i}", type=type_, status=status, created_at=1000 + i)
            created.append(task)
            await store.create_task(task)
        ids = frozenset(t.id for t in created)
        everything = await store.list_tasks(TaskQuery(task_ids=ids))
        assert [t.id for t in everything.tasks] == [t.id for t in created]
        pending = await store.list_tasks(TaskQuery(task_ids=ids, statuses=("pending",)))
        assert [t.id for t in pending.tasks] == [created[0].id, created[2].id, created[3].id]
        llm = await store.list_tasks(TaskQuery(task_ids=ids, types=("llm.*",)))
        assert [t.id for t in llm.tasks] == [created[0].id, created[1].id]
        exact = await store.list_tasks(TaskQuery(task_ids=ids, types=("job",)))
        assert [t.id for t in exact.tasks] == [created[2].id]
        page1 = await store.list_tasks(TaskQuery(task_ids=ids, limit=3))
        assert [t.id for t in page1.tasks] == [t.id for t in created[:3]]
        assert page1.next_after is not None
        page2 = await store.list_tasks(TaskQuery(task_ids=ids, limit=3, after=page1.next_after))
        assert [t.id for t in page2.tasks] == [created[3].id]
        assert page2.next_after is None

    async def test_delete_task(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        r = await store.commit_events(task.id, [draft(idempotency_key="k")])
        assert await store.delete_task(task.id) is True
        assert await store.get_task(task.id) is None
        assert await store.get_events(task.id, EventQuery()) == []
        assert await store.resolve_cursor(task.id, r.events[0].id) is None
        assert await store.delete_task(task.id) is False
        # The id is free again and starts from index 0.
        await store.create_task(make_task(task.id))
        again = await store.commit_events(task.id, [draft(idempotency_key="k")])
        assert again.events[0].index == 0 and again.events[0].id != r.events[0].id

    async def test_delete_events_keeps_cursors(self, store: ShortTermStore) -> None:
        task = make_task()
        await store.create_task(task)
        r = await store.commit_events(task.id, [draft(data=i) for i in range(6)])
        assert await store.delete_events(task.id, [1, 3, 4, 99]) == 3
        stored = await store.get_events(task.id, EventQuery())
        assert [e.index for e in stored] == [0, 2, 5]
        assert [e.index for e in await store.get_events(task.id, EventQuery(after_index=1))] == [
            2,
            5,
        ]
        assert [e.index for e in await store.get_events(task.id, EventQuery(after_index=3))] == [5]
        assert await store.resolve_cursor(task.id, r.events[3].id) == 3
        assert await store.delete_events(task.id, []) == 0
        assert await store.delete_events("missing-" + new_id(), [0]) == 0
        more = await store.commit_events(task.id, [draft()])
        assert more.events[0].index == 6

    async def test_import_task_is_as_if_published(self, store: ShortTermStore) -> None:
        task = make_task(status="running", type="imported")
        acc = {"series_id": "out", "series_mode": "accumulate"}
        events = [
            draft("log", data={"n": 0}, idempotency_key="k0").at(task.id, 0),
            draft(data={"delta": "Hello"}, **acc).at(task.id, 1),
            draft(data={"pct": 50}, series_id="p", series_mode="latest").at(task.id, 2),
        ]
        assert await store.import_task(task, events) is True
        got = await store.get_task(task.id)
        assert got is not None and got.to_dict() == task.to_dict()
        stored = await store.get_events(task.id, EventQuery())
        assert [e.to_dict() for e in stored] == [e.to_dict() for e in events]
        assert await store.last_index(task.id) == 2
        assert await store.resolve_cursor(task.id, events[1].id) == 1
        # Publishing continues the history: next index, series state, idempotency keys.
        r = await store.commit_events(
            task.id,
            [
                draft(data={"pct": 90}, series_id="p", series_mode="latest"),
                draft("log", data={"n": 9}, idempotency_key="k0"),
                draft(data={"delta": "!"}, **acc),
            ],
        )
        assert r.events[1].id == events[0].id  # the remembered key answers the stored event
        assert [e.index for e in r.fresh] == [3, 4]
        stored = await store.get_events(task.id, EventQuery())
        assert [e.index for e in stored] == [0, 1, 3, 4]  # the latest entry was replaced
        # A transition prepared before the import cannot pass its compare-and-set after it.
        current = await store.get_task_revision(task.id)
        assert current is not None
        await store.commit_transition(current[0].copy(status="completed"), current[1], [])

    async def test_import_task_refuses_or_replaces_existing(self, store: ShortTermStore) -> None:
        task = make_task(status="running")
        await store.create_task(task)
        old = await store.commit_events(task.id, [draft("old"), draft("old")])
        before = await store.get_task_revision(task.id)
        assert before is not None
        new_task = make_task(task.id, status="completed", type="new")
        new_events = [draft("new").at(task.id, 0)]
        assert await store.import_task(new_task, new_events) is False
        assert [e.type for e in await store.get_events(task.id, EventQuery())] == ["old", "old"]
        assert await store.import_task(new_task, new_events, replace=True) is True
        got = await store.get_task(task.id)
        assert got is not None and got.to_dict() == new_task.to_dict()
        stored = await store.get_events(task.id, EventQuery())
        assert [e.to_dict() for e in stored] == [e.to_dict() for e in new_events]
        assert await store.last_index(task.id) == 0
        assert await store.resolve_cursor(task.id, old.events[1].id) is None
        with pytest.raises(StaleRevisionError):
            await store.commit_transition(before[0], before[1], [])
        # An import with no events is a task at its start.
        empty = make_task(status="pending")
        assert await store.import_task(empty, []) is True
        assert await store.last_index(empty.id) == -1
        assert (await store.commit_events(empty.id, [draft()])).events[0].index == 0

    async def test_ping(self, store: ShortTermStore) -> None:
        await store.ping()


class BroadcastContract:
    """Subclass and provide an async ``broadcast`` fixture yielding an opened provider."""

    pytestmark = pytest.mark.anyio

    async def _collect(
        self, broadcast: BroadcastProvider, task_id: str | None
    ) -> tuple[list[tuple[str, list[TaskEvent]]], Any]:
        got: list[tuple[str, list[TaskEvent]]] = []

        def handler(tid: str, events: Sequence[TaskEvent]) -> None:
            got.append((tid, list(events)))

        if task_id is None:
            unsub = await broadcast.subscribe_all(handler)
        else:
            unsub = await broadcast.subscribe(task_id, handler)
        return got, unsub

    async def _eventually(self, predicate: Any) -> None:
        for _ in range(200):
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not met in 2 s")

    async def test_publish_reaches_task_subscribers_in_order(
        self, broadcast: BroadcastProvider
    ) -> None:
        task_id = new_id()
        got, unsub = await self._collect(broadcast, task_id)
        other, unsub_other = await self._collect(broadcast, new_id())
        events = [draft(data=i).at(task_id, i) for i in range(5)]
        await broadcast.publish(task_id, events[:2])
        await broadcast.publish(task_id, events[2:])
        await self._eventually(lambda: sum(len(e) for _, e in got) == 5)
        flat = [e for _, batch in got for e in batch]
        assert [e.index for e in flat] == [0, 1, 2, 3, 4]
        assert flat[0].to_dict() == events[0].to_dict()
        assert all(tid == task_id for tid, _ in got)
        assert other == []
        await unsub()
        await unsub_other()

    async def test_subscribe_all_and_unsubscribe(self, broadcast: BroadcastProvider) -> None:
        task_id = new_id()
        everything, unsub_all = await self._collect(broadcast, None)
        mine, unsub = await self._collect(broadcast, task_id)
        await broadcast.publish(task_id, [draft().at(task_id, 0)])
        await self._eventually(lambda: len(mine) == 1 and any(t == task_id for t, _ in everything))
        await unsub()
        await unsub_all()
        await broadcast.publish(task_id, [draft().at(task_id, 1)])
        await asyncio.sleep(0.1)
        assert len(mine) == 1


class LongTermStoreContract:
    """Subclass and provide an async ``long_term`` fixture yielding an opened store."""

    pytestmark = pytest.mark.anyio

    async def test_tasks_and_events_round_trip(self, long_term: LongTermStore) -> None:
        task = make_task(type="x", params={"a": 1})
        await long_term.save_task(task)
        await long_term.save_task(task.copy(status="running"))
        got = await long_term.get_task(task.id)
        assert got is not None and got.status == "running" and got.params == {"a": 1}
        events = [draft(data=i).at(task.id, i) for i in range(5)]
        await long_term.save_events(events[:3])
        await long_term.save_events(events[1:])  # idempotent by id
        stored = await long_term.get_events(task.id, EventQuery())
        assert [e.index for e in stored] == [0, 1, 2, 3, 4]
        assert stored[4].to_dict() == events[4].to_dict()
        assert [
            e.index for e in await long_term.get_events(task.id, EventQuery(after_index=3))
        ] == [4]
        await long_term.delete_task(task.id)
        assert await long_term.get_task(task.id) is None
        assert await long_term.get_events(task.id, EventQuery()) == []

    async def test_resolve_cursor_and_last_index(self, long_term: LongTermStore) -> None:
        task = make_task()
        assert await long_term.last_index(task.id) == -1
        await long_term.save_task(task)
        assert await long_term.last_index(task.id) == -1
        events = [draft(data=i).at(task.id, i) for i in range(3)]
        latest = [
            draft(data=i, series_id="p", series_mode="latest").at(task.id, 3 + i) for i in range(2)
        ]
        await long_term.save_events([*events, *latest])
        assert await long_term.resolve_cursor(task.id, events[1].id) == 1
        assert await long_term.resolve_cursor(task.id, latest[1].id) == 4
        # Replaced ``latest`` entries are not kept, so their ids are unknown.
        assert await long_term.resolve_cursor(task.id, latest[0].id) is None
        assert await long_term.resolve_cursor(task.id, "nope") is None
        assert await long_term.resolve_cursor("missing-" + new_id(), events[0].id) is None
        assert await long_term.last_index(task.id) == 4
        await long_term.delete_task(task.id)


class ReleasableStoreContract:
    """For stores with ``supports_release``: subclass and provide the ``store`` fixture."""

    pytestmark = pytest.mark.anyio

    async def _filled(self, store: Any) -> tuple[Task, int, int]:
        task = make_task(status="running")
        await store.create_task(task)
        await store.commit_events(task.id, [draft(data=i) for i in range(3)])
        current = await store.get_task_revision(task.id)
        assert current is not None
        return task, current[1], await store.last_index(task.id)

    async def test_release_removes_everything(self, store: Any) -> None:
        assert store.supports_release is True
        task, revision, last = await self._filled(store)
        assert await store.release_task(task.id, revision, last) is True
        assert await store.get_task(task.id) is None
        assert await store.get_events(task.id, EventQuery()) == []
        assert await store.last_index(task.id) == -1
        page = await store.list_tasks(TaskQuery(task_ids=frozenset({task.id})))
        assert page.tasks == []
        assert await store.release_task(task.id, revision, last) is False

    async def test_release_refuses_when_the_task_moved_on(self, store: Any) -> None:
        task, revision, last = await self._filled(store)
        await store.commit_events(task.id, [draft()])
        assert await store.release_task(task.id, revision, last) is False
        last += 1
        await store.commit_transition(task.copy(status="paused"), revision, [draft()])
        assert await store.release_task(task.id, revision, last + 1) is False
        assert await store.get_task(task.id) is not None
        current = await store.get_task_revision(task.id)
        assert current is not None
        assert await store.release_task(task.id, current[1], last + 1) is True

    async def test_restore_continues_where_it_stopped(self, store: Any) -> None:
        task = make_task(status="running")
        events = [
            draft(data=0, idempotency_key="k0").at(task.id, 0),
            draft(data={"delta": "ab"}, series_id="s", series_mode="accumulate").at(task.id, 1),
            draft(data=2, series_id="p", series_mode="latest").at(task.id, 3),
            draft(data={"delta": "cd"}, series_id="s", series_mode="accumulate").at(task.id, 4),
        ]
        series = {"s": events[3], "p": events[2]}
        ok = await store.restore_task(task, events, next_index=5, series=series, revision=77)
        assert ok is True
        again = await store.restore_task(task, [], next_index=0, series={}, revision=1)
        assert again is False
        assert (await store.get_task(task.id)).status == "running"
        stored = await store.get_events(task.id, EventQuery())
        assert [e.to_dict() for e in stored] == [e.to_dict() for e in events]
        assert [e.index for e in await store.get_events(task.id, EventQuery(after_index=1))] == [
            3,
            4,
        ]
        assert await store.last_index(task.id) == 4
        assert await store.resolve_cursor(task.id, events[2].id) == 3
        current = await store.get_task_revision(task.id)
        assert current is not None and current[1] == 77
        result = await store.commit_events(
            task.id,
            [
                draft(data=9, idempotency_key="k0"),
                draft(data={"delta": "ef"}, series_id="s", series_mode="accumulate"),
                draft(data=5, series_id="p", series_mode="latest"),
            ],
        )
        assert result.events[0].id == events[0].id  # the restored idempotency key
        assert [e.index for e in result.fresh] == [5, 6]
        assert result.fresh[0].data == {"delta": "ef"}
        stored = await store.get_events(task.id, EventQuery())
        assert [e.index for e in stored] == [0, 1, 4, 5, 6]
        assert [e.index for e in await store.get_events(task.id, EventQuery(after_index=3))] == [
            4,
            5,
            6,
        ]
        with pytest.raises(StaleRevisionError):
            await store.commit_transition(task.copy(status="paused"), 0, [draft()])
        await store.commit_transition(task.copy(status="paused"), 77, [draft()])
        assert await store.last_index(task.id) == 7
        await store.delete_task(task.id)

    async def test_restore_without_events(self, store: Any) -> None:
        task = make_task()
        assert await store.restore_task(task, [], next_index=0, series={}, revision=5)
        result = await store.commit_events(task.id, [draft()])
        assert result.events[0].index == 0
        assert (await store.list_tasks(TaskQuery(task_ids=frozenset({task.id})))).tasks
        await store.delete_task(task.id)


class EventCacheContract:
    """For stores with an ``event_cache`` (:class:`taskcast.core.EventCache`): subclass and
    provide ``store`` (the cache on) and ``uncached_store`` (``cache_bytes=0``) fixtures,
    both opened."""

    pytestmark = pytest.mark.anyio

    async def _history(self, store: Any) -> Task:
        task = make_task(status="running")
        await store.create_task(task)
        await store.commit_events(
            task.id,
            [
                draft(data={"n": 1, "text": "é\u2028\U0001f600"}),
                draft("llm.delta", data={"delta": "Hel"}, series_id="a", series_mode="accumulate"),
                draft("llm.delta", data={"delta": "lo"}, series_id="a", series_mode="accumulate"),
                draft("progress", data={"pct": 1}, series_id="p", series_mode="latest"),
                draft(data=[1, None, True, 2.5]),
            ],
        )
        return task

    async def test_a_history_read_again_is_not_decoded_again(self, store: Any) -> None:
        task = await self._history(store)
        before = store.event_cache.stats()
        first = await store.get_events(task.id, EventQuery())
        second = await store.get_events(task.id, EventQuery(after_index=0))
        after = store.event_cache.stats()
        assert after.misses - before.misses == 5
        assert after.hits - before.hits == 4
        assert all(a is b for a, b in zip(first[1:], second, strict=True))
        assert first[0].data == {"n": 1, "text": "é\u2028\U0001f600"}
        assert [e.index for e in first] == [0, 1, 2, 3, 4]

    async def test_cached_and_uncached_reads_agree_after_changes(
        self, store: Any, uncached_store: Any
    ) -> None:
        for target in (store, uncached_store):
            task = await self._history(target)
            await target.get_events(task.id, EventQuery())
            # A replaced latest entry, a deleted event and more deltas after the first read.
            await target.commit_events(
                task.id,
                [
                    draft("progress", data={"pct": 2}, series_id="p", series_mode="latest"),
                    draft(
                        "llm.delta", data={"delta": "!"}, series_id="a", series_mode="accumulate"
                    ),
                ],
            )
            assert await target.delete_events(task.id, [0]) == 1
            got = [e.to_dict() for e in await target.get_events(task.id, EventQuery())]
            for event in got:
                del event["id"], event["taskId"], event["timestamp"]
            if target is store:
                cached = got
        assert got == cached
        assert [e["index"] for e in got] == [1, 2, 4, 5, 6]
        assert uncached_store.event_cache.stats().entries == 0

    async def test_off_decodes_every_time(self, uncached_store: Any) -> None:
        task = await self._history(uncached_store)
        first = await uncached_store.get_events(task.id, EventQuery())
        second = await uncached_store.get_events(task.id, EventQuery())
        assert [e.to_dict() for e in first] == [e.to_dict() for e in second]
        assert not any(a is b for a, b in zip(first, second, strict=True))
        assert uncached_store.event_cache.stats().hits == 0
