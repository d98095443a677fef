"""The Taskcast exception tree.

::

    TaskcastError
    ├── UsageError (ValueError)            the caller's mistake: bad input, bad config
    │   ├── InvalidInputError               rejected request data (HTTP 400)
    │   └── ConfigError                     a configuration value or file is wrong
    ├── TaskNotFoundError (LookupError)     no such task (HTTP 404)
    ├── TaskConflictError                   a task with that id exists (HTTP 409)
    ├── InvalidTransitionError              the state machine refuses the move (HTTP 409)
    ├── TaskTerminalError                   publishing to a finished task (HTTP 400)
    ├── StaleRevisionError                  a compare-and-set lost the race (retried by the engine)
    └── StorageUnavailableError             a store cannot be reached (HTTP 503)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InvalidInputError",
    "InvalidTransitionError",
    "StaleRevisionError",
    "StorageUnavailableError",
    "TaskConflictError",
    "TaskNotFoundError",
    "TaskTerminalError",
    "TaskcastError",
    "UsageError",
]


class TaskcastError(Exception):
    """Root of every error Taskcast raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(TaskcastError, ValueError):
    """The caller did something wrong; retrying the same call fails the same way."""


class InvalidInputError(UsageError):
    """Request data that Taskcast refuses (maps to HTTP 400)."""


class ConfigError(UsageError):
    """A configuration value or file is wrong."""


class TaskNotFoundError(TaskcastError, LookupError):
    """No task with this id exists."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task not found: {task_id}")
        self.task_id = task_id


class TaskConflictError(TaskcastError):
    """A task with this id already exists."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task already exists: {task_id}")
        self.task_id = task_id


class InvalidTransitionError(TaskcastError):
    """The state machine does not allow this transition (or a concurrent one won)."""

    def __init__(self, from_status: str, to_status: str) -> None:
        super().__init__(f"Invalid transition: {from_status} \u2192 {to_status}")
        self.from_status = from_status
        self.to_status = to_status


class TaskTerminalError(TaskcastError):
    """Events cannot be published to a task that has finished."""

    def __init__(self, status: str) -> None:
        super().__init__(f"Cannot publish to task in terminal status: {status}")
        self.status = status


class StaleRevisionError(TaskcastError):
    """A compare-and-set write found a newer revision than expected."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task was modified concurrently: {task_id}")
        self.task_id = task_id


class StorageUnavailableError(TaskcastError):
    """A storage dependency cannot be reached or refuses writes; the operation did not happen.

    ``kind`` is a short machine-readable cause (``connection_refused``, ``out_of_memory``,
    ...); ``message`` replaces the default ``"<dependency> unavailable (<kind>)"`` when the
    dependency gave a reason worth showing (e.g. Redis's ``OOM`` reply).
    """

    def __init__(
        self, dependency: str, kind: str = "unavailable", message: str | None = None
    ) -> None:
        super().__init__(message or f"{dependency} unavailable ({kind})")
        self.dependency = dependency
        self.kind = kind
