"""Series merging and the late-join collapse of accumulate series.

Pure functions: stores call :func:`plan_commit` inside their atomic step, the stream and the
history endpoint call :class:`Collapser`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._models import EventDraft, TaskEvent

__all__ = ["Collapser", "CommitPlan", "accumulate", "collapse", "plan_commit"]

DEFAULT_ACC_FIELD = "delta"


def accumulate(previous: TaskEvent | None, delta: TaskEvent) -> Any:
    """The series' accumulated ``data`` after ``delta`` (the original's algorithm).

    Concatenates ``data[field]`` when both sides are objects holding strings there; any other
    shape resets the series to the delta's data.
    """
    field_name = delta.series_acc_field or DEFAULT_ACC_FIELD
    if previous is not None:
        prev_data, new_data = previous.data, delta.data
        if (
            isinstance(prev_data, dict)
            and isinstance(new_data, dict)
            and isinstance(prev_data.get(field_name), str)
            and isinstance(new_data.get(field_name), str)
        ):
            merged = dict(new_data)
            merged[field_name] = prev_data[field_name] + new_data[field_name]
            return merged
    return delta.data


@dataclass(slots=True)
class CommitPlan:
    """The outcome of applying drafts to a task's current state.

    ``fresh`` are all newly allocated events (to broadcast and to index by id, including
    ``latest`` entries superseded within the batch); ``appends`` are the new events in index order; ``replaced`` maps each ``latest`` series
    to the index its stored entry had before (so the store can delete it); ``states`` are the
    new per-series states (accumulated or latest event).
    """

    result_events: list[TaskEvent] = field(default_factory=list)
    fresh: list[TaskEvent] = field(default_factory=list)
    appends: list[TaskEvent] = field(default_factory=list)
    replaced: dict[str, int] = field(default_factory=dict)
    states: dict[str, TaskEvent] = field(default_factory=dict)
    next_index: int = 0


def plan_commit(
    task_id: str,
    drafts: Sequence[EventDraft],
    *,
    next_index: int,
    series_state: Callable[[str], TaskEvent | None],
    known_key: Callable[[str], TaskEvent | None],
) -> CommitPlan:
    """Allocate indexes and merge series for a batch, without touching storage.

    ``series_state`` returns a series' current state, ``known_key`` the event already stored
    under an idempotency key; both are read from the store inside its transaction.
    """
    plan = CommitPlan(next_index=next_index)
    by_key: dict[str, TaskEvent] = {}
    for draft in drafts:
        key = draft.idempotency_key
        if key is not None:
            existing = by_key.get(key) or known_key(key)
            if existing is not None:
                plan.result_events.append(existing)
                continue
        event = draft.at(task_id, plan.next_index)
        plan.next_index += 1
        sid, mode = event.series_id, event.series_mode
        if sid is not None and mode is not None and mode != "keep-all":
            previous = plan.states.get(sid) or series_state(sid)
            if mode == "accumulate":
                if previous is not None and previous.series_mode != "accumulate":
                    previous = None
                acc = accumulate(previous, event)
                event.accumulated = acc
                plan.states[sid] = event.copy(data=acc, accumulated=acc)
            else:  # latest
                if previous is not None and sid not in plan.replaced:
                    plan.replaced[sid] = previous.index
                # An earlier draft of this batch for the same series is superseded too.
                plan.appends = [
                    e
                    for e in plan.appends
                    if not (e.series_id == sid and e.series_mode == "latest")
                ]
                plan.states[sid] = event
        plan.appends.append(event)
        plan.fresh.append(event)
        plan.result_events.append(event)
        if key is not None:
            by_key[key] = event
    return plan


class Collapser:
    """Collapses runs of consecutive ``accumulate`` deltas into snapshots.

    The original collapses a whole series to one snapshot at its first position, which moves
    later indexes ahead of earlier ones and breaks ``Last-Event-ID`` resume. Collapsing only
    consecutive runs keeps index order: each snapshot carries the full accumulated value up
    to the last delta of its run, with that delta's id, so a client that resumes after any
    event it received misses and duplicates nothing.
    """

    __slots__ = ("_pending", "_states")

    def __init__(self) -> None:
        self._states: dict[str, Any] = {}
        self._pending: TaskEvent | None = None

    def feed(self, event: TaskEvent) -> Iterator[TaskEvent]:
        """Take the next stored event; yield whatever is now ready to send."""
        if event.series_mode == "accumulate" and event.series_id is not None:
            sid = event.series_id
            prev = self._states.get(sid)
            prev_event = None if prev is None else event.copy(data=prev)
            acc = accumulate(prev_event, event)
            self._states[sid] = acc
            pending = self._pending
            if pending is not None and pending.series_id != sid:
                self._pending = None
                yield pending
            self._pending = event.copy(data=acc, series_snapshot=True)
            return
        if self._pending is not None:
            pending, self._pending = self._pending, None
            yield pending
        yield event

    def flush(self) -> Iterator[TaskEvent]:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            yield pending


def collapse(events: Iterable[TaskEvent]) -> list[TaskEvent]:
    """Collapse a complete, in-order history (see :class:`Collapser`)."""
    collapser = Collapser()
    out: list[TaskEvent] = []
    for event in events:
        out.extend(collapser.feed(event))
    out.extend(collapser.flush())
    return out
