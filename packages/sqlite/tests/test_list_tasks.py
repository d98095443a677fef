from __future__ import annotations

import pytest

from taskcast.core import TaskQuery, matches_type
from taskcast.sqlite import SQLiteStore

from ._helpers import make_task

pytestmark = pytest.mark.anyio

TYPES = [
    None,
    "llm.chat",
    "LLM.chat",
    "llm",
    "llmx.chat",
    "a_b.x",
    "aXb.x",
    "a%b.x",
    "a*b.x",
    "a?b.x",
    "a[b].x",
    "a\\b.x",
    "job",
]


async def _seed(store: SQLiteStore) -> list[str]:
    ids = []
    for i, type_ in enumerate(TYPES):
        task = make_task(f"t{i:02d}", type=type_, created_at=1000 + i // 2)
        await store.create_task(task)
        ids.append(task.id)
    return ids


@pytest.mark.parametrize(
    "patterns",
    [
        ("llm.*",),
        ("*",),
        ("job", "llm.*"),
        ("a_b.*",),
        ("a%b.*",),
        ("a*b.*",),
        ("a?b.*",),
        ("a[b].*",),
        ("a\\b.*",),
        ("LLM.*",),
        ("llm",),
        ("nothing",),
        (),
    ],
)
async def test_type_patterns_match_like_matches_type(
    sqlite_store: SQLiteStore, patterns: tuple[str, ...]
) -> None:
    await _seed(sqlite_store)
    page = await sqlite_store.list_tasks(TaskQuery(types=patterns))
    expected = [f"t{i:02d}" for i, t in enumerate(TYPES) if matches_type(t, patterns)]
    assert [t.id for t in page.tasks] == expected


async def test_status_filters(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.create_task(make_task("a", status="running", created_at=1))
    await sqlite_store.create_task(make_task("b", created_at=2))
    assert [t.id for t in (await sqlite_store.list_tasks(TaskQuery(statuses=()))).tasks] == []
    running = await sqlite_store.list_tasks(TaskQuery(statuses=("running", "paused")))
    assert [t.id for t in running.tasks] == ["a"]


async def test_keyset_paging_walks_everything_once(sqlite_store: SQLiteStore) -> None:
    ids = await _seed(sqlite_store)  # created_at ties broken by id
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = await sqlite_store.list_tasks(TaskQuery(limit=4, after=after))
        seen.extend(t.id for t in page.tasks)
        pages += 1
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ids
    assert pages == 4
    exact = await sqlite_store.list_tasks(TaskQuery(limit=len(ids)))
    assert len(exact.tasks) == len(ids) and exact.next_after is None
    assert (await sqlite_store.list_tasks(TaskQuery(limit=0))).tasks == []


async def test_filters_combine(sqlite_store: SQLiteStore) -> None:
    ids = await _seed(sqlite_store)
    many = frozenset(ids[:6]) | {f"absent-{i}" for i in range(2000)}
    page = await sqlite_store.list_tasks(
        TaskQuery(task_ids=many, types=("llm.*", "a_b.*"), statuses=("pending",), limit=2)
    )
    assert [t.id for t in page.tasks] == ["t01", "t05"]
    assert page.next_after is None
    assert (await sqlite_store.list_tasks(TaskQuery(task_ids=frozenset()))).tasks == []
