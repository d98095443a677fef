"""The archive gap check: surviving processes archive what a dead process had queued.

Each process queues archive writes in memory (:class:`~taskcast.core.ArchiveWriter`), so a
process that is killed loses the writes it had acknowledged but not yet stored. A hot store
that implements :class:`ArchiveTrackingStore` (Redis) records, in the same atomic step as
every commit, that the task has writes not yet confirmed archived, and since when. Every
process runs an :class:`ArchiveChecker`: every ``interval_seconds`` it claims (under a
short lease, so processes do not check the same task at once) tasks whose oldest
unconfirmed write is older than ``grace_seconds``, compares the hot store with the archive
(read directly, not through the write queue), and

* if the archive holds everything, clears the record (compare-and-set on the task's
  revision and next index, so a commit racing the check keeps it);
* if only writes younger than the grace period are missing (a live process is still
  writing them), moves the record's time to the oldest of those;
* otherwise (writes older than the grace period are missing: a gap) queues every missing
  write on its own writer and keeps the record, so the task is checked again after the
  lease and cleared once the archive holds it.

The tasks whose records are older than the grace period plus one interval (by then a check
has had its chance to confirm them) are reported by :meth:`health` (``/health/detail`` calls
:meth:`refresh` first), until a check finds the archive holds them. Nothing is checked while this
process's archive writer is retrying an outage: every process then has a backlog that is
late, not lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._background import StopSignal, stop_task
from ._errors import StorageUnavailableError, TaskcastError, UsageError
from ._ids import now_ms
from ._models import EventQuery, Task, TaskEvent
from ._ports import ShortTermStore

if TYPE_CHECKING:
    from ._engine import TaskEngine

__all__ = ["ArchiveCheckConfig", "ArchiveChecker", "ArchiveTrackingStore", "tracks_archive"]

logger = logging.getLogger("taskcast.core.archive_check")

# Tasks whose verified index prefix this process remembers (see ArchiveChecker._verified).
_VERIFIED_MAX = 10_000


@dataclass(slots=True, frozen=True, kw_only=True)
class ArchiveCheckConfig:
    """How often and how late surviving processes look for archive writes that were lost.

    A write is at most about ``grace_seconds + 2 * interval_seconds`` late to be found and
    re-queued once the process that had it queued died.
    """

    interval_seconds: float = 5.0
    """Seconds between checks (each process checks; 0 turns the check off)."""
    grace_seconds: float = 10.0
    """Age of an unconfirmed write before it counts as missing. Longer than a healthy
    writer needs (its linger plus a batch) and than the clock skew between processes."""
    batch_size: int = 200
    """Most tasks one check compares."""

    def __post_init__(self) -> None:
        if self.interval_seconds < 0:
            raise UsageError(f"interval_seconds must not be negative, not {self.interval_seconds}")
        if self.grace_seconds <= 0:
            raise UsageError(f"grace_seconds must be positive, not {self.grace_seconds}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, not {self.batch_size}")

    @property
    def overdue_ms(self) -> int:
        """Age of a record that counts as a gap: the grace period plus one interval, so a
        busy task whose recent writes were still being written at the last check is not
        reported before the next check looked at it."""
        return int((self.grace_seconds + self.interval_seconds) * 1000)

    @property
    def lease_ms(self) -> int:
        """How long a claimed task is left to the process that claimed it."""
        return int(max(self.interval_seconds, 1.0) * 2000)


@runtime_checkable
class ArchiveTrackingStore(Protocol):
    """The optional capability of a :class:`ShortTermStore` to record unarchived writes.

    Every commit (task creation, events, transitions) records the task with the time of its
    oldest write not yet confirmed archived, atomically with the write itself. Implemented
    by the Redis store (``tracks_archive = True``).
    """

    tracks_archive: bool

    async def claim_unarchived(
        self, older_than: int, limit: int, lease_ms: int
    ) -> list[tuple[str, int]]:
        """Up to ``limit`` ``(task_id, since_ms)`` recorded before ``older_than`` (ms) and
        not leased, each now leased for ``lease_ms``."""

    async def settle_unarchived(
        self,
        task_id: str,
        *,
        since: int | None,
        checked_at: int,
        expected_revision: int,
        expected_last_index: int,
    ) -> None:
        """End a claim. ``since`` None: the archive held everything as of the revision and
        last index given; clear the record if they are unchanged (or the task is gone),
        otherwise set its time to ``checked_at``. ``since`` given: set the record's time to
        it. The lease is released either way."""

    async def unarchived_overdue(self, older_than: int) -> tuple[int, int | None]:
        """How many records are older than ``older_than`` (ms), and the oldest one's time."""


def tracks_archive(store: ShortTermStore) -> bool:
    """Whether ``store`` implements :class:`ArchiveTrackingStore`."""
    return bool(getattr(store, "tracks_archive", False)) and isinstance(store, ArchiveTrackingStore)


class ArchiveChecker:
    """Background checks finding and closing archive gaps (owned by the engine)."""

    def __init__(self, engine: TaskEngine, config: ArchiveCheckConfig) -> None:
        self._engine = engine
        self.config = config
        self._task: asyncio.Task[None] | None = None
        self._stop = StopSignal()
        self.requeued = 0
        """Writes this process re-queued because the archive lacked them past the grace."""
        self.checks = 0
        """Checks this process completed."""
        self._overdue = 0
        self._oldest: int | None = None
        self._last_gap = 0
        self._checked_at: int | None = None
        self._last_warning: str | None = None
        # Task id -> (its createdAt, an index up to which this process found every hot event
        # archived): a busy task is checked again every grace period, and comparing only
        # what came after keeps each check's cost to the new events, not the whole history.
        # createdAt tells a task deleted and created again under the same id.
        self._verified: dict[str, tuple[int, int]] = {}

    def start(self) -> None:
        if self._task is None:
            self._stop = StopSignal()
            self._task = asyncio.create_task(self._run(self._stop), name="taskcast-archive-check")

    async def stop(self, timeout: float = 5.0) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task, self._stop, timeout=timeout, what="archive check", log=logger)

    async def refresh(self, timeout: float = 2.0) -> None:
        """Count the records older than ``overdue_ms`` now (kept as they were if the hot
        store does not answer within ``timeout`` seconds)."""
        store = self._engine.short_term
        if not isinstance(store, ArchiveTrackingStore):
            return
        cutoff = now_ms() - self.config.overdue_ms
        try:
            async with asyncio.timeout(timeout):
                self._overdue, self._oldest = await store.unarchived_overdue(cutoff)
        except (TimeoutError, StorageUnavailableError) as exc:
            logger.debug("archive records not counted: %r", exc)

    def health(self) -> dict[str, Any]:
        """The unarchived writes older than ``overdue_ms``, as of the last count (each
        check and each :meth:`refresh`)."""
        now = now_ms()
        return {
            "running": self._task is not None,
            "intervalSeconds": self.config.interval_seconds,
            "graceSeconds": self.config.grace_seconds,
            "tasks": self._overdue,
            "oldestAgeSeconds": (
                None if self._oldest is None else round(max(0, now - self._oldest) / 1000, 3)
            ),
            "missingWrites": self._last_gap,
            "requeued": self.requeued,
            "lastCheckAgeSeconds": (
                None if self._checked_at is None else round((now - self._checked_at) / 1000, 3)
            ),
        }

    @property
    def overdue(self) -> int:
        """Tasks with writes older than ``overdue_ms`` not confirmed archived."""
        return self._overdue

    @property
    def oldest_age_seconds(self) -> float:
        """Age of the oldest unconfirmed write past ``overdue_ms`` (0 when none)."""
        return 0.0 if self._oldest is None else max(0, now_ms() - self._oldest) / 1000

    async def _run(self, stop: StopSignal) -> None:
        interval = self.config.interval_seconds
        # Processes started together would otherwise check in lockstep.
        await stop.sleep(random.random() * interval)
        while not stop.is_set():
            try:
                await self._check(stop)
            except StorageUnavailableError as exc:
                # The archive or the hot store is down: writers retry, nothing to compare.
                logger.debug("archive check skipped: %s", exc)
            except TaskcastError as exc:
                # A missing schema fails every check the same way: said once, not every
                # interval.
                text = str(exc)
                level = logging.DEBUG if text == self._last_warning else logging.WARNING
                logger.log(level, "archive check failed: %s", text)
                self._last_warning = text
            except Exception as exc:  # the loop must survive a store hiccup
                logger.exception("archive check failed")
                await self._engine.hooks.fire_unhandled(exc, {"operation": "archive-check"})
            await stop.sleep(interval)

    async def check(self) -> int:
        """Compare the tasks that are due now; return the writes re-queued."""
        return await self._check(None)

    async def _check(self, stop: StopSignal | None) -> int:
        engine = self._engine
        store = engine.short_term
        writer = engine.archive
        if writer is None or not isinstance(store, ArchiveTrackingStore):
            return 0
        if writer.state == "retrying":
            return 0
        cutoff = now_ms() - int(self.config.grace_seconds * 1000)
        claimed = await store.claim_unarchived(cutoff, self.config.batch_size, self.config.lease_ms)
        requeued = 0
        for task_id, since in claimed:
            if stop is not None and stop.is_set():
                break
            requeued += await self._check_task(store, task_id, since, cutoff)
        if claimed:
            self._last_warning = None  # compared tasks again: a new failure is news
        self._overdue, self._oldest = await store.unarchived_overdue(
            now_ms() - self.config.overdue_ms
        )
        self._last_gap = requeued
        self._checked_at = now_ms()
        self.checks += 1
        return requeued

    async def _check_task(
        self, store: ArchiveTrackingStore, task_id: str, since: int, cutoff: int
    ) -> int:
        engine = self._engine
        writer = engine.archive
        assert writer is not None
        short_term = engine.short_term
        checked_at = now_ms()
        current = await short_term.get_task_revision(task_id)
        if current is None:
            self._verified.pop(task_id, None)
            await store.settle_unarchived(
                task_id,
                since=None,
                checked_at=checked_at,
                expected_revision=-1,
                expected_last_index=-1,
            )
            return 0
        task, revision = current
        last = await short_term.last_index(task_id)
        known = self._verified.get(task_id)
        after = known[1] if known is not None and known[0] == task.created_at else None
        hot = await short_term.get_events(task_id, EventQuery(after_index=after))
        # What is durably stored, not what is still queued in this process.
        durable = writer.long_term
        stored = await durable.get_task(task_id)
        stored_ids = {
            e.id for e in await durable.get_events(task_id, EventQuery(after_index=after))
        }
        missing = [e for e in hot if e.id not in stored_ids]
        self._remember(task, hot, missing)
        snapshot_missing = (
            stored is None or stored.status != task.status or stored.updated_at != task.updated_at
        )
        late = [e for e in missing if e.timestamp <= cutoff]
        if late or (snapshot_missing and task.updated_at <= cutoff):
            # Writes acknowledged longer ago than the grace period and still not archived:
            # the process that had them queued is gone. Queue them here; the record (and
            # its lease) stays until a later check finds them archived.
            count = len(missing) + snapshot_missing
            if writer.is_failing(task_id):
                # The archive refuses this task (reported as failing): the writer keeps
                # these until the task's next attempt, so a fix of the cause is picked up.
                writer.submit(task if snapshot_missing else None, missing)
                return 0
            writer.submit(task if snapshot_missing else None, missing)
            self.requeued += count
            logger.warning(
                "archive gap: task %s lacked %d write(s) acknowledged more than %gs ago "
                "(since %d); re-queued them",
                task_id,
                count,
                self.config.grace_seconds,
                since,
            )
            return count
        if missing or snapshot_missing:
            # Recent writes a live writer is still storing: look again once they are late.
            times = [e.timestamp for e in missing]
            if snapshot_missing:
                times.append(task.updated_at)
            await store.settle_unarchived(
                task_id,
                since=min(times),
                checked_at=checked_at,
                expected_revision=revision,
                expected_last_index=last,
            )
            return 0
        await store.settle_unarchived(
            task_id,
            since=None,
            checked_at=checked_at,
            expected_revision=revision,
            expected_last_index=last,
        )
        return 0

    def _remember(self, task: Task, hot: list[TaskEvent], missing: list[TaskEvent]) -> None:
        """Advance the task's verified prefix to just before its first missing event."""
        first_missing = min((e.index for e in missing), default=None)
        verified = [e.index for e in hot if first_missing is None or e.index < first_missing]
        if not verified:
            return
        if len(self._verified) >= _VERIFIED_MAX and task.id not in self._verified:
            self._verified.clear()  # a bound, not a cache policy: it only saves reads
        self._verified[task.id] = (task.created_at, max(verified))
