"""Series merging and the late-join collapse of accumulate series.

Pure functions: stores call :func:`plan_commit` inside their atomic step, the stream and the
history endpoint call :class:`Collapser`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._models import EventDraft, TaskEvent

__all__ = ["Collapser", "CommitPlan", "accumulate", "collapse", "plan_commit"]

DEFAULT_ACC_FIELD = "delta"


def accumulate(previous: TaskEvent | None, delta: TaskEvent) -> Any:
    """The series' accumulated ``data`` after ``delta`` (the original's algorithm).

    Concatenates ``data[field]`` when both sides are objects holding strings there; any other
    shape resets the series to the delta's data. Streams merge incrementally with the same
    rule (:class:`_Accumulated`); this is its plain statement.
    """
    field_name = delta.series_acc_field or DEFAULT_ACC_FIELD
    prev_data = None if previous is None else previous.data
    new_data = delta.data
    if (
        isinstance(prev_data, dict)
        and isinstance(new_data, dict)
        and isinstance(prev_data.get(field_name), str)
        and isinstance(new_data.get(field_name), str)
    ):
        merged = dict(new_data)
        merged[field_name] = prev_data[field_name] + new_data[field_name]
        return merged
    return new_data


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
            if mode == "accumulate":
                # The state is the newest delta, not the merged value: merging here would
                # rewrite the whole text on every delta (quadratic in the series' length).
                # A stream in seriesFormat=accumulated merges the deltas it relays itself.
                plan.states[sid] = event
            else:  # latest
                previous = plan.states.get(sid) or series_state(sid)
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


class _Accumulated:
    """A series' accumulated ``data``, with the string at ``field`` kept as pieces.

    Joining on every delta would copy the whole value each time (quadratic in the series'
    length: 5,000 deltas cost ~75 MB of copying); the pieces are joined only when a snapshot
    needs the value. ``parts`` is None when the value holds no string at ``field`` (then
    ``data`` is the value as it is); otherwise the value is ``data`` with ``"".join(parts)``
    at ``field``.
    """

    __slots__ = ("data", "field", "parts")

    def __init__(self, data: Any, field_name: str) -> None:
        self.data: Any
        self.field: str
        self.parts: list[str] | None
        self._reset(data, field_name)

    def _reset(self, data: Any, field_name: str) -> None:
        self.data = data
        self.field = field_name
        text = data.get(field_name) if isinstance(data, dict) else None
        self.parts = [text] if isinstance(text, str) else None

    def value(self) -> Any:
        parts = self.parts
        if parts is None:
            return self.data
        text = parts[0] if len(parts) == 1 else "".join(parts)
        self.parts = [text]
        if self.data[self.field] is not text:
            self.data = {**self.data, self.field: text}
        return self.data

    def adopt(self, value: Any) -> None:
        """Take ``value`` as the value so far (the same as :meth:`value` would give)."""
        self._reset(value, self.field)

    def add(self, delta: TaskEvent) -> bool:
        """Apply the next delta as :func:`accumulate` would; whether it appended."""
        field_name = delta.series_acc_field or DEFAULT_ACC_FIELD
        data = delta.data
        if field_name != self.field:
            # The series changed its field: look for a string there in the value so far.
            self._reset(self.value(), field_name)
        parts = self.parts
        if parts is None or not isinstance(data, dict) or not isinstance(data.get(field_name), str):
            self._reset(data, field_name)
            return False
        parts.append(data[field_name])
        self.data = data
        return True


class _Run:
    """Consecutive deltas of one accumulate series, waiting to be sent as one event."""

    __slots__ = ("appends_only", "count", "last", "pieces", "series_id")

    def __init__(self, series_id: str) -> None:
        self.series_id = series_id
        self.last: TaskEvent | None = None
        self.pieces: list[str] = []
        self.count = 0
        self.appends_only = True


class Collapser:
    """Collapses runs of consecutive ``accumulate`` deltas for a late-joining subscriber.

    The original collapses a whole series into one snapshot at its first position, which
    moves later indexes ahead of earlier ones and breaks ``Last-Event-ID`` resume. Here each
    run of consecutive deltas of one series becomes a single event carrying the id of the
    run's last delta, so events stay in index order and a client that resumes after any
    event it received misses and duplicates nothing:

    * the first run of a series is a snapshot (``seriesSnapshot: true``) holding the full
      accumulated value so far;
    * later runs are one merged delta (their pieces concatenated), so history that
      interleaves a series with other events replays in linear, not quadratic, size;
    * a run in which the series was reset (a non-string delta) is sent as a snapshot.

    A caller that reads from the start but keeps only events after a cursor passes it as
    ``keep_after``: the first kept run of each series is then a snapshot too.
    """

    __slots__ = ("_keep_after", "_run", "_sent", "_states")

    def __init__(self, keep_after: int = -1) -> None:
        self._keep_after = keep_after
        self._states: dict[str, _Accumulated] = {}
        self._sent: set[str] = set()
        self._run: _Run | None = None

    def feed(self, event: TaskEvent) -> tuple[TaskEvent, ...]:
        """Take the next stored event; return whatever is now ready to send.

        A tuple rather than a generator: replay feeds every stored event through here, and
        made and drained a generator object for each.
        """
        if event.series_mode == "accumulate" and event.series_id is not None:
            sid = event.series_id
            state = self._states.get(sid)
            if state is None:
                self._states[sid] = _Accumulated(
                    event.data, event.series_acc_field or DEFAULT_ACC_FIELD
                )
                appends = False
            else:
                appends = state.add(event)
            ready: tuple[TaskEvent, ...] = ()
            run = self._run
            if run is not None and run.series_id != sid:
                ready = (self._emit(run),)
                run = None
            if run is None:
                run = self._run = _Run(sid)
            run.last = event
            run.count += 1
            if appends:
                run.pieces.append(event.data[event.series_acc_field or DEFAULT_ACC_FIELD])
            else:
                run.appends_only = False
            return ready
        if self._run is not None:
            run, self._run = self._run, None
            return (self._emit(run), event)
        return (event,)

    def flush(self) -> tuple[TaskEvent, ...]:
        """What is still held back (the last run), at the end of the history."""
        if self._run is not None:
            run, self._run = self._run, None
            return (self._emit(run),)
        return ()

    def _emit(self, run: _Run) -> TaskEvent:
        last = run.last
        assert last is not None
        sid = run.series_id
        first = sid not in self._sent
        if last.index > self._keep_after:
            self._sent.add(sid)
        if first or not run.appends_only:
            return last.copy(data=self._states[sid].value(), series_snapshot=True)
        if run.count == 1:
            return last
        merged = dict(last.data)
        merged[last.series_acc_field or DEFAULT_ACC_FIELD] = "".join(run.pieces)
        return last.copy(data=merged)


def collapse(events: Iterable[TaskEvent]) -> list[TaskEvent]:
    """Collapse a complete, in-order history (see :class:`Collapser`)."""
    collapser = Collapser()
    out: list[TaskEvent] = []
    for event in events:
        out.extend(collapser.feed(event))
    out.extend(collapser.flush())
    return out
