"""Sentry integration driven by Taskcast engine hooks.

::

    import sentry_sdk
    from taskcast.core import TaskEngine, MemoryShortTermStore
    from taskcast.sentry import sentry_hooks

    sentry_sdk.init(dsn="https://...")
    engine = TaskEngine(short_term=MemoryShortTermStore(), hooks=sentry_hooks())
"""

from ._hooks import (
    EventDroppedError,
    SentryOptions,
    TaskFailedError,
    TaskTimedOutError,
    sentry_hooks,
    setup_sentry,
)

__all__ = [
    "EventDroppedError",
    "SentryOptions",
    "TaskFailedError",
    "TaskTimedOutError",
    "sentry_hooks",
    "setup_sentry",
]
