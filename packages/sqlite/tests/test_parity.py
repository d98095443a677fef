"""The SQLite store answers exactly as the memory store for the same operations."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from taskcast.core import (
    CommitResult,
    EventDraft,
    EventQuery,
    MemoryShortTermStore,
    ShortTermStore,
    StaleRevisionError,
    Task,
    TaskcastError,
    TaskEvent,
    TaskQuery,
)
from taskcast.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def _event(e: TaskEvent) -> dict[str, Any]:
    assert not e.has_accumulated  # stores keep and return deltas only
    return e.to_dict()


def _result(r: CommitResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return [_event(e) for e in r.events], [_event(e) for e in r.fresh]


def _draft(rng: random.Random, n: int) -> EventDraft:
    kind = rng.choice(["plain", "acc", "acc2", "latest", "keep", "key", "nonstr"])
    fields: dict[str, Any] = {}
    data: Any = {"delta": f"d{n}", "n": n}
    if kind == "acc":
        fields = {"series_id": "a", "series_mode": "accumulate"}
    elif kind == "acc2":
        fields = {"series_id": "t", "series_mode": "accumulate", "series_acc_field": "text"}
        data = {"text": f"<{n}>", "x": [n, 1.5, None]}
    elif kind == "latest":
        fields = {"series_id": rng.choice(["p", "a"]), "series_mode": "latest"}
    elif kind == "keep":
        fields = {"series_id": "k", "series_mode": "keep-all"}
    elif kind == "key":
        fields = {"idempotency_key": f"key-{rng.randrange(6)}"}
    elif kind == "nonstr":
        fields = {"series_id": "a", "series_mode": "accumulate"}
        data = rng.choice([None, 3, "text", {"delta": 5}])
    return EventDraft(
        id=f"e{n:06d}", timestamp=1000 + n // 3, type="t", level="info", data=data, **fields
    )


async def _run(store: ShortTermStore, seed: int) -> list[Any]:
    rng = random.Random(seed)
    out: list[Any] = []
    n = 0
    tasks = [f"task-{i}" for i in range(3)]
    for i, tid in enumerate(tasks):
        await store.create_task(Task(id=tid, created_at=100 + i, updated_at=100, type=f"x.{i}"))
    for _step in range(120):
        tid = rng.choice(tasks)
        op = rng.random()
        try:
            if op < 0.7:
                drafts = []
                for _ in range(rng.randrange(1, 5)):
                    drafts.append(_draft(rng, n))
                    n += 1
                out.append(("commit", _result(await store.commit_events(tid, drafts))))
            elif op < 0.8:
                current = await store.get_task_revision(tid)
                assert current is not None
                task, revision = current
                status = rng.choice(["running", "paused", "completed"])
                stale = rng.random() < 0.2
                drafts = [_draft(rng, n)]
                n += 1
                out.append(
                    (
                        "transition",
                        _result(
                            await store.commit_transition(
                                task.copy(status=status, updated_at=n),
                                revision + (1 if stale else 0),
                                drafts,
                            )
                        ),
                    )
                )
            elif op < 0.83:
                out.append(("delete", await store.delete_task(tid)))
                await store.create_task(Task(id=tid, created_at=n, updated_at=n))
            else:
                after = rng.choice([None, rng.randrange(-1, n + 1)])
                limit = rng.choice([None, 1, 3])
                events = await store.get_events(tid, EventQuery(after_index=after, limit=limit))
                out.append(("events", [_event(e) for e in events]))
                out.append(
                    ("cursor", await store.resolve_cursor(tid, f"e{rng.randrange(n + 1):06d}"))
                )
        except (TaskcastError, StaleRevisionError) as exc:
            out.append(("error", type(exc).__name__, str(exc)))
        out.append(("last", await store.last_index(tid)))
    for tid in tasks:
        stored = await store.get_events(tid, EventQuery())
        out.append(("final", [_event(e) for e in stored]))
        got = await store.get_task(tid)
        out.append(("task", None if got is None else got.to_dict()))
    page = await store.list_tasks(TaskQuery())
    out.append(("list", [t.to_dict() for t in page.tasks]))
    return out


@pytest.mark.parametrize("seed", range(6))
async def test_same_answers_as_memory_store(tmp_path: Path, seed: int) -> None:
    memory = await _run(MemoryShortTermStore(), seed)
    store = SQLiteStore(tmp_path / "parity.db")
    await store.open()
    try:
        sqlite = await _run(store, seed)
    finally:
        await store.close()
    assert len(sqlite) == len(memory)
    for got, want in zip(sqlite, memory, strict=True):
        assert got == want
