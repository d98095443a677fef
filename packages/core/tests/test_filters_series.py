from typing import Any

from hypothesis import given, strategies as st

from taskcast.core import (
    Collapser,
    EventDraft,
    EventFilter,
    TaskEvent,
    accumulate,
    collapse,
    matches_type,
    new_id,
    plan_commit,
)


def ev(index: int, data: Any = None, *, type_: str = "t", **fields: Any) -> TaskEvent:
    return TaskEvent(
        id=f"e{index}", task_id="t", index=index, timestamp=index, type=type_, level="info",
        data=data, **fields,
    )  # fmt: skip


def test_matches_type_patterns() -> None:
    assert matches_type("llm.delta", None)
    assert not matches_type("llm.delta", [])
    assert matches_type("taskcast:status", ["*"])
    assert matches_type("llm.delta", ["llm.*"])
    assert matches_type("llm.delta.chunk", ["llm.*"])
    assert not matches_type("llm", ["llm.*"])
    assert not matches_type("taskcast:status", ["taskcast.*"])
    assert matches_type("a", ["b", "a"])
    assert not matches_type("A", ["a"])
    assert not matches_type(None, ["a"])


def test_event_filter() -> None:
    status = ev(0, {"status": "running"}, type_="taskcast:status")
    log = ev(1, type_="log")
    assert EventFilter().matches(status) and EventFilter().is_everything
    assert not EventFilter(include_status=False).matches(status)
    assert EventFilter(include_status=False).matches(log)
    assert not EventFilter(levels=("error",)).matches(log)
    assert EventFilter(levels=("info",), types=("log",)).matches(log)
    assert not EventFilter(types=("other",)).matches(log)
    assert not EventFilter(types=()).is_everything


def test_accumulate_rules() -> None:
    prev = ev(0, {"delta": "ab", "x": 1}, series_mode="accumulate")
    assert accumulate(prev, ev(1, {"delta": "c", "y": 2})) == {"delta": "abc", "y": 2}
    assert accumulate(None, ev(1, {"delta": "c"})) == {"delta": "c"}
    assert accumulate(prev, ev(1, "plain")) == "plain"
    assert accumulate(ev(0, {"delta": 1}), ev(1, {"delta": "c"})) == {"delta": "c"}
    assert accumulate(ev(0, ["x"]), ev(1, {"delta": "c"})) == {"delta": "c"}
    custom = ev(1, {"text": "d"}, series_acc_field="text")
    assert accumulate(ev(0, {"text": "c"}), custom) == {"text": "cd"}


def test_collapse_runs_keeps_index_order() -> None:
    acc = {"series_id": "s", "series_mode": "accumulate"}
    events = [
        ev(0, {"status": "running"}, type_="taskcast:status"),
        ev(1, {"delta": "a"}, **acc),
        ev(2, {"delta": "b"}, **acc),
        ev(3, "x"),
        ev(4, {"delta": "c"}, **acc),
    ]
    out = collapse(events)
    assert [e.index for e in out] == [0, 2, 3, 4]
    assert out[1].data == {"delta": "ab"} and out[1].series_snapshot
    # Later runs are merged deltas, not snapshots: replay size stays linear.
    assert out[3].data == {"delta": "c"} and out[3].series_snapshot is None
    assert out[2].series_snapshot is None


def test_collapse_merges_later_runs_and_snapshots_resets() -> None:
    acc = {"series_id": "s", "series_mode": "accumulate"}
    events = [
        ev(0, {"delta": "a"}, **acc),
        ev(1, "x"),
        ev(2, {"delta": "b", "k": 1}, **acc),
        ev(3, {"delta": "c", "k": 2}, **acc),
        ev(4, "y"),
        ev(5, "reset", **acc),
        ev(6, {"delta": "d"}, **acc),
        ev(7, "z"),
    ]
    out = collapse(events)
    assert [(e.index, e.data, e.series_snapshot) for e in out] == [
        (0, {"delta": "a"}, True),
        (1, "x", None),
        (3, {"delta": "bc", "k": 2}, None),
        (4, "y", None),
        (6, {"delta": "d"}, True),
        (7, "z", None),
    ]
    # Replaying the collapsed stream rebuilds exactly the stored series text.
    text = ""
    for e in out:
        if e.series_id == "s":
            text = e.data["delta"] if e.series_snapshot else text + e.data["delta"]
    assert text == "d"


def test_collapse_interleaved_series() -> None:
    a = {"series_id": "a", "series_mode": "accumulate"}
    b = {"series_id": "b", "series_mode": "accumulate"}
    out = collapse(
        [ev(0, {"delta": "1"}, **a), ev(1, {"delta": "x"}, **b), ev(2, {"delta": "2"}, **a)]
    )
    assert [(e.index, e.data, e.series_snapshot) for e in out] == [
        (0, {"delta": "1"}, True),
        (1, {"delta": "x"}, True),
        (2, {"delta": "2"}, None),
    ]
    collapser = Collapser()
    assert list(collapser.flush()) == []


def test_plan_commit_latest_within_batch() -> None:
    def d(data: Any, **f: Any) -> EventDraft:
        return EventDraft(id=new_id(), timestamp=1, type="p", level="info", data=data, **f)

    lat = {"series_id": "p", "series_mode": "latest"}
    plan = plan_commit(
        "t", [d(1, **lat), d("k"), d(2, **lat)], next_index=5,
        series_state=lambda _: ev(3, 0, series_id="p", series_mode="latest"),
        known_key=lambda _: None,
    )  # fmt: skip
    assert [e.index for e in plan.appends] == [6, 7]
    assert [e.index for e in plan.fresh] == [5, 6, 7]
    assert plan.replaced == {"p": 3}
    assert plan.states["p"].index == 7
    assert plan.next_index == 8


def test_plan_commit_keeps_the_delta_as_an_accumulate_state() -> None:
    state = ev(0, {"delta": "old"}, series_id="s", series_mode="accumulate")
    plan = plan_commit(
        "t",
        [EventDraft(id="x", timestamp=1, type="t", level="info", data={"delta": "n"},
                    series_id="s", series_mode="accumulate")],
        next_index=1, series_state=lambda _: state, known_key=lambda _: None,
    )  # fmt: skip
    # Merging is the relaying stream's job: the state and the event are the delta itself.
    assert plan.states["s"] is plan.fresh[0]
    assert plan.fresh[0].data == {"delta": "n"} and not plan.fresh[0].has_accumulated
    assert plan.replaced == {}


def test_event_dict_round_trip() -> None:
    event = ev(3, {"a": 1}, series_id="s", series_mode="accumulate", series_snapshot=True)
    event.accumulated = {"a": 2}
    wire = event.to_dict()
    assert "_accumulatedData" not in wire  # in-process only
    assert wire["seriesSnapshot"] is True
    back = TaskEvent.from_dict(wire)
    assert not back.has_accumulated and back.to_dict() == event.to_dict()
    plain = ev(1)
    assert "seriesId" not in plain.to_dict() and plain.to_dict()["data"] is None
    assert not plain.has_accumulated


def test_collapse_keep_after_starts_each_series_with_a_snapshot() -> None:
    acc = {"series_id": "s", "series_mode": "accumulate"}
    collapser = Collapser(keep_after=2)
    events = [ev(0, {"delta": "a"}, **acc), ev(1, "x"), ev(2, {"delta": "b"}, **acc),
              ev(3, {"delta": "c"}, **acc), ev(4, "y"), ev(5, {"delta": "d"}, **acc)]  # fmt: skip
    out = [e for item in events for e in collapser.feed(item)] + list(collapser.flush())
    kept = [(e.index, e.data, e.series_snapshot) for e in out if e.index > 2]
    assert kept == [(3, {"delta": "abc"}, True), (4, "y", None), (5, {"delta": "d"}, None)]


def test_event_copy_matches_dataclasses_replace() -> None:
    from dataclasses import fields, replace

    event = ev(3, {"a": 1}, series_id="s", series_mode="accumulate", series_acc_field="t",
               series_snapshot=True, idempotency_key="k")  # fmt: skip
    event.accumulated = {"a": 2}
    # Every field is copied: a field added later and forgotten in copy() fails here.
    for f in fields(TaskEvent):
        assert getattr(event.copy(), f.name) == getattr(replace(event), f.name)
    changed = event.copy(index=9, data="x")
    assert changed.index == 9 and changed.data == "x" and changed.accumulated == {"a": 2}
    assert event.index == 3


def _reference_collapse(events: list[TaskEvent]) -> list[tuple[int, Any, bool | None]]:
    """The collapse rules spelled out naively: the value re-joined on every delta."""
    values: dict[str, Any] = {}
    sent: set[str] = set()
    out: list[tuple[int, Any, bool | None]] = []
    run: list[Any] = []  # [series id, last event, pieces, appends only]

    def emit() -> None:
        sid, last, pieces, appends_only = run
        first = sid not in sent
        sent.add(sid)
        field_name = last.series_acc_field or "delta"
        if first or not appends_only:
            out.append((last.index, values[sid], True))
        elif len(pieces) == 1:
            out.append((last.index, last.data, None))
        else:
            out.append((last.index, {**last.data, field_name: "".join(pieces)}, None))
        run.clear()

    for event in events:
        if event.series_mode == "accumulate" and event.series_id is not None:
            sid, field_name = event.series_id, event.series_acc_field or "delta"
            previous = values.get(sid)
            appends = (
                sid in values
                and isinstance(previous, dict)
                and isinstance(event.data, dict)
                and isinstance(previous.get(field_name), str)
                and isinstance(event.data.get(field_name), str)
            )
            values[sid] = accumulate(None if sid not in values else ev(0, previous), event)
            if run and run[0] != sid:
                emit()
            if not run:
                run.extend([sid, event, [], True])
            run[1] = event
            if appends:
                run[2].append(event.data[field_name])
            else:
                run[3] = False
            continue
        if run:
            emit()
        out.append((event.index, event.data, event.series_snapshot))
    if run:
        emit()
    return out


_DATA = st.one_of(
    st.builds(lambda t: {"delta": t}, st.text(max_size=3)),
    st.builds(lambda t, k: {"delta": t, "k": k}, st.text(max_size=3), st.integers(0, 3)),
    st.builds(lambda t: {"text": t}, st.text(max_size=3)),
    st.builds(lambda t: {"text": t, "delta": t + "!"}, st.text(max_size=3)),
    st.just({"delta": 1}),
    st.just("plain"),
    st.just(None),
    st.just(["x"]),
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", None]), _DATA, st.sampled_from([None, "delta", "text"])
        ),
        max_size=40,
    )
)
def test_collapse_matches_the_naive_rules(steps: list[tuple[str | None, Any, str | None]]) -> None:
    events = []
    for i, (sid, data, field_name) in enumerate(steps):
        if sid is None:
            events.append(ev(i, data))
        else:
            events.append(
                ev(i, data, series_id=sid, series_mode="accumulate", series_acc_field=field_name)
            )
    got = [(e.index, e.data, e.series_snapshot) for e in collapse(events)]
    assert got == _reference_collapse(events)
