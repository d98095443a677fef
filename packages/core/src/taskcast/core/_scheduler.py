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

from ._errors import InvalidTransitionError, TaskcastError, TaskNotFoundError
from ._filters import matches_type
from ._ids import now_ms
from ._models import TERMINAL_STATUSES, Task, TaskQuery

if TYPE_CHECKING:
    from ._engine import TaskEngine

__all__ = ["CleanupRule", "Scheduler", "SchedulerConfig", "matches_cleanup_rule"]

logger = logging.getLogger("taskcast.core.scheduler")

_ACTIVE = tuple(s for s in ("pending", "assigned", "running", "paused", "blocked"))
_PAGE = 500


@dataclass(slots=True, frozen=True, kw_only=True)
class CleanupRule:
    """Delete finished tasks some time after they finished (reference §10.1).

    ``target`` ``all`` and ``task`` remove the task with its events (events cannot outlive
    their task here).
    """

    name: str | None = None
    task_types: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    after_ms: int = 0
    target: str = "all"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CleanupRule:
        match = data.get("match") or {}
        trigger = data.get("trigger") or {}
        types = match.get("taskTypes")
        statuses = match.get("status")
        return cls(
            name=data.get("name"),
            task_types=tuple(types) if types is not None else None,
            statuses=tuple(statuses) if statuses is not None else None,
            after_ms=int(trigger.get("afterMs") or 0),
            target=str(data.get("target") or "all"),
        )


def matches_cleanup_rule(task: Task, rule: CleanupRule, now: int) -> bool:
    """Whether ``rule`` says ``task`` should be removed at ``now``."""
    if task.status not in TERMINAL_STATUSES:
        return False
    if rule.statuses is not None and task.status not in rule.statuses:
        return False
    if rule.task_types is not None and not matches_type(task.type, rule.task_types):
        return False
    if rule.target not in ("all", "task"):
        # Event-level cleanup ("events" with an eventFilter) is not supported yet.
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
        self._last_cleanup = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="taskcast-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.tick()
                if loop.time() - self._last_cleanup >= self._config.cleanup_interval_seconds:
                    self._last_cleanup = loop.time()
                    await self.cleanup()
            except TaskcastError as exc:
                logger.warning("scheduler tick failed: %s", exc)
            except Exception as exc:  # the loop must survive a store hiccup
                logger.exception("scheduler tick failed")
                await self._engine.hooks.fire_unhandled(exc, {"operation": "scheduler"})
            await asyncio.sleep(self._config.interval_seconds)

    async def _active_tasks(self, statuses: tuple[str, ...]) -> list[Task]:
        out: list[Task] = []
        after = None
        while True:
            page = await self._engine.list_tasks(
                TaskQuery(statuses=statuses, limit=_PAGE, after=after)
            )
            out.extend(page.tasks)
            if page.next_after is None:
                return out
            after = page.next_after

    async def tick(self) -> None:
        """Time out expired tasks and wake blocked tasks whose ``resumeAt`` passed."""
        now = now_ms()
        for task in await self._active_tasks(_ACTIVE):
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
        now = now_ms()
        for task in await self._active_tasks(tuple(TERMINAL_STATUSES)):
            rules = list(self._config.cleanup_rules)
            if task.cleanup and isinstance(task.cleanup.get("rules"), list):
                for raw in task.cleanup["rules"]:
                    try:
                        rules.append(CleanupRule.from_dict(raw))
                    except (TypeError, ValueError, AttributeError):
                        logger.warning("ignoring malformed cleanup rule on task %s", task.id)
            if any(matches_cleanup_rule(task, rule, now) for rule in rules):
                await self._engine.delete_task(task.id)
