"""The server-side view model: the same folding rules as the browser script."""

from __future__ import annotations

import math
from typing import Any

import pytest

from taskcast.core import EventInput, MemoryShortTermStore, TaskEngine, TaskEvent, TaskInput
from taskcast.widget import TaskView, _view as view_module, build_view, load_view
from taskcast.widget._view import percent_of, summarize

pytestmark = pytest.mark.anyio


def ev(index: int, data: Any, **kw: Any) -> TaskEvent:
    kw.setdefault("type", "llm.delta")
    kw.setdefault("level", "info")
    return TaskEvent(
        id=f"e{index}", task_id="t", index=index, timestamp=1000 + index, data=data, **kw
    )


def acc(index: int, text: Any, **kw: Any) -> TaskEvent:
    data = {"delta": text} if isinstance(text, str) else text
    return ev(index, data, series_id="out", series_mode="accumulate", **kw)


def test_summarize_is_compact_json_cut_to_limit() -> None:
    assert summarize(None) == ""
    assert summarize({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    long = summarize("x" * 500)
    assert len(long) == 200 and long.endswith("…")
    assert summarize({"when": object}).startswith('{"when":"')


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"pct": 42.5}, 42.5),
        ({"percent": 7}, 7.0),
        ({"progress": 150}, 100.0),
        ({"pct": -3}, 0.0),
        ({"pct": True, "current": 1, "total": 4}, 25.0),
        ({"current": 3, "total": 0}, None),
        ({"pct": math.nan}, None),
        ({"pct": "50"}, None),
        ("50%", None),
        (None, None),
    ],
)
def test_percent_of(data: Any, expected: float | None) -> None:
    assert percent_of(data) == expected


def test_accumulate_deltas_append_and_snapshots_replace() -> None:
    view = build_view(
        "t",
        [
            acc(0, "Hel"),
            acc(1, "lo"),
            acc(2, {"delta": "RESET"}, series_snapshot=True),
            acc(3, "!"),
        ],
    )
    assert view.texts == {"out": "RESET!"}
    assert [entry.snapshot for entry in view.log] == [False, False, True, False]
    assert view.last_event_id == "e3"


def test_accumulate_custom_field_and_shape_changes() -> None:
    events = [
        ev(
            0,
            {"text": "a", "n": 1},
            series_id="s",
            series_mode="accumulate",
            series_acc_field="text",
        ),
        ev(
            1,
            {"text": "b", "n": 2},
            series_id="s",
            series_mode="accumulate",
            series_acc_field="text",
        ),
    ]
    assert build_view("t", events).texts == {"s": "ab"}
    # A delta whose field is not a string resets the series (the original's algorithm).
    assert build_view("t", [acc(0, "x"), acc(1, {"delta": 5})]).texts == {"out": '{"delta":5}'}
    assert build_view("t", [ev(0, "bare", series_id="b", series_mode="accumulate")]).texts == {
        "b": "bare"
    }


def test_latest_series_show_progress_and_caption() -> None:
    view = build_view(
        "t",
        [
            ev(0, {"pct": 10, "label": "download"}, series_id="p", series_mode="latest"),
            ev(1, {"pct": 60, "message": "parse"}, series_id="p", series_mode="latest"),
            ev(2, {"current": 1, "total": 8}, series_id="q", series_mode="latest"),
            ev(3, "thinking", series_id="r", series_mode="latest"),
            ev(4, {"other": 1}, series_id="s", series_mode="latest"),
        ],
    )
    p, q, r, s = (view.progress[k] for k in "pqrs")
    assert (p.percent, p.caption) == (60.0, "parse")
    assert (q.percent, q.caption) == (12.5, "")
    assert (r.percent, r.caption) == (None, "thinking")
    assert (s.percent, s.caption) == (None, '{"other":1}')


def test_status_events_set_status_result_and_error() -> None:
    view = build_view(
        "t",
        [
            ev(0, {"status": "running"}, type="taskcast:status"),
            ev(
                1,
                {"status": "failed", "error": {"message": "boom", "code": 3}},
                type="taskcast:status",
            ),
        ],
    )
    assert view.status == "failed" and view.terminal
    assert view.error_text == "boom"
    done = build_view(
        "t", [ev(0, {"status": "completed", "result": {"n": 1}}, type="taskcast:status")]
    )
    assert done.result_text == '{"n":1}'
    assert not build_view("t", [ev(0, "not a dict", type="taskcast:status")]).terminal
    assert build_view("t", [ev(0, {"status": 5}, type="taskcast:status")]).status == "unknown"


def test_error_text_shapes() -> None:
    assert TaskView(task_id="t", error="plain").error_text == "plain"
    assert TaskView(task_id="t", error={"code": 1}).error_text == '{"code":1}'


def test_log_keeps_the_last_entries_and_counts_all() -> None:
    view = build_view("t", [ev(i, {"i": i}, type="step") for i in range(10)], log_limit=3)
    assert [entry.index for entry in view.log] == [7, 8, 9]
    assert view.log_count == 10


@pytest.fixture
async def engine() -> Any:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    await engine.start()
    yield engine
    await engine.stop()


async def test_load_view_collapses_history_and_trusts_the_task(
    engine: TaskEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(view_module, "_PAGE", 2)  # exercise paging on a short history
    await engine.create_task(TaskInput(id="t1"))
    await engine.transition_task("t1", "running")
    for chunk in ["a", "b", "c"]:
        await engine.publish_event(
            "t1",
            EventInput(
                type="llm.delta", data={"delta": chunk}, series_id="out", series_mode="accumulate"
            ),
        )
    await engine.publish_event("t1", EventInput(type="note", data={"n": 1}))
    await engine.publish_event(
        "t1",
        EventInput(
            type="llm.delta", data={"delta": "d"}, series_id="out", series_mode="accumulate"
        ),
    )
    await engine.transition_task("t1", "completed", result={"ok": True})
    view = await load_view(engine, "t1")
    assert view is not None
    assert view.texts == {"out": "abcd"}
    assert view.status == "completed" and view.result == {"ok": True}
    assert [(e.type, e.snapshot) for e in view.log] == [
        ("taskcast:status", False),
        ("llm.delta", True),
        ("note", False),
        ("llm.delta", False),  # a later run of the series arrives as a merged delta
        ("taskcast:status", False),
    ]


async def test_load_view_of_unknown_task_is_none(engine: TaskEngine) -> None:
    assert await load_view(engine, "missing") is None


async def test_load_view_of_failed_task_keeps_the_error(engine: TaskEngine) -> None:
    await engine.create_task(TaskInput(id="t2"))
    await engine.transition_task("t2", "running")
    await engine.transition_task("t2", "failed", error={"message": "nope"})
    view = await load_view(engine, "t2")
    assert view is not None and view.error_text == "nope" and view.status == "failed"
