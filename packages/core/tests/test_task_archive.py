"""The archive format: compaction and validation (the HTTP round trips are in the server's
and the integration tests)."""

from __future__ import annotations

from typing import Any

import pytest

from taskcast.core import (
    InvalidInputError,
    InvalidTaskArchiveError,
    MemoryShortTermStore,
    TaskConflictError,
    TaskEngine,
    TaskEvent,
    compact_history,
    parse_task_archive,
)


def _event(index: int, data: Any, **series: Any) -> TaskEvent:
    return TaskEvent(
        id=f"e{index}", task_id="t", index=index, timestamp=index, type="x", level="info",
        data=data, **series,
    )  # fmt: skip


ACC = {"series_id": "s", "series_mode": "accumulate"}


def test_compaction_merges_accumulate_and_keeps_the_newest_latest() -> None:
    history = [
        _event(0, {"delta": "a"}, **ACC),
        _event(2, "plain"),  # a gap (cleanup removed index 1) is renumbered away
        _event(3, {"delta": "b"}, **ACC),
        _event(4, {"pct": 1}, series_id="p", series_mode="latest"),
        _event(5, {"pct": 2}, series_id="p", series_mode="latest"),
        _event(6, {"delta": "c"}, series_id="k", series_mode="keep-all"),
    ]
    out = compact_history(history)
    assert [(e.index, e.id, e.data) for e in out] == [
        (0, "e3", {"delta": "ab"}),  # merged, first position, newest id
        (1, "e2", "plain"),
        (2, "e5", {"pct": 2}),
        (3, "e6", {"delta": "c"}),
    ]
    assert all(e.series_snapshot is None for e in out)


def test_a_non_text_delta_resets_the_merge_as_live() -> None:
    out = compact_history(
        [
            _event(0, {"delta": "a"}, **ACC),
            _event(1, {"n": 1}, **ACC),
            _event(2, {"delta": "z"}, **ACC),
        ]
    )
    assert [e.data for e in out] == [{"delta": "z"}]


def _archive(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": "taskcast.taskArchive",
        "version": 1,
        "exportedAt": 1.0,
        "task": {"id": "t", "status": "running", "createdAt": 1, "updatedAt": 2.0},
        "events": [{"id": "a", "taskId": "t", "index": 0, "timestamp": 5.0, "type": "x",
                    "level": "info", "data": None}],
    }  # fmt: skip
    doc.update(changes)
    return doc


def test_whole_floats_are_integers_and_the_rest_is_refused() -> None:
    archive = parse_task_archive(_archive())
    assert archive.exported_at == 1 and isinstance(archive.exported_at, int)
    assert archive.task.updated_at == 2 and archive.events[0].timestamp == 5
    with pytest.raises(InvalidTaskArchiveError, match="whole number of milliseconds"):
        parse_task_archive(_archive(exportedAt=1.5))
    with pytest.raises(InvalidTaskArchiveError, match="Unsupported archive version: true"):
        parse_task_archive(_archive(version=True))
    with pytest.raises(InvalidTaskArchiveError, match="Archive must be an object"):
        parse_task_archive([])
    with pytest.raises(InvalidInputError, match="NUL"):
        parse_task_archive(_archive(task={"id": "t", "status": "running", "createdAt": 1,
                                          "updatedAt": 1, "params": {"k": "a\x00"}}))  # fmt: skip


async def test_engine_import_refuses_an_existing_task_and_writes_nothing() -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    async with engine:
        archive = parse_task_archive(_archive())
        result = await engine.import_task_archive(archive)
        assert (result.task_id, result.event_count, result.overwritten) == ("t", 1, False)
        exported = await engine.export_task_archive("t")
        assert [e.to_dict() for e in exported.events] == [e.to_dict() for e in archive.events]
        with pytest.raises(TaskConflictError, match="already exists"):
            await engine.import_task_archive(archive)
        replaced = await engine.import_task_archive(archive, overwrite=True)
        assert replaced.overwritten is True


pytestmark = pytest.mark.anyio
