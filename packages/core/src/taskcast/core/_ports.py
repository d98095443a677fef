"""The storage roles every backend implements.

* :class:`ShortTermStore` (required) holds tasks, the ordered event list, series state and
  idempotency keys, and performs the atomic commit: index allocation, append, series merge
  and the task compare-and-set happen in one step.
* :class:`BroadcastProvider` carries committed events to every process that has subscribers.
* :class:`LongTermStore` (optional) is the permanent archive, written behind the publisher.
* :class:`WebhookOutbox` (optional) holds webhook deliveries durably until they are sent.

The contract suite in :mod:`taskcast.core.testing` pins the behaviour every adapter must have.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from ._models import CommitResult, EventDraft, EventQuery, Task, TaskEvent, TaskPage, TaskQuery
from ._webhooks import WebhookDelivery

__all__ = [
    "BroadcastHandler",
    "BroadcastProvider",
    "LongTermStore",
    "ShortTermStore",
    "Unsubscribe",
    "WebhookOutbox",
]

BroadcastHandler = Callable[[str, Sequence[TaskEvent]], None]
"""Called (on the event loop) with a task id and committed events in index order."""

Unsubscribe = Callable[[], Awaitable[None]]


@runtime_checkable
class ShortTermStore(Protocol):
    """Hot state of tasks and their event lists."""

    name: str
    publishes_on_commit: bool
    """True when the store's commit also publishes to its paired broadcast (Redis Lua)."""
    shared_across_processes: bool
    """True when several server processes may safely share this store."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise :class:`~taskcast.core.StorageUnavailableError` if unreachable."""

    async def create_task(self, task: Task) -> None:
        """Store a new task; raise :class:`TaskConflictError` if the id exists."""

    async def get_task(self, task_id: str) -> Task | None: ...

    async def get_task_revision(self, task_id: str) -> tuple[Task, int] | None:
        """The task and an opaque revision for :meth:`commit_transition`."""

    async def commit_transition(
        self, task: Task, expected_revision: int, drafts: Sequence[EventDraft]
    ) -> CommitResult:
        """Replace the task if its revision is still ``expected_revision`` and append drafts.

        Raise :class:`StaleRevisionError` (writing nothing) if the revision moved on, and
        :class:`TaskNotFoundError` if the task is gone.
        """

    async def commit_events(self, task_id: str, drafts: Sequence[EventDraft]) -> CommitResult:
        """Atomically allocate indexes, merge series and append; all or nothing.

        Raise :class:`TaskNotFoundError` or :class:`TaskTerminalError` (writing nothing).
        Drafts whose idempotency key is already stored answer with the stored event.
        """

    async def get_events(self, task_id: str, query: EventQuery) -> list[TaskEvent]: ...

    async def resolve_cursor(self, task_id: str, event_id: str) -> int | None:
        """The index of an event id ever allocated for this task (replaced ones too)."""

    async def last_index(self, task_id: str) -> int:
        """The highest index allocated for the task, -1 if none."""

    async def list_tasks(self, query: TaskQuery) -> TaskPage: ...

    async def delete_task(self, task_id: str) -> bool:
        """Remove the task with everything stored for it; False if it did not exist."""

    async def delete_events(self, task_id: str, indexes: Sequence[int]) -> int:
        """Remove stored events by index (cleanup rules); their ids stay valid cursors.

        Returns how many were removed.
        """

    async def import_task(
        self, task: Task, events: Sequence[TaskEvent], *, replace: bool = False
    ) -> bool:
        """Store ``task`` with exactly ``events`` (indexes 0..n-1 in order), in one atomic step.

        Afterwards the task is as if those events had been published live: the next index
        is ``len(events)``, every event id resolves as a cursor, idempotency keys are
        remembered and each ``latest``/``accumulate`` series' state is its newest event.
        With ``replace`` whatever was stored for the task id before is removed in the same
        step; without it an existing task makes this return False, writing nothing.
        Imported events are not broadcast (they are history, not news).
        """


@runtime_checkable
class BroadcastProvider(Protocol):
    """Fan-out of committed events to the processes that follow a task."""

    name: str
    shared_across_processes: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, task_id: str, events: Sequence[TaskEvent]) -> None: ...

    async def subscribe(self, task_id: str, handler: BroadcastHandler) -> Unsubscribe:
        """Deliver the task's future events to ``handler``; active when this returns."""

    async def subscribe_all(self, handler: BroadcastHandler) -> Unsubscribe:
        """Deliver every task's future events to ``handler``."""


@runtime_checkable
class LongTermStore(Protocol):
    """Permanent archive of tasks and events (written asynchronously)."""

    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def save_task(self, task: Task) -> None: ...

    async def get_task(self, task_id: str) -> Task | None: ...

    async def save_events(self, events: Sequence[TaskEvent]) -> None:
        """Idempotent by event id; ``latest`` series keep one row per series."""

    async def get_events(self, task_id: str, query: EventQuery) -> list[TaskEvent]: ...

    async def resolve_cursor(self, task_id: str, event_id: str) -> int | None:
        """The index of an archived event id (None if unknown, e.g. a replaced ``latest``)."""

    async def last_index(self, task_id: str) -> int:
        """The highest archived index of the task, -1 if none."""

    async def delete_task(self, task_id: str) -> None: ...


@runtime_checkable
class WebhookOutbox(Protocol):
    """Durable queue of webhook deliveries (see :class:`~taskcast.core.WebhookDelivery`).

    A dispatcher claims due deliveries under a lease: a claim moves ``next_attempt_at`` to
    ``now + lease_ms`` and gives the delivery a fresh ``lease`` token, so no other claimer
    sees it until the lease runs out (a crashed claimer's deliveries come back then). Only
    the current lease holder may record an outcome; the outcome methods answer False
    (changing nothing) when the lease was lost.
    """

    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, deliveries: Sequence[WebhookDelivery]) -> None:
        """Store new pending deliveries durably (an existing id is left as it is)."""

    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[WebhookDelivery]:
        """Up to ``limit`` pending deliveries due at ``now`` (earliest first), now leased."""

    async def complete(
        self, delivery_id: str, lease: str, *, now: int, attempts: int, response_status: int | None
    ) -> bool:
        """Mark delivered."""

    async def retry_at(
        self,
        delivery_id: str,
        lease: str,
        *,
        now: int,
        next_attempt_at: int,
        attempts: int,
        error: str,
        response_status: int | None,
    ) -> bool:
        """Record a failed attempt and make the delivery due again at ``next_attempt_at``."""

    async def fail(
        self,
        delivery_id: str,
        lease: str,
        *,
        now: int,
        attempts: int,
        error: str,
        response_status: int | None,
    ) -> bool:
        """Mark failed for good (attempts exhausted or the target refused)."""

    async def release(self, delivery_id: str, lease: str, *, now: int) -> bool:
        """Give a claimed delivery back unattempted, due at ``now`` (graceful shutdown)."""

    async def list_for_task(self, task_id: str, limit: int) -> list[WebhookDelivery]:
        """The task's most recent deliveries, newest first."""

    async def purge(self, finished_before: int) -> int:
        """Delete delivered/failed records finished before the given time; return how many."""
