"""The task engine: validation, the state machine and the write path.

Every write goes through the short-term store's atomic commit, then the broadcast, then
(behind the publisher) the long-term archive. Reads fall back to the archive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._archive import ArchiveWriter
from ._archive_check import ArchiveCheckConfig, ArchiveChecker, tracks_archive
from ._background import StopSignal, stop_task
from ._errors import (
    InvalidInputError,
    InvalidTransitionError,
    StaleRevisionError,
    TaskConflictError,
    TaskNotFoundError,
    TaskTerminalError,
    UsageError,
)
from ._filters import DELETED_EVENT, STATUS_EVENT
from ._hooks import HookRunner, TaskcastHooks
from ._hub import Hub
from ._ids import new_id, now_ms
from ._lifecycle import LifecycleConfig, LifecycleWorker, rehydrate, supports_release
from ._memory import MemoryBroadcast
from ._models import (
    LEVELS,
    SERIES_MODES,
    STATUSES,
    CommitResult,
    EventDraft,
    EventQuery,
    Task,
    TaskEvent,
    TaskPage,
    TaskQuery,
)
from ._ports import BroadcastProvider, LongTermStore, ShortTermStore
from ._scheduler import Scheduler, SchedulerConfig
from ._state_machine import SUSPENDED_STATUSES, can_transition
from ._task_archive import ImportResult, TaskArchive, compact_history
from ._validation import MAX_CHARS_CAP, check_name, check_no_nul, check_task_id

__all__ = ["DELETED_EVENT", "EngineLimits", "EventInput", "TaskEngine", "TaskInput"]

logger = logging.getLogger("taskcast.core.engine")

# A compare-and-set that keeps losing to non-conflicting writers is retried this often.
_CAS_ATTEMPTS = 20


@dataclass(slots=True, frozen=True, kw_only=True)
class EngineLimits:
    """Input limits enforced by the engine."""

    max_batch: int = 1000
    """Most events accepted in one publish call."""
    max_id_chars: int = 256
    """Longest task id or event ``idempotencyKey`` (at most 1,024)."""
    max_name_chars: int = 256
    """Longest name: event and task ``type``, ``seriesId``, ``seriesAccField``, each tag,
    each ``metadata`` key, ``blockedRequest.type``, ``error.code``, each webhook
    ``filter.types`` pattern (and, at the HTTP API, each filter pattern of a query); at most
    1,024."""
    max_patterns: int = 100
    """Most type patterns in one filter: a webhook's ``filter.types`` (and, at the HTTP API,
    each filter list of a query). Every event is matched against every pattern of every
    subscriber, so the count is bounded like the length of each."""

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise UsageError("max_batch must be positive")
        if self.max_patterns < 1:
            raise UsageError("max_patterns must be positive")
        for name in ("max_id_chars", "max_name_chars"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_CHARS_CAP:
                raise UsageError(f"{name} must be between 1 and {MAX_CHARS_CAP}, not {value}")


@dataclass(slots=True, frozen=True, kw_only=True)
class TaskInput:
    """What a caller may set when creating a task."""

    id: str | None = None
    type: str | None = None
    params: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    ttl: int | None = None
    auth_config: dict[str, Any] | None = None
    webhooks: list[Any] | None = None
    cleanup: dict[str, Any] | None = None
    tags: list[str] | None = None
    assign_mode: str | None = None
    cost: int | None = None
    disconnect_policy: str | None = None


@dataclass(slots=True, frozen=True, kw_only=True)
class EventInput:
    """An event as a publisher sends it."""

    type: str
    level: Literal["debug", "info", "warn", "error"] = "info"
    data: Any = None
    series_id: str | None = None
    series_mode: Literal["keep-all", "accumulate", "latest"] | None = None
    series_acc_field: str | None = None
    idempotency_key: str | None = None


def _check_event(item: EventInput, limits: EngineLimits, where: str) -> None:
    """One event's fields; ``where`` prefixes field names (``"3."`` in a batch)."""
    if not isinstance(item.type, str) or not item.type:
        raise InvalidInputError("Event type must be a non-empty string")
    names = limits.max_name_chars
    check_name(f"{where}type", item.type, names)
    if item.type.startswith("taskcast:"):
        raise InvalidInputError(f"Event type is reserved: {item.type}")
    if item.level not in LEVELS:
        raise InvalidInputError(f"Invalid level: {item.level}")
    if item.series_mode is not None and item.series_mode not in SERIES_MODES:
        raise InvalidInputError(f"Invalid seriesMode: {item.series_mode}")
    if item.series_id is not None:
        check_name(f"{where}seriesId", item.series_id, names)
    if item.series_acc_field is not None:
        check_name(f"{where}seriesAccField", item.series_acc_field, names)
    if item.idempotency_key is not None:
        check_name(f"{where}idempotencyKey", item.idempotency_key, limits.max_id_chars)
    # ``data`` is checked for NUL where it is encoded anyway: the HTTP API scans the request
    # bytes, the Redis store (what fronts a PostgreSQL archive) its encoded JSON.


def _check_task_input(data: TaskInput, limits: EngineLimits) -> None:
    names = limits.max_name_chars
    if data.type is not None:
        check_name("type", data.type, names)
    if data.tags is not None:
        if not isinstance(data.tags, list | tuple):
            raise InvalidInputError("Invalid field tags: must be a list of strings")
        for i, tag in enumerate(data.tags):
            check_name(f"tags.{i}", tag, names)
    if isinstance(data.metadata, Mapping):
        for key in data.metadata:
            check_name(f"metadata key {str(key)[:40]!r}", key, names)
    if isinstance(data.webhooks, list):
        for i, hook in enumerate(data.webhooks):
            if not isinstance(hook, Mapping):
                continue  # parse_webhooks words the error
            secret = hook.get("secret")
            # The secret is copied into every delivery record: bounded like the URL.
            if isinstance(secret, str) and len(secret) > MAX_CHARS_CAP:
                raise InvalidInputError(
                    f"Invalid field webhooks.{i}.secret: longer than {MAX_CHARS_CAP} "
                    f"characters (max {MAX_CHARS_CAP})"
                )
            patterns = hook.get("filter")
            types = patterns.get("types") if isinstance(patterns, Mapping) else None
            if isinstance(types, list):
                if len(types) > limits.max_patterns:
                    raise InvalidInputError(
                        f"Invalid field webhooks.{i}.filter.types: more than "
                        f"{limits.max_patterns} patterns (max {limits.max_patterns})"
                    )
                for j, pattern in enumerate(types):
                    check_name(f"webhooks.{i}.filter.types.{j}", pattern, names)
    for field, value in (
        ("params", data.params),
        ("result", data.result),
        ("metadata", data.metadata),
        ("authConfig", data.auth_config),
        ("webhooks", data.webhooks),
        ("cleanup", data.cleanup),
    ):
        if value is not None:
            check_no_nul(value, field)


class TaskEngine:
    """Creates tasks, moves them through the state machine and publishes their events.

    Args:
        short_term: The required hot store (atomic commit).
        broadcast: Cross-process fan-out; defaults to an in-process :class:`MemoryBroadcast`.
        long_term: Optional archive written behind the publisher.
        hooks: Integrations to notify.
        limits: Input limits.
        archive_check: How often surviving processes look for archive writes a dead
            process had queued (with a hot store that records unarchived writes, Redis).
        stop_timeout_seconds: Longest :meth:`stop` waits for the engine's background loops
            (scheduler, lifecycle worker, archive check, the archive reconcile started at
            start) to end, and the archive writer it creates for ``long_term`` for its loop
            once it gives up draining. A loop still running then is logged, with the place it waits at,
            and left behind.
    """

    def __init__(
        self,
        *,
        short_term: ShortTermStore,
        broadcast: BroadcastProvider | None = None,
        long_term: LongTermStore | None = None,
        hooks: TaskcastHooks | Sequence[TaskcastHooks] | None = None,
        limits: EngineLimits | None = None,
        queue_limit: int = 10_000,
        scheduler: SchedulerConfig | None = None,
        reconcile_archive_on_start: bool = True,
        lifecycle: LifecycleConfig | None = None,
        stop_timeout_seconds: float = 5.0,
        archive_check: ArchiveCheckConfig | None = None,
    ) -> None:
        if not stop_timeout_seconds > 0:
            raise UsageError(f"stop_timeout_seconds must be positive, not {stop_timeout_seconds}")
        self.stop_timeout_seconds = stop_timeout_seconds
        self.short_term = short_term
        self.broadcast: BroadcastProvider = broadcast or MemoryBroadcast()
        # Archive writes go through an ordered, retrying queue so they never block or fail
        # the publisher (architecture §3).
        if long_term is None or isinstance(long_term, ArchiveWriter):
            self.archive = long_term
        else:
            self.archive = ArchiveWriter(
                long_term, cancel_timeout=stop_timeout_seconds, on_drop=self._dropped
            )
        if self.archive is not None:
            # A writer built by the caller reports to the engine's hooks too, unless it was
            # given handlers of its own.
            if self.archive.on_drop is None:
                self.archive.on_drop = self._dropped
            if self.archive.on_failure is None:
                self.archive.on_failure = self._archive_failed
        self.long_term: LongTermStore | None = self.archive
        if hooks is None:
            hooks = ()
        elif isinstance(hooks, TaskcastHooks):
            hooks = (hooks,)
        self.hooks = HookRunner(hooks)
        self.limits = limits or EngineLimits()
        self.hub = Hub(self.broadcast, queue_limit=queue_limit)
        self._started = False
        self.scheduler_config = scheduler or SchedulerConfig()
        self.reconcile_archive_on_start = reconcile_archive_on_start
        self._reconcile: asyncio.Task[None] | None = None
        self._reconcile_stop = StopSignal()
        self._scheduler: Scheduler | None = None
        self.lifecycle_config = lifecycle or LifecycleConfig()
        self._lifecycle: LifecycleWorker | None = None
        self.archive_check_config = archive_check or ArchiveCheckConfig()
        self.archive_checker: ArchiveChecker | None = None
        """The archive gap check, while it runs (see :class:`ArchiveChecker`)."""

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the stores and the broadcast (idempotent)."""
        if self._started:
            return
        await self.short_term.open()
        # A broadcast that can lose messages while reconnecting (Redis) reports the
        # reconnect; open streams then re-check the store for what they missed.
        if getattr(self.broadcast, "on_reconnect", False) is None:
            self.broadcast.on_reconnect = self.hub.notify_gap  # type: ignore[attr-defined]
        await self.broadcast.open()
        if self.long_term is not None:
            await self.long_term.open()
        self._started = True
        if self.scheduler_config.interval_seconds > 0:
            self._scheduler = Scheduler(self, self.scheduler_config)
            self._scheduler.start()
        if self.lifecycle_config.enabled and self.archive is not None:
            if supports_release(self.short_term):
                self._lifecycle = LifecycleWorker(self, self.lifecycle_config)
                self._lifecycle.start()
        if (
            self.archive is not None
            and self.archive_check_config.interval_seconds > 0
            and tracks_archive(self.short_term)
        ):
            self.archive_checker = ArchiveChecker(self, self.archive_check_config)
            self.archive_checker.start()
        if self.archive is not None and self.reconcile_archive_on_start:
            # A crashed process loses archive writes still queued in memory; the hot store
            # still holds them, so compare in the background and queue what is missing.
            self._reconcile_stop = StopSignal()
            self._reconcile = asyncio.create_task(
                self._reconcile_archive(self._reconcile_stop), name="taskcast-reconcile"
            )

    async def _reconcile_archive(self, stop: StopSignal) -> None:
        assert self.archive is not None
        try:
            await self.archive.reconcile(self.short_term, stopping=stop)
        except Exception as exc:  # startup must not fail on it; the next start retries
            logger.warning("archive reconcile failed: %s", exc)
            await self.hooks.fire_unhandled(exc, {"operation": "archive-reconcile"})

    @property
    def scheduler(self) -> Scheduler:
        """The time-driven worker (TTL, resumeAt, cleanup); usable directly in tests."""
        if self._scheduler is None:
            self._scheduler = Scheduler(self, self.scheduler_config)
        return self._scheduler

    async def stop(self) -> None:
        """End open streams, flush archive writes and close the stores."""
        self.hub.shutdown()
        # The background loops are told to stop together and each waited for at most
        # stop_timeout_seconds (see taskcast.core._background): none can hold up the stop.
        timeout = self.stop_timeout_seconds
        stopping: list[Awaitable[Any]] = []
        reconcile, self._reconcile = self._reconcile, None
        if reconcile is not None:
            stopping.append(
                stop_task(
                    reconcile,
                    self._reconcile_stop,
                    timeout=timeout,
                    what="archive reconcile",
                    log=logger,
                )
            )
        if self._scheduler is not None:
            stopping.append(self._scheduler.stop(timeout))
        if self._lifecycle is not None:
            stopping.append(self._lifecycle.stop(timeout))
        checker, self.archive_checker = self.archive_checker, None
        if checker is not None:
            stopping.append(checker.stop(timeout))
        if stopping:
            await asyncio.gather(*stopping)
        if not self._started:
            return
        self._started = False
        await self.broadcast.close()
        if self.long_term is not None:
            await self.long_term.close()
        await self.short_term.close()

    async def __aenter__(self) -> TaskEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- tasks -----------------------------------------------------------------------

    async def create_task(self, data: TaskInput | None = None) -> Task:
        """Create a pending task (with ``data.id``, or a new ULID).

        Raises:
            InvalidInputError: The input breaks a rule or a limit.
            TaskConflictError: A task with ``data.id`` exists, live or archived.
            StorageUnavailableError: A store cannot be reached; with an explicit id, that
                includes the archive, which must be read to rule out a released duplicate.
        """
        data = data or TaskInput()
        if data.ttl is not None and (
            isinstance(data.ttl, bool) or not isinstance(data.ttl, int) or data.ttl <= 0
        ):
            raise InvalidInputError(f"Invalid TTL: {data.ttl}")
        if data.cost is not None and data.cost < 0:
            raise InvalidInputError(f"Invalid cost: {data.cost}")
        if data.id is not None:
            check_task_id(data.id, self.limits.max_id_chars)
        _check_task_input(data, self.limits)
        now = now_ms()
        task = Task(
            id=data.id or new_id(),
            status="pending",
            created_at=now,
            updated_at=now,
            type=data.type,
            params=data.params,
            result=data.result,
            metadata=data.metadata,
            ttl=data.ttl,
            deadline_at=now + data.ttl * 1000 if data.ttl is not None else None,
            auth_config=data.auth_config,
            webhooks=data.webhooks,
            cleanup=data.cleanup,
            tags=data.tags,
            assign_mode=data.assign_mode,
            cost=data.cost,
            disconnect_policy=data.disconnect_policy,
        )
        # An explicit id may name a task already released to the archive. While the archive
        # cannot be read this raises StorageUnavailableError (503): creating the task anyway
        # would shadow the released one, and the archive, which keeps the first row of each
        # event index, would drop the new task's acknowledged events. Generated ids are new.
        if data.id is not None and self.long_term is not None:
            if await self.long_term.get_task(data.id) is not None:
                raise TaskConflictError(data.id)
        await self.short_term.create_task(task)
        self._archive(task, ())
        await self.hooks.fire("on_task_created", task)
        return task

    async def get_task(self, task_id: str) -> Task | None:
        """The task, or ``None``.

        Raises:
            InvalidInputError: ``task_id`` cannot be a task id (every method taking one does).
        """
        check_task_id(task_id, self.limits.max_id_chars)
        task = await self.short_term.get_task(task_id)
        if task is None and self.long_term is not None:
            task = await self.long_term.get_task(task_id)
        return task

    async def require_task(self, task_id: str) -> Task:
        task = await self.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    async def list_tasks(self, query: TaskQuery | None = None) -> TaskPage:
        return await self.short_term.list_tasks(query or TaskQuery())

    async def delete_task(self, task_id: str) -> bool:
        """Delete a task everywhere; live subscribers end with reason ``deleted``."""
        check_task_id(task_id, self.limits.max_id_chars)
        existed = await self.short_term.delete_task(task_id)
        if self.long_term is not None:
            archived = await self.long_term.get_task(task_id)
            await self.long_term.delete_task(task_id)
            existed = existed or archived is not None
        if existed:
            marker = TaskEvent(
                id=new_id(),
                task_id=task_id,
                index=-1,
                timestamp=now_ms(),
                type=DELETED_EVENT,
                level="info",
            )
            await self.broadcast.publish(task_id, [marker])
        return existed

    async def delete_events(self, task_id: str, indexes: Sequence[int]) -> int:
        """Remove stored events by index (cleanup rules); live streams are unaffected."""
        check_task_id(task_id, self.limits.max_id_chars)
        return await self.short_term.delete_events(task_id, indexes)

    async def transition_task(
        self,
        task_id: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        reason: str | None = None,
        ttl: int | None = None,
        resume_after_ms: int | None = None,
        blocked_request: dict[str, Any] | None = None,
    ) -> Task:
        """Move a task to ``status``; of concurrent conflicting moves exactly one wins."""
        check_task_id(task_id, self.limits.max_id_chars)
        if status not in STATUSES:
            raise InvalidInputError(f"Invalid status: {status}")
        if ttl is not None and ttl <= 0:
            raise InvalidInputError(f"Invalid TTL: {ttl}")
        self._check_transition_input(result, error, reason, blocked_request)
        for _ in range(_CAS_ATTEMPTS):
            current = await self.short_term.get_task_revision(task_id)
            if current is None:
                # Released to the archive: bring it back (a finished one stays there).
                archived = await rehydrate(self.short_term, self.long_term, task_id)
                if archived is not None and archived.is_terminal:
                    raise InvalidTransitionError(archived.status, status)
                if archived is not None:
                    current = await self.short_term.get_task_revision(task_id)
            if current is None:
                raise TaskNotFoundError(task_id)
            task, revision = current
            if not can_transition(task.status, status):
                raise InvalidTransitionError(task.status, status)
            updated, drafts = self._build_transition(
                task, status, result, error, reason, ttl, resume_after_ms, blocked_request
            )
            try:
                commit = await self.short_term.commit_transition(updated, revision, drafts)
            except StaleRevisionError:
                continue
            except TaskNotFoundError:
                # Released (or deleted) since we read it: the next round restores it from
                # the archive, or answers 404 if it is gone everywhere.
                continue
            await self._after_commit(task_id, commit, updated)
            await self._fire_transition(updated, task.status)
            return updated
        # Only reachable if other writers keep moving the task without conflicting with us.
        raise InvalidTransitionError(task.status, status)

    def _check_transition_input(
        self,
        result: dict[str, Any] | None,
        error: dict[str, Any] | None,
        reason: str | None,
        blocked_request: dict[str, Any] | None,
    ) -> None:
        names = self.limits.max_name_chars
        if isinstance(error, Mapping) and error.get("code") is not None:
            check_name("error.code", error["code"], names)
        if isinstance(blocked_request, Mapping) and blocked_request.get("type") is not None:
            check_name("blockedRequest.type", blocked_request["type"], names)
        for field, value in (
            ("result", result),
            ("error", error),
            ("reason", reason),
            ("blockedRequest", blocked_request),
        ):
            if value is not None:
                check_no_nul(value, field)

    def _build_transition(
        self,
        task: Task,
        status: str,
        result: dict[str, Any] | None,
        error: dict[str, Any] | None,
        reason: str | None,
        ttl: int | None,
        resume_after_ms: int | None,
        blocked_request: dict[str, Any] | None,
    ) -> tuple[Task, list[EventDraft]]:
        now = now_ms()
        changes: dict[str, Any] = {"status": status, "updated_at": now}
        if status in ("completed", "failed", "timeout", "cancelled"):
            changes["completed_at"] = now
        if result is not None:
            changes["result"] = result
        if error is not None:
            changes["error"] = error
        if ttl is not None:
            changes["ttl"] = ttl
        effective_ttl = ttl if ttl is not None else task.ttl
        if status == "paused" or status in ("completed", "failed", "timeout", "cancelled"):
            # The TTL clock stops while paused and restarts in full on leaving pause.
            changes["deadline_at"] = None
        elif effective_ttl is not None and (
            ttl is not None or task.status == "paused" or task.deadline_at is None
        ):
            changes["deadline_at"] = now + effective_ttl * 1000
        if status in SUSPENDED_STATUSES:
            if reason is not None:
                changes["reason"] = reason
        else:
            changes.update(reason=None, blocked_request=None, resume_at=None)
        if status == "blocked":
            if blocked_request is not None:
                changes["blocked_request"] = blocked_request
            if resume_after_ms is not None:
                changes["resume_at"] = now + resume_after_ms
        updated = task.copy(**changes)
        status_data: dict[str, Any] = {"status": status}
        if updated.result is not None:
            status_data["result"] = updated.result
        if updated.error is not None:
            status_data["error"] = updated.error
        drafts = [
            EventDraft(
                id=new_id(), timestamp=now, type=STATUS_EVENT, level="info", data=status_data
            )
        ]
        if status == "blocked" and updated.blocked_request is not None:
            blocked: dict[str, Any] = {"request": updated.blocked_request}
            if updated.reason is not None:
                blocked = {"reason": updated.reason, **blocked}
            drafts.append(
                EventDraft(
                    id=new_id(), timestamp=now, type="taskcast:blocked", level="info", data=blocked
                )
            )
        if task.status == "blocked" and status == "running" and task.blocked_request is not None:
            drafts.append(
                EventDraft(
                    id=new_id(),
                    timestamp=now,
                    type="taskcast:resolved",
                    level="info",
                    data={"resolution": result},
                )
            )
        return updated, drafts

    async def _fire_transition(self, task: Task, previous: str) -> None:
        if task.status == "failed":
            await self.hooks.fire("on_task_failed", task, task.error)
        elif task.status == "timeout":
            await self.hooks.fire("on_task_timeout", task)
        await self.hooks.fire("on_task_transitioned", task, previous, task.status)

    # -- events ----------------------------------------------------------------------

    async def publish_event(self, task_id: str, event: EventInput) -> TaskEvent:
        return (await self.publish_events(task_id, [event]))[0]

    async def publish_events(self, task_id: str, events: Sequence[EventInput]) -> list[TaskEvent]:
        """Publish a batch atomically: every event is stored, or none is."""
        limits = self.limits
        check_task_id(task_id, limits.max_id_chars)
        if not events:
            raise InvalidInputError("No events to publish")
        if len(events) > limits.max_batch:
            raise InvalidInputError(f"Too many events in one batch (max {limits.max_batch})")
        now = now_ms()
        drafts = []
        batch = len(events) > 1
        for position, item in enumerate(events):
            _check_event(item, limits, f"{position}." if batch else "")
            drafts.append(
                EventDraft(
                    id=new_id(),
                    timestamp=now,
                    type=item.type,
                    level=item.level,
                    data=item.data,
                    series_id=item.series_id,
                    series_mode=item.series_mode,
                    series_acc_field=item.series_acc_field,
                    idempotency_key=item.idempotency_key,
                )
            )
        try:
            commit = await self.short_term.commit_events(task_id, drafts)
        except TaskNotFoundError:
            # Released to the archive: bring it back, then commit as usual.
            archived = await rehydrate(self.short_term, self.long_term, task_id)
            if archived is None:
                raise
            if archived.is_terminal:
                raise TaskTerminalError(archived.status) from None
            commit = await self.short_term.commit_events(task_id, drafts)
        await self._after_commit(task_id, commit, None)
        return commit.events

    async def _after_commit(self, task_id: str, commit: CommitResult, task: Task | None) -> None:
        # No await may come between the commit returning and the broadcast of an in-process
        # provider, or two publishers could be broadcast out of index order.
        if commit.fresh and not self.short_term.publishes_on_commit:
            await self.broadcast.publish(task_id, commit.fresh)
        self._archive(task, commit.fresh)
        if commit.fresh and self.hooks.wants("on_events_published"):
            await self.hooks.fire("on_events_published", task_id, commit.fresh)

    def _archive(self, task: Task | None, events: Sequence[TaskEvent]) -> None:
        if self.archive is not None and (task is not None or events):
            self.archive.submit(task, events)

    async def _dropped(self, events: Sequence[TaskEvent], reason: str) -> None:
        for event in events:
            await self.hooks.fire("on_event_dropped", event, reason)

    async def _archive_failed(self, task_id: str, error: BaseException, attempts: int) -> None:
        await self.hooks.fire("on_archive_failed", task_id, error, attempts)

    async def get_events(self, task_id: str, query: EventQuery | None = None) -> list[TaskEvent]:
        """Stored events in index order, from the hot store or else the archive.

        The events may be shared with other readers (the memory store's own objects, or
        an :class:`EventCache`'s): read them, copy them (``event.copy(...)``) to change them.
        """
        check_task_id(task_id, self.limits.max_id_chars)
        query = query or EventQuery()
        events = await self.short_term.get_events(task_id, query)
        if not events and self.long_term is not None:
            if await self.short_term.get_task(task_id) is None:
                events = await self.long_term.get_events(task_id, query)
        return events

    async def resolve_cursor(self, task_id: str, event_id: str) -> int | None:
        """The index of an event id, from the hot store or, for a released task, the archive.

        The archive does not know ids of replaced ``latest`` entries: such a cursor on a
        released task resolves to None (the stream then sends a resync).
        """
        check_task_id(task_id, self.limits.max_id_chars)
        if len(event_id) > self.limits.max_id_chars or "\x00" in event_id:
            return None  # no event has such an id: an unknown cursor
        index = await self.short_term.resolve_cursor(task_id, event_id)
        if index is None and self.long_term is not None:
            if await self.short_term.get_task(task_id) is None:
                index = await self.long_term.resolve_cursor(task_id, event_id)
        return index

    async def last_index(self, task_id: str) -> int:
        check_task_id(task_id, self.limits.max_id_chars)
        last = await self.short_term.last_index(task_id)
        if last < 0 and self.long_term is not None:
            if await self.short_term.get_task(task_id) is None:
                last = await self.long_term.last_index(task_id)
        return last

    # -- archives --------------------------------------------------------------------

    async def export_task_archive(self, task_id: str) -> TaskArchive:
        """The task and its compacted history (see :mod:`taskcast.core._task_archive`).

        A released task is read from the long-term store. Events missing from the stored
        history (removed by cleanup rules, or ``latest`` entries replaced) are simply not
        in the archive: its indexes are renumbered from 0 either way.

        Raises:
            TaskNotFoundError: No such task, hot or archived.
        """
        task = await self.require_task(task_id)
        events = await self.get_events(task_id)
        return TaskArchive(task=task, events=compact_history(events), exported_at=now_ms())

    async def import_task_archive(
        self, archive: TaskArchive, *, overwrite: bool = False
    ) -> ImportResult:
        """Store an archived task (from :func:`~taskcast.core.parse_task_archive`).

        The hot store writes the task with all its events in one atomic step, then the
        long-term store receives them behind it like any publish. With ``overwrite`` an
        existing task (hot or released) is replaced completely and its live subscribers end
        with ``taskcast.done`` reason ``replaced``; without it an existing task raises
        :class:`TaskConflictError`, writing nothing. Imported events are history: they are
        not broadcast, and no hooks or webhooks fire for them.
        """
        task = archive.task
        check_task_id(task.id, self.limits.max_id_chars)
        existed = await self.short_term.get_task(task.id) is not None
        if not existed and self.long_term is not None:
            existed = await self.long_term.get_task(task.id) is not None
        if existed and not overwrite:
            raise TaskConflictError(task.id)
        if existed and self.long_term is not None:
            # First, so the archive never holds the old task's rows under the new one's
            # indexes (it keeps the first row of each index). If the import then fails, the
            # old task is still hot and the archive reconcile writes it back.
            await self.long_term.delete_task(task.id)
        if not await self.short_term.import_task(task, archive.events, replace=overwrite):
            raise TaskConflictError(task.id)
        self._archive(task, archive.events)
        if existed:
            marker = TaskEvent(
                id=new_id(),
                task_id=task.id,
                index=-1,
                timestamp=now_ms(),
                type=DELETED_EVENT,
                level="info",
                data={"reason": "replaced"},
            )
            await self.broadcast.publish(task.id, [marker])
        return ImportResult(task_id=task.id, event_count=len(archive.events), overwritten=existed)

    @property
    def lifecycle(self) -> LifecycleWorker:
        """The hot/cold lifecycle worker (running only with a releasable store and an
        archive); usable directly in tests."""
        if self._lifecycle is None:
            self._lifecycle = LifecycleWorker(self, self.lifecycle_config)
        return self._lifecycle

    def subscriber_count(self, task_id: str) -> int:
        return self.hub.count(task_id)


def event_input_from_dict(data: Mapping[str, Any]) -> EventInput:
    """Build an :class:`EventInput` from camelCase wire keys (already type-checked)."""
    return EventInput(
        type=data["type"],
        level=data.get("level", "info"),
        data=data.get("data"),
        series_id=data.get("seriesId"),
        series_mode=data.get("seriesMode"),
        series_acc_field=data.get("seriesAccField"),
        idempotency_key=data.get("idempotencyKey"),
    )
