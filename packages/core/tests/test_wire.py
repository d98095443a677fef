"""SSE frames: the hand-built envelope is byte for byte what encoding its dict gives."""

from typing import Any

from hypothesis import given, strategies as st
from pydantic_core import to_json

from taskcast.core import TaskEvent, WireEvent, encode_count, envelope_dict, new_id
from taskcast.core._wire import _STRINGS_MAX, _series, _strings, encode_frame

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(
    event_id=st.one_of(st.just(new_id()), st.text(min_size=1)),
    task_id=st.text(min_size=1),
    type_=st.text(min_size=1),
    index=st.integers(0, 2**53),
    timestamp=st.integers(0, 2**53),
    level=st.sampled_from(["debug", "info", "warn", "error"]),
    data=_JSON,
    # Each series field on its own: the API does not require seriesId beside the others.
    series=st.one_of(
        st.none(),
        st.tuples(
            st.one_of(st.none(), st.text()),
            st.one_of(st.none(), st.sampled_from(["keep-all", "accumulate", "latest"])),
            st.one_of(st.none(), st.text()),
            st.one_of(st.none(), st.just(True)),
        ),
    ),
    filtered_index=st.integers(0, 10**9),
)
def test_envelope_bytes_equal_the_encoded_dict(
    event_id: str,
    task_id: str,
    type_: str,
    index: int,
    timestamp: int,
    level: Any,
    data: Any,
    series: tuple[str | None, Any, str | None, bool | None] | None,
    filtered_index: int,
) -> None:
    fields: dict[str, Any] = {}
    if series is not None:
        sid, mode, field_name, snapshot = series
        fields = {
            "series_id": sid,
            "series_mode": mode,
            "series_acc_field": field_name,
            "series_snapshot": snapshot,
        }
    event = TaskEvent(
        id=event_id, task_id=task_id, index=index, timestamp=timestamp, type=type_,
        level=level, data=data, **fields,
    )  # fmt: skip
    expected = (
        b"event: taskcast.event\ndata: "
        + to_json(envelope_dict(event, filtered_index, data))
        + b"\nid: "
        + event_id.encode()
        + b"\n\n"
    )
    assert encode_frame(event, wrap=True, accumulated=False, filtered_index=filtered_index) == (
        expected
    )
    assert WireEvent(event).frame(wrap=True, accumulated=False, filtered_index=filtered_index) == (
        expected
    )


def test_string_and_series_caches_stay_bounded() -> None:
    for i in range(_STRINGS_MAX + 10):
        event = TaskEvent(
            id=new_id(),
            task_id=f"task-{i}",
            index=0,
            timestamp=0,
            type="t",
            level="info",
            series_id=f"s-{i}",
        )
        encode_frame(event, wrap=True, accumulated=False, filtered_index=0)
    assert len(_strings) <= _STRINGS_MAX
    assert len(_series) <= _STRINGS_MAX


def test_a_replayed_event_keeps_its_envelope() -> None:
    event = TaskEvent(
        id=new_id(), task_id="t", index=3, timestamp=5, type="log", level="info", data={"a": 1}
    )
    first = encode_frame(event, wrap=True, accumulated=False, filtered_index=0)
    encodes = encode_count()
    second = encode_frame(event, wrap=True, accumulated=False, filtered_index=7)
    assert encode_count() == encodes
    assert second == first.replace(b'"filteredIndex":0', b'"filteredIndex":7')
    # The kept envelope is not part of the event's value, and a copy starts without it.
    copy = event.copy(data={"a": 2})
    assert copy == TaskEvent(**{**vars_of(event), "data": {"a": 2}})
    assert copy._wire is None
    assert b'"data":{"a":2}' in encode_frame(copy, wrap=True, accumulated=False, filtered_index=0)
    assert "_wire" not in repr(event)
    assert TaskEvent.from_dict(event.to_dict())._wire is None


def test_other_shapes_are_encoded_each_time() -> None:
    event = TaskEvent(
        id=new_id(), task_id="t", index=0, timestamp=5, type="log", level="info", data="x"
    )
    event.accumulated = "xy"
    for _ in range(2):
        before = encode_count()
        acc = encode_frame(event, wrap=True, accumulated=True, filtered_index=0)
        plain = encode_frame(event, wrap=False, accumulated=False, filtered_index=0)
        assert encode_count() == before + 2
    assert b'"data":"xy"' in acc
    assert b'"data":"x"' in plain and b"filteredIndex" not in plain
    assert event._wire is None


def vars_of(event: TaskEvent) -> dict[str, Any]:
    return {
        name: getattr(event, name)
        for name in ("id", "task_id", "index", "timestamp", "type", "level", "data")
    }
