"""The server-side view of a task: what the widget shows before its script takes over.

The rules here mirror ``static/taskcast-widget.js`` exactly, so the first paint (rendered by
the server) and the view the script rebuilds from the SSE replay are the same:

* ``accumulate`` series: a ``seriesSnapshot`` event replaces the series' value, a delta is
  merged with the original's algorithm (concatenate ``data[seriesAccField]`` when both sides
  hold strings there, otherwise the delta's data replaces the value); the text shown is that
  field, a bare string, or else the value as JSON.
* ``latest`` series: the newest value, with a percentage read from ``pct``/``percent``/
  ``progress`` (0-100) or ``current``/``total``, and a caption from ``label``/``message``.
* ``taskcast:status`` events set the status; a terminal one carries ``result``/``error``.
* The log keeps the last ``log_limit`` events (the collapsed history, as a late joiner sees it).
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from taskcast.core import Task, TaskEngine, TaskEvent

__all__ = [
    "TERMINAL_STATUSES",
    "LogEntry",
    "ProgressView",
    "TaskView",
    "build_view",
    "load_view",
    "percent_of",
    "summarize",
]

logger = logging.getLogger(__name__)

# Kept here rather than imported so the widget works against a remote server without
# taskcast-core installed; the values are the wire protocol's and never change.
TERMINAL_STATUSES: Final = frozenset({"completed", "failed", "timeout", "cancelled"})
STATUS_EVENT: Final = "taskcast:status"
DEFAULT_ACC_FIELD: Final = "delta"
SUMMARY_CHARS: Final = 200
_PAGE: Final = 1000


def summarize(data: Any, limit: int = SUMMARY_CHARS) -> str:
    """Compact JSON of ``data`` (as ``JSON.stringify`` would write it), cut to ``limit`` chars."""
    if data is None:
        return ""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def percent_of(data: Any) -> float | None:
    """The progress percentage (0-100) a ``latest`` value carries, if any."""
    if not isinstance(data, dict):
        return None
    for key in ("pct", "percent", "progress"):
        number = _number(data.get(key))
        if number is not None:
            return min(100.0, max(0.0, number))
    current, total = _number(data.get("current")), _number(data.get("total"))
    if current is not None and total is not None and total > 0:
        return min(100.0, max(0.0, 100.0 * current / total))
    return None


def _caption(data: Any) -> str:
    if isinstance(data, dict):
        for key in ("label", "message"):
            if isinstance(data.get(key), str):
                return str(data[key])
        if percent_of(data) is not None:
            return ""
    if isinstance(data, str):
        return data
    return summarize(data)


def _merge(previous: Any, data: Any, acc_field: str) -> Any:
    if (
        isinstance(previous, dict)
        and isinstance(data, dict)
        and isinstance(previous.get(acc_field), str)
        and isinstance(data.get(acc_field), str)
    ):
        merged = dict(data)
        merged[acc_field] = previous[acc_field] + data[acc_field]
        return merged
    return data


def _text_of(value: Any, acc_field: str) -> str:
    if isinstance(value, dict) and isinstance(value.get(acc_field), str):
        return str(value[acc_field])
    if isinstance(value, str):
        return value
    return summarize(value, limit=1 << 30)


@dataclass(slots=True, frozen=True, kw_only=True)
class LogEntry:
    """One line of the event log."""

    index: int
    event_id: str
    type: str
    level: str
    timestamp: int
    summary: str
    snapshot: bool = False


@dataclass(slots=True, frozen=True, kw_only=True)
class ProgressView:
    """The newest value of a ``latest`` series."""

    series_id: str
    percent: float | None
    caption: str


@dataclass(slots=True, kw_only=True)
class TaskView:
    """Everything the widget template renders for one task."""

    task_id: str
    status: str = "unknown"
    texts: dict[str, str] = field(default_factory=dict)
    progress: dict[str, ProgressView] = field(default_factory=dict)
    log: deque[LogEntry] = field(default_factory=deque)
    log_count: int = 0
    result: Any = None
    error: Any = None
    last_event_id: str | None = None
    log_limit: int = 200
    _values: dict[str, tuple[Any, str]] = field(default_factory=dict, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def error_text(self) -> str:
        error = self.error
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        return summarize(error)

    @property
    def result_text(self) -> str:
        return summarize(self.result, limit=1 << 30)

    def apply(self, event: TaskEvent) -> None:
        """Fold one (possibly collapsed) event into the view, as the browser script does."""
        data = event.data
        sid, mode = event.series_id, event.series_mode
        if sid is not None and mode == "accumulate":
            acc_field = event.series_acc_field or DEFAULT_ACC_FIELD
            previous = self._values.get(sid)
            value = (
                data
                if event.series_snapshot or previous is None
                else _merge(previous[0], data, acc_field)
            )
            self._values[sid] = (value, acc_field)
            self.texts[sid] = _text_of(value, acc_field)
        elif sid is not None and mode == "latest":
            self.progress[sid] = ProgressView(
                series_id=sid, percent=percent_of(data), caption=_caption(data)
            )
        if event.type == STATUS_EVENT and isinstance(data, dict):
            status = data.get("status")
            if isinstance(status, str):
                self.status = status
            if "result" in data:
                self.result = data["result"]
            if "error" in data:
                self.error = data["error"]
        self.last_event_id = event.id
        self.log_count += 1
        self.log.append(
            LogEntry(
                index=event.index,
                event_id=event.id,
                type=event.type,
                level=event.level,
                timestamp=event.timestamp,
                summary=summarize(data),
                snapshot=bool(event.series_snapshot),
            )
        )
        while len(self.log) > self.log_limit:
            self.log.popleft()


def build_view(
    task_id: str,
    events: Iterable[TaskEvent],
    *,
    task: Task | None = None,
    log_limit: int = 200,
) -> TaskView:
    """The view of a task after ``events`` (already collapsed, in index order)."""
    view = TaskView(task_id=task_id, log_limit=log_limit)
    for event in events:
        view.apply(event)
    return view if task is None else _finish(view, task)


async def load_view(engine: TaskEngine, task_id: str, *, log_limit: int = 200) -> TaskView | None:
    """Read a task and its collapsed history from an in-process engine; ``None`` if unknown."""
    from taskcast.core import Collapser, EventQuery, task_id_problem

    if task_id_problem(task_id, engine.limits.max_id_chars) is not None:
        return None  # no task can have this id (the engine would refuse it: HTTP 400)
    task = await engine.get_task(task_id)
    if task is None:
        return None
    view = TaskView(task_id=task_id, log_limit=log_limit)
    collapser = Collapser()
    after = -1
    # Page through history so a long task costs bounded memory: the view keeps only the
    # series values and the last ``log_limit`` log lines.
    while True:
        page = await engine.get_events(task_id, EventQuery(after_index=after, limit=_PAGE))
        for event in page:
            after = event.index
            for ready in collapser.feed(event):
                view.apply(ready)
        if len(page) < _PAGE:
            break
    for ready in collapser.flush():
        view.apply(ready)
    logger.debug("rendered task %s at %s", task_id, view.last_event_id)
    return _finish(view, task)


def _finish(view: TaskView, task: Task) -> TaskView:
    # The task record is authoritative for status and outcome (retention may have dropped
    # the status events).
    view.status = task.status
    if task.result is not None:
        view.result = task.result
    if task.error is not None:
        view.error = task.error
    return view
