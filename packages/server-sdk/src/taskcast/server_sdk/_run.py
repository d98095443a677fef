"""What a ``run()`` block does with the task when it ends by an exception."""

from __future__ import annotations

from ._models import TaskError, TaskStatus

__all__ = ["exit_transition"]


def exit_transition(exc: BaseException) -> tuple[TaskStatus, TaskError]:
    """The terminal status and error for a block that ended with ``exc``.

    An ordinary exception fails the task; cancellation, ``KeyboardInterrupt`` and
    ``SystemExit`` are not the task's fault and cancel it instead.
    """
    error = TaskError(code=type(exc).__name__, message=str(exc) or type(exc).__name__)
    if isinstance(exc, Exception):
        return "failed", error
    return "cancelled", error
