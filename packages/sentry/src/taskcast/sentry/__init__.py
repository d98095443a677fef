"""Sentry integration driven by Taskcast engine hooks.

::

    import sentry_sdk
    from taskcast.core import TaskEngine, MemoryShortTermStore
    from taskcast.sentry import sentry_hooks

    sentry_sdk.init(dsn="https://...")
    engine = TaskEngine(short_term=MemoryShortTermStore(), hooks=sentry_hooks())
"""

from importlib.metadata import version as _dist_version

from ._hooks import (
    ArchiveWriteRefusedError,
    EventDroppedError,
    SentryOptions,
    TaskFailedError,
    TaskTimedOutError,
    sentry_hooks,
    setup_sentry,
)

__all__ = [
    "ArchiveWriteRefusedError",
    "EventDroppedError",
    "SentryOptions",
    "TaskFailedError",
    "TaskTimedOutError",
    "__version__",
    "sentry_hooks",
    "setup_sentry",
]

__version__: str = _dist_version("taskcast-sentry")
"""The installed version (every taskcast package of a release has the same one)."""
