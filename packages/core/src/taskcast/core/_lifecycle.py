"""Hot/cold lifecycle: release archived tasks from the hot store, bring them back on write.

With a shared hot store (Redis) and a permanent archive (PostgreSQL), every task would
otherwise stay in Redis until it is deleted, so Redis memory would grow with the number of
tasks ever run. The :class:`LifecycleWorker` releases tasks that are done with the hot store:

* finished tasks some time after they finished (``terminal_release_after_seconds``);
* unfinished tasks nobody has written to for a long time (``idle_release_after_seconds``).

A task is released only once the archive (read directly, not through the write queue)
holds its current snapshot and every event the hot store has; otherwise the missing writes
are queued again and the task is retried on a later sweep. The release itself is one atomic
store operation that removes the task only if its revision and last index are still the
ones checked, so a write racing the release makes the release a no-op.

Reads of a released task (``get_task``, history, SSE replay and ``Last-Event-ID`` resume)
fall back to the archive in the engine. A write to a released unfinished task calls
:func:`rehydrate` first: the task, its whole archived history, the next index, the series
state and the idempotency keys are restored into the hot store in one atomic step that
fails harmlessly if another process restored it first.

Tasks with pending time-driven work (a TTL deadline or a ``resumeAt``) are never released
while unfinished: the scheduler watches hot tasks only.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._background import StopSignal, stop_task
from ._errors import TaskcastError, UsageError
from ._ids import now_ms
from ._models import EventQuery, Task, TaskEvent, TaskQuery
from ._ports import LongTermStore, ShortTermStore

if TYPE_CHECKING:
    from ._engine import TaskEngine

__all__ = [
    "LifecycleConfig",
    "LifecycleWorker",
    "ReleasableStore",
    "rehydrate",
    "series_states",
    "supports_release",
]

logger = logging.getLogger("taskcast.core.lifecycle")


@dataclass(slots=True, frozen=True, kw_only=True)
class LifecycleConfig:
    """When finished and idle tasks leave the hot store (needs a long-term store).

    The defaults suit a production deployment: finished tasks stay hot for an hour (clients
    that reconnect shortly after the end are served from Redis), idle unfinished tasks for a
    day. Set a duration to 0 to never release that kind of task.
    """

    enabled: bool = True
    """Run the lifecycle worker when the hot store supports release and an archive exists."""
    terminal_release_after_seconds: float = 3600.0
    """Release a finished task this long after it finished (0: never)."""
    idle_release_after_seconds: float = 86400.0
    """Release an unfinished task this long after its last event or transition (0: never)."""
    sweep_interval_seconds: float = 60.0
    """Seconds between sweeps (each process sweeps; releases are compare-and-set)."""
    batch_size: int = 500
    """Most tasks released by one sweep."""

    def __post_init__(self) -> None:
        for name in (
            "terminal_release_after_seconds",
            "idle_release_after_seconds",
            "sweep_interval_seconds",
        ):
            value = getattr(self, name)
            if value < 0:
                raise UsageError(f"{name} must not be negative, not {value}")
        if self.sweep_interval_seconds == 0:
            raise UsageError("sweep_interval_seconds must be positive")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, not {self.batch_size}")


@runtime_checkable
class ReleasableStore(Protocol):
    """The optional capability of a :class:`ShortTermStore` to release and restore tasks.

    Implemented by the memory and Redis stores (``supports_release = True``). SQLite does not
    need it: its file is already a permanent store.
    """

    supports_release: bool

    async def release_task(
        self, task_id: str, expected_revision: int, expected_last_index: int
    ) -> bool:
        """Remove the task and everything kept for it, atomically, if its revision and last
        index are still the expected ones; False (removing nothing) otherwise."""

    async def restore_task(
        self,
        task: Task,
        events: Sequence[TaskEvent],
        *,
        next_index: int,
        series: dict[str, TaskEvent],
        revision: int,
    ) -> bool:
        """Put a released task back: its events (index order; ids become resume cursors,
        idempotency keys are remembered), the next index, the series states, and the
        compare-and-set revision. Atomic; False (writing nothing) if the task exists."""


def supports_release(store: ShortTermStore) -> bool:
    """Whether ``store`` implements :class:`ReleasableStore`."""
    return bool(getattr(store, "supports_release", False))


def series_states(events: Iterable[TaskEvent]) -> dict[str, TaskEvent]:
    """The per-series states a store would hold after committing ``events`` (index order).

    Mirrors :func:`~taskcast.core.plan_commit`: a series' state is its newest event (for an
    ``accumulate`` series the newest delta; merged values are made by the streams that
    relay them). Archived history keeps one row per ``latest`` series (the newest), which
    is enough for the state.
    """
    states: dict[str, TaskEvent] = {}
    for event in events:
        sid, mode = event.series_id, event.series_mode
        if sid is not None and mode in ("accumulate", "latest"):
            states[sid] = event
    return states


async def rehydrate(
    short_term: ShortTermStore, long_term: LongTermStore | None, task_id: str
) -> Task | None:
    """Restore a released unfinished task from the archive into the hot store.

    Returns the archived task (a finished one is returned but not restored: nothing can be
    written to it), or None when there is no archive, the store cannot restore, or the
    archive does not know the task. Safe to race: of concurrent restores one writes and the
    others find the task present.
    """
    if long_term is None or not isinstance(short_term, ReleasableStore):
        return None
    if not short_term.supports_release:
        return None
    task = await long_term.get_task(task_id)
    if task is None or task.is_terminal:
        return task
    events = await long_term.get_events(task_id, EventQuery())
    last = max(events[-1].index if events else -1, await long_term.last_index(task_id))
    restored = await short_term.restore_task(
        task,
        events,
        next_index=last + 1,
        series=series_states(events),
        # Not the pre-release revision (unknown here): a value no counter reaches, so a
        # transition prepared against the task before its release cannot pass the check.
        revision=now_ms(),
    )
    if restored:
        logger.info("task %s rehydrated from the archive (%d events)", task_id, len(events))
    return task


class LifecycleWorker:
    """Background sweeps releasing finished and idle tasks (owned by the engine)."""

    def __init__(self, engine: TaskEngine, config: LifecycleConfig) -> None:
        self._engine = engine
        self.config = config
        self._task: asyncio.Task[None] | None = None
        self._stop = StopSignal()
        self.released = 0
        """Tasks this process released."""

    def start(self) -> None:
        if self._task is None:
            # One signal per run: a loop left over from an earlier run still sees its stop.
            self._stop = StopSignal()
            self._task = asyncio.create_task(self._run(self._stop), name="taskcast-lifecycle")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the sweeps; bounded: a loop still running after ``timeout`` seconds is logged
        (with the place it waits at) and left behind."""
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task, self._stop, timeout=timeout, what="lifecycle worker", log=logger)

    def health(self) -> dict[str, Any]:
        return {
            "running": self._task is not None,
            "released": self.released,
            "terminalReleaseAfterSeconds": self.config.terminal_release_after_seconds,
            "idleReleaseAfterSeconds": self.config.idle_release_after_seconds,
        }

    async def _run(self, stop: StopSignal) -> None:
        # The loop ends when ``stop`` is set, not only when a CancelledError reaches it: a
        # cancellation landing inside a store call can be lost on Python 3.11 (see
        # taskcast.core._background), and the loop would then run on forever.
        interval = self.config.sweep_interval_seconds
        # Processes started together would otherwise sweep in lockstep.
        await stop.sleep(random.random() * interval)
        while not stop.is_set():
            try:
                await self._sweep(stop)
            except TaskcastError as exc:
                logger.warning("lifecycle sweep failed: %s", exc)
            except Exception as exc:  # the loop must survive a store hiccup
                logger.exception("lifecycle sweep failed")
                await self._engine.hooks.fire_unhandled(exc, {"operation": "lifecycle"})
            await stop.sleep(interval)

    async def sweep(self) -> int:
        """Release the tasks that are due (up to ``batch_size``); return how many."""
        return await self._sweep(None)

    async def _sweep(self, stop: StopSignal | None) -> int:
        # Stopped part-way, the rest is left for a later sweep (of this or another process).
        now = now_ms()
        released = 0
        after: tuple[int, str] | None = None
        while released < self.config.batch_size:
            page = await self._engine.short_term.list_tasks(TaskQuery(limit=500, after=after))
            for task in page.tasks:
                if released >= self.config.batch_size or (stop is not None and stop.is_set()):
                    break
                if await self._due(task, now) and await self._release(task.id, stop):
                    released += 1
            if page.next_after is None or (stop is not None and stop.is_set()):
                break
            after = page.next_after
        if released:
            logger.info("lifecycle released %d task(s) from the hot store", released)
        return released

    async def _due(self, task: Task, now: int) -> bool:
        cfg = self.config
        if task.is_terminal:
            if cfg.terminal_release_after_seconds <= 0:
                return False
            finished = task.completed_at or task.updated_at
            return now - finished >= cfg.terminal_release_after_seconds * 1000
        if cfg.idle_release_after_seconds <= 0:
            return False
        if task.deadline_at is not None or task.resume_at is not None:
            return False
        horizon = now - cfg.idle_release_after_seconds * 1000
        if task.updated_at > horizon:
            return False
        short_term = self._engine.short_term
        last = await short_term.last_index(task.id)
        if last < 0:
            return True
        tail = await short_term.get_events(task.id, EventQuery(after_index=last - 1, limit=1))
        return not tail or tail[0].timestamp <= horizon

    async def release(self, task_id: str) -> bool:
        """Release one task now if the archive holds all of it; False if not released."""
        return await self._release(task_id, None)

    async def _release(self, task_id: str, stop: StopSignal | None) -> bool:
        engine = self._engine
        short_term = engine.short_term
        archive = engine.archive
        if archive is None or not isinstance(short_term, ReleasableStore):
            return False

        def stopped() -> bool:
            return stop is not None and stop.is_set()

        current = await short_term.get_task_revision(task_id)
        if current is None or stopped():
            return False
        task, revision = current
        last = await short_term.last_index(task_id)
        if stopped():
            return False
        hot = await short_term.get_events(task_id, EventQuery())
        if stopped():
            return False
        # What is durably stored, not what is still queued in this process.
        durable = archive.long_term
        stored = await durable.get_task(task_id)
        if stopped():
            return False
        stored_ids = {e.id for e in await durable.get_events(task_id, EventQuery())}
        if stopped():
            return False
        missing = [e for e in hot if e.id not in stored_ids]
        if (
            stored is None
            or stored.status != task.status
            or stored.updated_at != task.updated_at
            or missing
        ):
            # Queue what is missing (a crash may have lost another process's queue) and
            # try again on a later sweep.
            archive.submit(task, missing)
            return False
        if not await short_term.release_task(task_id, revision, last):
            return False
        self.released += 1
        logger.debug("task %s released from the hot store", task_id)
        return True
