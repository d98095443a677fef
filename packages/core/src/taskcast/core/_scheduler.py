"""Time-driven work: TTL timeouts, ``resumeAt`` wake-ups and cleanup rules.

Every process runs the scheduler; each action is a compare-and-set transition or an
idempotent delete, so when several processes see the same due task exactly one acts and
the others' attempts fail harmlessly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._background import StopSignal, stop_task
from ._errors import InvalidTransitionError, TaskcastError, TaskNotFoundError
from ._filters import matches_type
from ._ids import now_ms
from ._models import TERMINAL_STATUSES, EventQuery, Task, TaskEvent, TaskQuery
from ._validation import task_id_problem

if TYPE_CHECKING:
    from ._engine import TaskEngine

__all__ = ["CleanupRule", "Scheduler", "SchedulerConfig", "matches_cleanup_rule"]

logger = logging.getLogger("taskcast.core.scheduler")

_ACTIVE = tuple(s for s in ("pending", "assigned", "running", "paused", "blocked"))
_PAGE = 500


@dataclass(slots=True, frozen=True, kw_only=True)
class CleanupRule:
    """Delete finished tasks, or some of their events, after they finished (reference §10.1).

    ``target`` ``all`` and ``task`` remove the task with its events (events cannot outlive
    their task here); ``events`` removes the events the ``event_*`` filters select.
    """

    name: str | None = None
    task_types: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    after_ms: int = 0
    target: str = "all"
    event_types: tuple[str, ...] | None = None
    event_levels: tuple[str, ...] | None = None
    event_series_modes: tuple[str, ...] | None = None
    older_than_ms: int | None = None

    def selects(self, event: TaskEvent, completed_at: int | None) -> bool:
        """Whether an ``events`` rule removes ``event`` (the original's filter)."""
        if self.event_types is not None and not matches_type(event.type, self.event_types):
            return False
        if self.event_levels is not None and event.level not in self.event_levels:
            return False
        if (
            self.event_series_modes is not None
            and event.series_mode is not None
            and event.series_mode not in self.event_series_modes
        ):
            return False
        if self.older_than_ms is not None and completed_at is not None:
            return event.timestamp < completed_at - self.older_than_ms
        return True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CleanupRule:
        match = data.get("match") or {}
        trigger = data.get("trigger") or {}
        types = match.get("taskTypes")
        statuses = match.get("status")
        events = data.get("eventFilter") or {}
        modes = events.get("seriesMode")
        if isinstance(modes, str):
            modes = [modes]
        older = events.get("olderThanMs")
        return cls(
            name=data.get("name"),
            task_types=tuple(types) if types is not None else None,
            statuses=tuple(statuses) if statuses is not None else None,
            after_ms=int(trigger.get("afterMs") or 0),
            target=str(data.get("target") or "all"),
            event_types=tuple(events["types"]) if events.get("types") is not None else None,
            event_levels=tuple(events["levels"]) if events.get("levels") is not None else None,
            event_series_modes=tuple(modes) if modes is not None else None,
            older_than_ms=int(older) if older is not None else None,
        )


def matches_cleanup_rule(task: Task, rule: CleanupRule, now: int) -> bool:
    """Whether ``rule`` says ``task`` should be removed at ``now``."""
    if task.status not in TERMINAL_STATUSES:
        return False
    if rule.statuses is not None and task.status not in rule.statuses:
        return False
    if rule.task_types is not None and not matches_type(task.type, rule.task_types):
        return False
    finished = task.completed_at or task.updated_at
    return now - finished >= rule.after_ms


@dataclass(slots=True, frozen=True, kw_only=True)
class SchedulerConfig:
    """How often the scheduler looks for due work, and the global cleanup rules."""

    interval_seconds: float = 0.5
    cleanup_rules: Sequence[CleanupRule] = ()
    cleanup_interval_seconds: float = 30.0


class Scheduler:
    """Background loop owned by the engine (started by :meth:`TaskEngine.start`)."""

    def __init__(self, engine: TaskEngine, config: SchedulerConfig) -> None:
        self._engine = engine
        self._config = config
        self._task: asyncio.Task[None] | None = None
        self._stop = StopSignal()
        self._last_cleanup = 0.0
        # (task id, rule position) pairs whose event cleanup already ran in this process, so
        # a finished task's history is not re-read every interval.
        self._events_cleaned: set[tuple[str, int]] = set()

    def start(self) -> None:
        if self._task is None:
            # One signal per run: a loop left over from an earlier run still sees its stop.
            self._stop = StopSignal()
            self._task = asyncio.create_task(self._run(self._stop), name="taskcast-scheduler")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop; bounded: a loop still running after ``timeout`` seconds is logged
        (with the place it waits at) and left behind."""
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task, self._stop, timeout=timeout, what="scheduler", log=logger)

    async def _run(self, stop: StopSignal) -> None:
        # The loop ends when ``stop`` is set, not only when a CancelledError reaches it: a
        # cancellation landing inside a store call can be lost on Python 3.11 (see
        # taskcast.core._background), and the loop would then run on forever.
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                await self._tick(stop)
                if (
                    not stop.is_set()
                    and loop.time() - self._last_cleanup >= self._config.cleanup_interval_seconds
                ):
                    self._last_cleanup = loop.time()
                    await self._cleanup(stop)
            except TaskcastError as exc:
                logger.warning("scheduler tick failed: %s", exc)
            except Exception as exc:  # the loop must survive a store hiccup
                logger.exception("scheduler tick failed")
                await self._engine.hooks.fire_unhandled(exc, {"operation": "scheduler"})
            await stop.sleep(self._config.interval_seconds)

    async def _active_tasks(
        self, statuses: tuple[str, ...], stop: StopSignal | None = None
    ) -> list[Task]:
        out: list[Task] = []
        after = None
        while True:
            page = await self._engine.list_tasks(
                TaskQuery(statuses=statuses, limit=_PAGE, after=after)
            )
            # A task stored under an id refused since (an earlier version accepted '/', '..')
            # cannot be reached through the engine: skip it rather than fail every tick.
            max_chars = self._engine.limits.max_id_chars
            out.extend(t for t in page.tasks if task_id_problem(t.id, max_chars) is None)
            if page.next_after is None or (stop is not None and stop.is_set()):
                return out
            after = page.next_after

    async def tick(self) -> None:
        """Time out expired tasks and wake blocked tasks whose ``resumeAt`` passed."""
        await self._tick(None)

    async def _tick(self, stop: StopSignal | None) -> None:
        # Stopped part-way, the rest is left for the next tick (of this or another process).
        now = now_ms()
        for task in await self._active_tasks(_ACTIVE, stop):
            if stop is not None and stop.is_set():
                return
            try:
                if task.deadline_at is not None and task.deadline_at <= now:
                    await self._engine.transition_task(task.id, "timeout")
                elif (
                    task.status == "blocked"
                    and task.resume_at is not None
                    and task.resume_at <= now
                ):
                    await self._engine.transition_task(task.id, "running")
            except (InvalidTransitionError, TaskNotFoundError):
                # Another process (or a client) got there first.
                continue

    async def cleanup(self) -> None:
        """Apply per-task and global cleanup rules to finished tasks."""
        await self._cleanup(None)

    async def _cleanup(self, stop: StopSignal | None) -> None:
        now = now_ms()
        for task in await self._active_tasks(tuple(TERMINAL_STATUSES), stop):
            if stop is not None and stop.is_set():
                return
            rules = list(self._config.cleanup_rules)
            if task.cleanup and isinstance(task.cleanup.get("rules"), list):
                for raw in task.cleanup["rules"]:
                    try:
                        rules.append(CleanupRule.from_dict(raw))
                    except (TypeError, ValueError, AttributeError):
                        logger.warning("ignoring malformed cleanup rule on task %s", task.id)
            due = [(i, r) for i, r in enumerate(rules) if matches_cleanup_rule(task, r, now)]
            if any(rule.target in ("all", "task") for _, rule in due):
                await self._engine.delete_task(task.id)
                continue
            for position, rule in due:
                if rule.target == "events" and (task.id, position) not in self._events_cleaned:
                    if not await self._clean_events(task, rule, stop):
                        return
                    self._events_cleaned.add((task.id, position))

    async def _clean_events(self, task: Task, rule: CleanupRule, stop: StopSignal | None) -> bool:
        """Delete the events ``rule`` selects; False if stopped before the end."""
        after = -1
        while True:
            page = await self._engine.get_events(
                task.id, EventQuery(after_index=after, limit=_PAGE)
            )
            doomed = [e.index for e in page if rule.selects(e, task.completed_at)]
            if doomed:
                await self._engine.delete_events(task.id, doomed)
            if len(page) < _PAGE:
                return True
            if stop is not None and stop.is_set():
                return False
            after = page[-1].index
