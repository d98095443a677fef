"""Input rules shared by every interface: task ids, bounded names and ids, NUL."""

from __future__ import annotations

import pytest

from taskcast.core import (
    EngineLimits,
    EventInput,
    InvalidInputError,
    MemoryShortTermStore,
    Task,
    TaskEngine,
    TaskInput,
    UsageError,
    check_name,
    check_no_nul,
    find_nul,
    new_id,
    task_id_problem,
)

pytestmark = pytest.mark.anyio

GOOD_IDS = [new_id(), "demo", "job-1", "a.b", "user:42", "a b", "café", "..a", "a..", "x" * 256]
BAD_IDS = {
    "": "must be a non-empty string",
    "a/b": "must not contain '/'",
    "/": "must not contain '/'",
    ".": "'.' and '..' cannot be used in a URL",
    "..": "'.' and '..' cannot be used in a URL",
    "a\x00b": "contains the control character U+0000",
    "tab\there": "contains the control character U+0009",
    "a\x7f": "contains the control character U+007F",
    "a\x9f": "contains the control character U+009F",
    "a\ud800": "contains a lone surrogate (not valid Unicode)",
    "x" * 257: "longer than 256 characters",
}


@pytest.mark.parametrize("task_id", GOOD_IDS)
def test_ids_that_work_in_every_interface_are_accepted(task_id: str) -> None:
    assert task_id_problem(task_id, 256) is None


@pytest.mark.parametrize(("task_id", "problem"), BAD_IDS.items())
def test_ids_that_cannot_work_are_refused_with_the_reason(task_id: str, problem: str) -> None:
    assert task_id_problem(task_id, 256) == problem


def test_find_nul_reports_the_path_of_the_first_nul() -> None:
    assert find_nul({"a": [1, "ok", {"b": "x\x00"}]}) == "a.2.b"
    assert find_nul({"k\x00": 1}) == "k\x00"
    assert find_nul("\x00") == ""
    assert find_nul({"text": "\\u0000", "n": None, "f": 1.5, "t": True}) is None
    with pytest.raises(InvalidInputError, match=r"Invalid field params\.k\\u0000: contains a NUL"):
        check_no_nul({"k\x00": 1}, "params")
    with pytest.raises(InvalidInputError, match="Invalid value: contains a NUL"):
        check_no_nul("\x00")


def test_check_name_bounds_length_and_refuses_nul() -> None:
    check_name("type", "t" * 4, 4)
    with pytest.raises(InvalidInputError, match=r"^Invalid field type: longer than 4 characters"):
        check_name("type", "t" * 5, 4)
    with pytest.raises(InvalidInputError, match="Invalid field type: contains a NUL"):
        check_name("type", "a\x00", 4)
    with pytest.raises(InvalidInputError, match="Invalid field type: must be a string"):
        check_name("type", 5, 4)


@pytest.mark.parametrize("field", ["max_id_chars", "max_name_chars"])
@pytest.mark.parametrize("value", [0, 1025])
def test_limits_are_bounded(field: str, value: int) -> None:
    with pytest.raises(UsageError, match=f"{field} must be between 1 and 1024"):
        EngineLimits(**{field: value})  # type: ignore[arg-type]


async def test_in_process_callers_get_the_same_rules(engine: TaskEngine) -> None:
    with pytest.raises(InvalidInputError, match="Invalid task id: must not contain '/'"):
        await engine.create_task(TaskInput(id="a/b"))
    with pytest.raises(InvalidInputError, match="Invalid field type: longer than 256"):
        await engine.create_task(TaskInput(type="t" * 257))
    with pytest.raises(InvalidInputError, match=r"Invalid field params\.p: contains a NUL"):
        await engine.create_task(TaskInput(params={"p": "\x00"}))
    with pytest.raises(InvalidInputError, match=r"Invalid field tags\.0: longer than 256"):
        await engine.create_task(TaskInput(tags=["g" * 257]))
    assert (await engine.list_tasks()).tasks == []
    for call in (
        engine.get_task(".."),
        engine.delete_task("a\x00"),
        engine.transition_task("a/b", "running"),
        engine.publish_event("x" * 257, EventInput(type="x")),
        engine.get_events("."),
        engine.last_index("/"),
        engine.resolve_cursor("..", "e"),
        engine.delete_events("..", [0]),
    ):
        with pytest.raises(InvalidInputError, match="Invalid task id"):
            await call
    task = await engine.create_task(TaskInput(id="t"))
    await engine.transition_task("t", "running")
    with pytest.raises(InvalidInputError, match=r"Invalid field 1\.seriesId: longer than 256"):
        await engine.publish_events(
            task.id, [EventInput(type="x"), EventInput(type="x", series_id="s" * 257)]
        )
    with pytest.raises(InvalidInputError, match=r"Invalid field reason: contains a NUL"):
        await engine.transition_task("t", "paused", reason="\x00")
    assert await engine.get_events("t") != []  # the running status event only
    assert [e.type for e in await engine.get_events("t")] == ["taskcast:status"]
    # An over-long or NUL cursor cannot name an event: it is an unknown cursor.
    assert await engine.resolve_cursor("t", "e" * 257) is None
    assert await engine.resolve_cursor("t", "\x00") is None


async def test_the_scheduler_skips_a_task_stored_under_an_id_refused_since() -> None:
    """An earlier version accepted ids with '/': such a task must not stall the scheduler."""
    store = MemoryShortTermStore()
    engine = TaskEngine(short_term=store)
    for task_id in ("old/id", "new-id"):
        due = Task(id=task_id, status="running", created_at=1, updated_at=1, ttl=1, deadline_at=1)
        await store.create_task(due)
    await engine.scheduler.tick()
    new = await engine.get_task("new-id")
    assert new is not None and new.status == "timeout"
    old = await store.get_task("old/id")
    assert old is not None and old.status == "running"
