"""A background archive writer: archive writes never block, fail or slow the publisher.

The engine hands the long-term store every committed event. Written inline, a slow or
unreachable PostgreSQL would slow publishing or lose events. :class:`ArchiveWriter` wraps any
:class:`~taskcast.core.LongTermStore` and implements the same protocol, so it plugs into
``TaskEngine(long_term=...)`` unchanged; its writes only enqueue. One loop drains the queue
in batches; while the store is unreachable it retries with capped exponential backoff and
keeps everything queued. The queue is in memory: a crash loses it, which is why
:meth:`ArchiveWriter.reconcile` can rebuild what is missing from the hot store (and, with a
hot store that records unarchived writes, :class:`~taskcast.core.ArchiveChecker` finds such
gaps while the server runs).

A write the store refuses for its content (not an outage) is isolated from the rest of its
batch and its task is marked *failing*: that task's refused writes are retried on their own
backoff (up to ``RetryPolicy.failing_maximum`` apart) while every other task keeps flowing,
and the failing tasks are reported by :meth:`ArchiveWriter.health` and ``on_failure``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._background import StopSignal, stop_task
from ._errors import ConfigError, StorageUnavailableError, UsageError
from ._memory import MemoryLongTermStore
from ._models import EventQuery, Task, TaskEvent, TaskQuery
from ._ports import LongTermStore, ShortTermStore

__all__ = ["ArchiveWriter", "RetryPolicy"]

logger = logging.getLogger(__name__)

WriterState = Literal["stopped", "healthy", "retrying"]
DropHandler = Callable[[Sequence[TaskEvent], str], Awaitable[None] | None]
FailureHandler = Callable[[str, BaseException, int], Awaitable[None] | None]


@dataclass(slots=True, frozen=True, kw_only=True)
class RetryPolicy:
    """Backoff between failed write attempts: capped exponential with equal jitter."""

    initial: float = 0.1
    """Seconds before the first retry."""
    maximum: float = 5.0
    """Longest wait between attempts."""
    multiplier: float = 2.0
    max_attempts: int = 8
    """Attempts for a write failing with an unexpected error (neither an outage, which is
    retried for as long as it lasts, nor data the store rejects, which is dropped at once)
    before it is dropped from memory. Its task stays failing: writes of it submitted again
    (the hot store still has them) wait for the task's next attempt."""
    failing_maximum: float = 300.0
    """Longest wait between two attempts at a failing task's writes."""

    def delay(self, failures: int) -> float:
        cap = min(self.maximum, self.initial * self.multiplier ** max(failures - 1, 0))
        return cap / 2 + random.random() * cap / 2

    def failing_delay(self, attempts: int) -> float:
        """Seconds before the next attempt at a task whose writes failed ``attempts`` times."""
        # Capped before the power is taken: attempts grow without bound on a poison task.
        exponent = min(max(attempts - 1, 0), 64)
        cap = min(self.failing_maximum, self.initial * self.multiplier**exponent)
        return cap / 2 + random.random() * cap / 2


@dataclass(slots=True, eq=False)
class _Entry:
    """Pending writes of one task: its newest snapshot and events by id (arrival order)."""

    task_id: str
    task: Task | None = None
    events: dict[str, TaskEvent] = field(default_factory=dict)
    cancelled: bool = False
    parent: _Entry | None = None

    @property
    def size(self) -> int:
        return len(self.events) + (self.task is not None)

    @property
    def is_cancelled(self) -> bool:
        return self.cancelled or (self.parent is not None and self.parent.is_cancelled)


@dataclass(slots=True, eq=False)
class _Failing:
    """A task whose writes the store keeps refusing, retried on its own schedule."""

    task_id: str
    since: float
    """Wall-clock time of the first failure."""
    attempts: int = 0
    error: BaseException | None = None
    retry_at: float = 0.0
    """Event-loop time of the next attempt."""
    snapshot: bool = False
    """The task snapshot is refused: every write of the task waits (the store skips the
    events of a task it does not hold)."""
    events: set[str] = field(default_factory=set)
    """Ids of refused events."""
    parked: _Entry | None = None
    """Writes of the task waiting for ``retry_at``."""
    reported: set[str] = field(default_factory=set)
    """Ids of events already handed to ``on_drop``."""

    @property
    def size(self) -> int:
        return len(self.events) + self.snapshot

    def holds(self, event_id: str | None) -> bool:
        """Whether a write (an event, or the snapshot for None) must wait for the retry."""
        return self.snapshot or (event_id is not None and event_id in self.events)


def _first_line(exc: BaseException) -> str:
    """The first line of the message, at most 300 characters. A database's later lines can
    quote the refused row (PostgreSQL's ``DETAIL: Failing row contains (...)``, the JSON
    ``CONTEXT``): event data must not reach the public ``/health/detail``, the logs or the
    hooks' reasons that way."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= 300 else text[:299] + "\u2026"


def _describe_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (see :func:`_first_line`)."""
    line = _first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _newer(candidate: Task, current: Task) -> bool:
    """Whether ``candidate`` should replace ``current`` (terminal wins, then updated_at)."""
    if candidate.is_terminal != current.is_terminal:
        return candidate.is_terminal
    return candidate.updated_at >= current.updated_at


def _is_outage(exc: BaseException) -> bool:
    # ConfigError is what a store raises when its schema is missing: it is retried, so
    # nothing is lost while an operator runs the migrations.
    return isinstance(exc, StorageUnavailableError | ConfigError | OSError | TimeoutError)


class ArchiveWriter:
    """Queue archive writes in memory and write them in the background, retrying outages.

    Args:
        long_term: The store written to (for example a ``PostgresLongTermStore``).
        max_batch: Most writes (events plus task snapshots) per attempt. Encoding a batch
            holds the event loop the live streams share (~4 ms for 500 events with
            PostgreSQL), so while a backlog drains smaller batches keep latency even.
        retry: Backoff between attempts.
        drain_timeout: Seconds :meth:`close` waits for the backlog to be written.
        cancel_timeout: Seconds :meth:`close` then waits for the loop once it is told to
            give up (a store call in progress has to return first); a loop still running
            after that is logged and left behind.
        on_drop: Called (and awaited if it returns an awaitable) with events that were
            given up on and the reason (data the store rejects, or a write failing
            ``retry.max_attempts`` times with an unexpected error). Never called for an
            outage: those writes wait. Wire it to the engine's ``on_event_dropped`` hook.
            An event is reported once, however often it is submitted and refused again.
        on_failure: Called (and awaited) with the task id, the error and the task's failed
            attempts so far each time the store refuses a task's writes (not for an
            outage). Attempts at one task are at least ``retry.initial`` apart, growing to
            ``retry.failing_maximum``. Wire it to the engine's ``on_archive_failed`` hook.
        linger: Seconds the loop waits, once a write arrives after a quiet spell, for more
            to join it (unless :meth:`stop` or :meth:`flush` is waiting). A steady trickle
            of single events then costs one store round trip per ``linger``, not one per
            event, and less of the event loop the live streams share.

    Also a :class:`~taskcast.core.LongTermStore`: ``save_task``/``save_events`` enqueue and
    return at once (never raising); reads include writes still queued; ``delete_task``
    discards queued writes of the task and deletes it from the store.
    """

    def __init__(
        self,
        long_term: LongTermStore,
        *,
        max_batch: int = 500,
        retry: RetryPolicy | None = None,
        drain_timeout: float = 10.0,
        cancel_timeout: float = 5.0,
        on_drop: DropHandler | None = None,
        linger: float = 0.05,
        on_failure: FailureHandler | None = None,
    ) -> None:
        if max_batch < 1:
            raise UsageError(f"max_batch must be at least 1, not {max_batch}")
        if linger < 0:
            raise UsageError(f"linger must be >= 0, not {linger}")
        self.long_term = long_term
        self.name = long_term.name
        self.max_batch = max_batch
        self.retry = retry or RetryPolicy()
        self.drain_timeout = drain_timeout
        self.cancel_timeout = cancel_timeout
        self.on_drop = on_drop
        self.on_failure = on_failure
        self.linger = linger
        self._failing: dict[str, _Failing] = {}
        self._queue: dict[str, _Entry] = {}
        self._inflight: list[_Entry] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        # Set by stop and flush: a lingering loop writes at once.
        self._hurry = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        # Set when a stop gives up on the backlog: the loop's run ends (one per run).
        self._abort = StopSignal()
        self._state: WriterState = "stopped"
        self._failures = 0
        self._last_error: str | None = None
        self._written = 0
        self._dropped = 0

    # -- status ----------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Writes (events and task snapshots) accepted but not yet stored."""
        return sum(e.size for e in self._inflight if not e.is_cancelled) + sum(
            e.size for e in self._queue.values()
        )

    @property
    def state(self) -> WriterState:
        """``healthy`` (writing normally), ``retrying`` (the store is failing), ``stopped``."""
        return self._state

    def is_failing(self, task_id: str) -> bool:
        """Whether the store refuses writes of the task (they are retried on a backoff)."""
        return task_id in self._failing

    def failing(self) -> dict[str, Any]:
        """Tasks whose writes the store refuses: how many, their refused writes, the age in
        seconds of the oldest failure and the newest error (None when there are none)."""
        records = list(self._failing.values())
        if not records:
            return {"tasks": 0, "writes": 0, "oldestAgeSeconds": None, "lastError": None}
        newest = max(records, key=lambda r: r.retry_at)
        return {
            "tasks": len(records),
            "writes": sum(r.size for r in records),
            "oldestAgeSeconds": round(max(0.0, time.time() - min(r.since for r in records)), 3),
            "lastError": None if newest.error is None else _describe_error(newest.error),
        }

    def health(self) -> dict[str, Any]:
        """For ``/health/detail``: state, backlog, failing tasks and counters."""
        failing = self.failing()
        return {
            "provider": self.name,
            "state": self._state,
            "degraded": self._state == "retrying" or failing["tasks"] > 0,
            "backlog": self.backlog,
            "consecutiveFailures": self._failures,
            "lastError": self._last_error,
            "written": self._written,
            "dropped": self._dropped,
            "failing": failing,
        }

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Open the wrapped store and start the background loop (idempotent)."""
        if self._runner is not None:
            return
        await self.long_term.open()
        self._stopping = False
        self._hurry.clear()
        self._state = "healthy"
        self._abort = StopSignal()
        self._runner = asyncio.create_task(self._run(self._abort), name="taskcast-archive-writer")

    async def close(self) -> None:
        """Drain (up to ``drain_timeout``), stop the loop and close the wrapped store."""
        await self.stop()
        await self.long_term.close()

    async def stop(self, timeout: float | None = None) -> None:
        """Write the backlog (waiting up to ``timeout``, default ``drain_timeout``), then stop.

        What is still queued after the timeout is lost from memory (logged); the hot store
        still has it, and :meth:`reconcile` restores it later. The loop then gets
        ``cancel_timeout`` seconds to end; if it is still running after that (a store call
        that does not return), it is logged and left behind.
        """
        runner = self._runner
        if runner is None:
            return
        self._stopping = True
        self._hurry.set()
        self._wake.set()
        # asyncio.wait, not wait_for: it neither cancels the loop nor depends on it acting
        # on a cancellation.
        await asyncio.wait({runner}, timeout=self.drain_timeout if timeout is None else timeout)
        if not runner.done():
            # The loop ends at its next check of the abort signal even if the cancellation
            # is lost in a store call (see taskcast.core._background); the cancel only cuts
            # that call short. The interrupted batch goes back to the queue either way.
            self._wake.set()
            await stop_task(
                runner,
                self._abort,
                timeout=self.cancel_timeout,
                what="archive writer loop",
                log=logger,
            )
            left = self.backlog
            logger.error(
                "archive writer stopped with %d writes not stored (%s)", left, self._last_error
            )
        elif not runner.cancelled() and runner.exception() is not None:
            logger.error("archive writer loop failed", exc_info=runner.exception())
        self._runner = None
        self._state = "stopped"

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything accepted so far is stored; False on timeout or if stopped."""
        if self._runner is None:
            return self.backlog == 0
        self._hurry.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            if not self._stopping:
                self._hurry.clear()
        return True

    # -- writes ----------------------------------------------------------------------

    def submit(self, task: Task | None, events: Iterable[TaskEvent] = ()) -> None:
        """Queue a task snapshot and/or events. Never blocks, never raises."""
        try:
            if task is not None:
                entry = self._entry(task.id, None)
                if entry.task is None or _newer(task, entry.task):
                    entry.task = task
            for event in events:
                self._entry(event.task_id, event.id).events.setdefault(event.id, event)
        except Exception:  # pragma: no cover - defensive: a publisher must never see this
            logger.exception("archive writer could not queue a write")
            return
        self._idle.clear()
        self._wake.set()

    def _entry(self, task_id: str, event_id: str | None) -> _Entry:
        if self._failing:
            failing = self._failing.get(task_id)
            if failing is not None and failing.holds(event_id):
                # A write the store refused before waits for the task's next attempt
                # instead of failing again at once (the reconcile and the gap check submit
                # them again while the hot store has them).
                if failing.parked is None:
                    failing.parked = _Entry(task_id)
                return failing.parked
        entry = self._queue.get(task_id)
        if entry is None:
            entry = self._queue[task_id] = _Entry(task_id)
        return entry

    async def save_task(self, task: Task) -> None:
        self.submit(task)

    async def save_events(self, events: Sequence[TaskEvent]) -> None:
        self.submit(None, events)

    async def delete_task(self, task_id: str) -> None:
        """Forget queued writes of the task and delete it from the store."""
        async with self._lock:
            self._queue.pop(task_id, None)
            self._failing.pop(task_id, None)
            for entry in self._inflight:
                if entry.task_id == task_id:
                    entry.cancelled = True
            await self.long_term.delete_task(task_id)

    # -- reads -----------------------------------------------------------------------

    def _pending(self, task_id: str) -> list[_Entry]:
        found = [e for e in self._inflight if e.task_id == task_id and not e.is_cancelled]
        queued = self._queue.get(task_id)
        if queued is not None:
            found.append(queued)
        return found

    async def ping(self) -> None:
        await self.long_term.ping()

    async def get_task(self, task_id: str) -> Task | None:
        newest: Task | None = None
        for entry in self._pending(task_id):
            if entry.task is not None and (newest is None or _newer(entry.task, newest)):
                newest = entry.task
        if newest is not None:
            return newest.copy()
        return await self.long_term.get_task(task_id)

    async def get_events(self, task_id: str, query: EventQuery) -> list[TaskEvent]:
        pending = [ev for entry in self._pending(task_id) for ev in entry.events.values()]
        if not pending:
            return await self.long_term.get_events(task_id, query)
        stored = await self.long_term.get_events(
            task_id,
            EventQuery(after_index=query.after_index, after_timestamp=query.after_timestamp),
        )
        # The in-memory archive applies the same rules (dedupe by id, latest series).
        merged = MemoryLongTermStore()
        await merged.save_events(sorted([*stored, *pending], key=lambda e: e.index))
        return await merged.get_events(task_id, query)

    async def resolve_cursor(self, task_id: str, event_id: str) -> int | None:
        for entry in self._pending(task_id):
            event = entry.events.get(event_id)
            if event is not None:
                return event.index
        return await self.long_term.resolve_cursor(task_id, event_id)

    async def last_index(self, task_id: str) -> int:
        pending = max(
            (ev.index for entry in self._pending(task_id) for ev in entry.events.values()),
            default=-1,
        )
        return max(pending, await self.long_term.last_index(task_id))

    # -- recovery --------------------------------------------------------------------

    async def reconcile(
        self,
        short_term: ShortTermStore,
        task_ids: Iterable[str] | None = None,
        *,
        page_size: int = 500,
        stopping: asyncio.Event | None = None,
    ) -> int:
        """Queue whatever the hot store holds that the archive lacks; return events queued.

        Run at startup to recover writes an earlier process accepted but never stored (a
        crash loses the in-memory queue; the hot store still has the data). Without
        ``task_ids``, every task of the hot store is compared. Once ``stopping`` is set it
        returns after the store call in progress, with what it queued so far (a stop
        cannot rely on cancelling it: see taskcast.core._background).
        """

        def stopped() -> bool:
            return stopping is not None and stopping.is_set()

        queued = 0
        if task_ids is None:
            ids: list[str] = []
            after: tuple[int, str] | None = None
            while True:
                page = await short_term.list_tasks(TaskQuery(limit=page_size, after=after))
                ids.extend(t.id for t in page.tasks)
                if stopped():
                    return queued
                if page.next_after is None:
                    break
                after = page.next_after
        else:
            ids = list(task_ids)
        for task_id in ids:
            if stopped():
                break
            task = await short_term.get_task(task_id)
            if stopped():
                break
            if task is None:
                continue
            archived_task = await self.long_term.get_task(task_id)
            if stopped():
                break
            hot = await short_term.get_events(task_id, EventQuery())
            if stopped():
                break
            archived = {e.id for e in await self.long_term.get_events(task_id, EventQuery())}
            if stopped():
                break
            missing = [e for e in hot if e.id not in archived]
            if archived_task is None or archived_task.to_dict() != task.to_dict() or missing:
                self.submit(task, missing)
                queued += len(missing)
        if queued:
            logger.info("archive reconcile queued %d missing events", queued)
        return queued

    # -- the loop --------------------------------------------------------------------

    async def _run(self, abort: StopSignal) -> None:
        # Ends when the queue is empty while stopping, or when ``abort`` is set: not only
        # when a CancelledError reaches it, as a cancellation landing in a store call can be
        # lost on Python 3.11 (see taskcast.core._background), and an outage is retried
        # for as long as it lasts, so the loop would then run on forever.
        quiet = True
        while not abort.is_set():
            self._release_due()
            if not self._queue:
                self._idle.set()
                if self._stopping:
                    return
                self._wake.clear()
                # Writes of failing tasks wait for their own retry time, not for the queue.
                due = self._next_retry()
                if due is None:
                    await self._wake.wait()
                else:
                    try:
                        await asyncio.wait_for(self._wake.wait(), due)
                    except TimeoutError:
                        pass
                quiet = True
                continue
            if quiet and self.linger and not self._hurry.is_set():
                # The first write after a quiet spell waits for company (see ``linger``).
                quiet = False
                try:
                    await asyncio.wait_for(self._hurry.wait(), self.linger)
                except TimeoutError:
                    pass
                continue
            quiet = False
            batch = self._take()
            self._inflight = batch
            try:
                delivered = await self._deliver(batch, abort)
            except asyncio.CancelledError:
                self._requeue(batch)
                raise
            finally:
                if self._inflight is batch:
                    self._inflight = []
            if not delivered:
                # Aborted with its cancellation lost: as if the cancellation had arrived.
                self._requeue(batch)
                return

    def _next_retry(self) -> float | None:
        """Seconds until the earliest parked retry, None if nothing is parked."""
        times = [f.retry_at for f in self._failing.values() if f.parked is not None]
        if not times:
            return None
        return max(0.0, min(times) - asyncio.get_running_loop().time())

    def _release_due(self) -> None:
        """Move the parked writes of failing tasks whose retry time came into the queue."""
        if not self._failing:
            return
        now = asyncio.get_running_loop().time()
        due = [f for f in self._failing.values() if f.parked is not None and f.retry_at <= now]
        for failing in due:
            parked, failing.parked = failing.parked, None
            assert parked is not None
            self._merge(parked)
        if due:
            self._idle.clear()

    def _merge(self, entry: _Entry) -> None:
        """Queue an entry's writes (after those already queued for its task)."""
        head = self._queue.get(entry.task_id)
        if head is None:
            self._queue[entry.task_id] = entry
            return
        if entry.task is not None and (head.task is None or _newer(entry.task, head.task)):
            head.task = entry.task
        for event_id, event in entry.events.items():
            head.events.setdefault(event_id, event)

    def _requeue(self, batch: list[_Entry]) -> None:
        """Put an interrupted batch back at the head of the queue (so it is still counted)."""
        queue: dict[str, _Entry] = {}
        for entry in [*batch, *self._queue.values()]:
            if entry.is_cancelled:
                continue
            head = queue.get(entry.task_id)
            if head is None:
                queue[entry.task_id] = entry
                continue
            if entry.task is not None and (head.task is None or _newer(entry.task, head.task)):
                head.task = entry.task
            for event_id, event in entry.events.items():
                head.events.setdefault(event_id, event)
        self._queue = queue

    def _take(self) -> list[_Entry]:
        batch: list[_Entry] = []
        count = 0
        while self._queue and count < self.max_batch:
            task_id, entry = next(iter(self._queue.items()))
            room = self.max_batch - count
            if len(entry.events) <= room:
                del self._queue[task_id]
                batch.append(entry)
                count += entry.size
                continue
            # Too many events for this batch: send the first ones (with the snapshot, which
            # must precede the events) and leave the rest queued in order.
            ids = list(entry.events)[:room]
            part = _Entry(task_id, task=entry.task, events={i: entry.events.pop(i) for i in ids})
            entry.task = None
            batch.append(part)
            break
        return batch

    async def _deliver(self, entries: list[_Entry], abort: StopSignal) -> bool:
        """Store entries: outages are retried until they end; bad data is isolated and dropped.

        False if ``abort`` was set before they were all stored or dropped.
        """
        failures = 0
        while True:
            if abort.is_set():
                return False
            live = [e for e in entries if not e.is_cancelled]
            if not live:
                return True
            try:
                async with self._lock:
                    live = [e for e in entries if not e.is_cancelled]
                    written = await self._write(live, abort)
            except Exception as exc:
                if abort.is_set():
                    return False
                if _is_outage(exc):
                    failures += 1
                    await self._backoff(failures, exc, abort)
                    continue
                units = _split(live)
                if len(units) > 1:
                    # One bad write must not hold back the others: retry them one by one.
                    for unit in units:
                        refused = self._failing.get(unit[0].task_id)
                        if refused is not None and refused.snapshot and unit[0].task is None:
                            # The store skips events of a task it does not hold: they wait
                            # with the refused snapshot instead of vanishing as "written".
                            await self._fail(unit, refused.error or exc)
                            continue
                        if not await self._deliver(unit, abort):
                            return False
                    return True
                # A write the store refuses: its task is retried on its own schedule and
                # the loop goes on with the others (no backoff here holds up the queue).
                await self._fail(live, exc)
                return True
            if not written:
                return False
            self._succeeded(live)
            return True

    async def _write(self, entries: list[_Entry], abort: StopSignal) -> bool:
        """Write entries; False if ``abort`` was set before all of them were written."""
        for entry in entries:
            if entry.task is not None:
                await self.long_term.save_task(entry.task)
                if abort.is_set():
                    return False
        events = [ev for entry in entries for ev in entry.events.values()]
        if events:
            await self.long_term.save_events(events)
        return True

    async def _backoff(self, failures: int, exc: BaseException, abort: StopSignal) -> None:
        if self._state != "retrying":
            logger.warning("archive writes failing, will retry: %s", _describe_error(exc))
        self._state = "retrying"
        self._failures = failures
        self._last_error = _describe_error(exc)
        await abort.sleep(self.retry.delay(failures))

    def _succeeded(self, entries: list[_Entry]) -> None:
        if self._state == "retrying":
            logger.info("archive writes succeed again; backlog %d", self.backlog)
        self._state = "healthy"
        self._failures = 0
        self._written += sum(e.size for e in entries)
        if self._failing:
            for entry in entries:
                self._recovered(entry)

    def _recovered(self, entry: _Entry) -> None:
        """Forget the refused writes of ``entry``'s task that were just stored."""
        failing = self._failing.get(entry.task_id)
        if failing is None:
            return
        if entry.task is not None:
            failing.snapshot = False
        failing.events.difference_update(entry.events)
        if failing.size:
            return
        del self._failing[entry.task_id]
        logger.info("archive writes of task %s succeed again", entry.task_id)
        if failing.parked is not None:
            self._merge(failing.parked)

    async def _fail(self, entries: list[_Entry], exc: BaseException) -> None:
        """Mark the entries' tasks failing; park their writes (or drop them, see retry)."""
        loop_now = asyncio.get_running_loop().time()
        described = _describe_error(exc)
        self._last_error = described
        for entry in entries:
            failing = self._failing.get(entry.task_id)
            if failing is None:
                failing = self._failing[entry.task_id] = _Failing(entry.task_id, time.time())
                logger.error(
                    "archive store refuses writes of task %s (retried on its own schedule; "
                    "other tasks are not held up): %s",
                    entry.task_id,
                    described,
                )
            counted = failing.retry_at <= loop_now
            if counted:
                # Several refused parts of one task in one round count as one attempt.
                failing.attempts += 1
                failing.retry_at = loop_now + self.retry.failing_delay(failing.attempts)
            else:
                logger.debug(
                    "archive store refuses writes of task %s: %s", entry.task_id, described
                )
            failing.error = exc
            if entry.task is not None:
                failing.snapshot = True
            failing.events.update(entry.events)
            if isinstance(exc, UsageError) or failing.attempts >= self.retry.max_attempts:
                # Not kept in memory: the hot store still has these writes, and the
                # reconcile and the gap check submit them again.
                await self._drop(entry, failing, exc)
            else:
                if failing.parked is None:
                    failing.parked = _Entry(entry.task_id)
                parked = failing.parked
                if entry.task is not None and (
                    parked.task is None or _newer(entry.task, parked.task)
                ):
                    parked.task = entry.task
                for event_id, event in entry.events.items():
                    parked.events.setdefault(event_id, event)
            if counted and self.on_failure is not None:
                try:
                    result = self.on_failure(entry.task_id, exc, failing.attempts)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("archive on_failure handler failed")

    async def _drop(self, entry: _Entry, failing: _Failing, exc: BaseException) -> None:
        fresh = [ev for ev in entry.events.values() if ev.id not in failing.reported]
        failing.reported.update(ev.id for ev in fresh)
        self._dropped += entry.size
        # Logged at ERROR once per write: submitted again and refused again, it is DEBUG
        # (the failing task is reported by health and on_failure instead).
        log = logger.error if fresh or failing.attempts <= 1 else logger.debug
        log(
            "archive gave up on %d writes of task %s for now: %s",
            entry.size,
            entry.task_id,
            _describe_error(exc),
        )
        if self.on_drop is not None and fresh:
            try:
                result = self.on_drop(fresh, _first_line(exc))
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("archive on_drop handler failed")


def _split(entries: list[_Entry]) -> list[list[_Entry]]:
    """Smaller units to retry separately, or a single unit when nothing can be split."""
    if len(entries) > 1:
        return [[e] for e in entries]
    (entry,) = entries
    if entry.size <= 1:
        return [entries]
    units: list[list[_Entry]] = []
    if entry.task is not None:
        units.append([_Entry(entry.task_id, task=entry.task, parent=entry)])
    for event_id, event in entry.events.items():
        units.append([_Entry(entry.task_id, events={event_id: event}, parent=entry)])
    return units
