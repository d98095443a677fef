"""The storage roles every backend implements.

* :class:`ShortTermStore` (required) holds tasks, the ordered event list, series state and
  idempotency keys, and performs the atomic commit: index allocation, append, series merge
  and the task compare-and-set happen in one step.
* :class:`BroadcastProvider` carries committed events to every process that has subscribers.
* :class:`LongTermStore` (optional) is the permanent archive, written behind the publisher.

The contract suite in :mod:`taskcast.core.testing` pins the behaviour every adapter must have.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from ._models import CommitResult, EventDraft, EventQuery, Task, TaskEvent, TaskPage, TaskQuery

__all__ = [
    "BroadcastHandler",
    "BroadcastProvider",
    "LongTermStore",
    "ShortTermStore",
    "Unsubscribe",
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

    async def delete_task(self, task_id: str) -> None: ...
