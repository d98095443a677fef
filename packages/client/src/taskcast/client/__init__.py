"""Subscribe to Taskcast task streams with automatic resume.

Speaks HTTP only (httpx + httpx-sse) and does not depend on ``taskcast-core``::

    from taskcast.client import AsyncTaskcastClient

    async with AsyncTaskcastClient("http://127.0.0.1:3721") as client:
        async with client.subscribe(task_id) as subscription:
            async for event in subscription:
                print(event.type, event.data)
        print("done:", subscription.done_reason)
"""

from importlib.metadata import version as _dist_version

from ._async import AsyncSubscription, AsyncTaskcastClient
from ._errors import (
    ForbiddenError,
    NotFoundError,
    StreamInterruptedError,
    TaskcastClientError,
    TaskcastHTTPError,
    UnauthorizedError,
)
from ._models import ReconnectConfig, Resync, StreamEvent, SubscribeOptions
from ._state import DEFAULT_BASE_URL
from ._sync import Subscription, TaskcastClient

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncSubscription",
    "AsyncTaskcastClient",
    "ForbiddenError",
    "NotFoundError",
    "ReconnectConfig",
    "Resync",
    "StreamEvent",
    "StreamInterruptedError",
    "SubscribeOptions",
    "Subscription",
    "TaskcastClient",
    "TaskcastClientError",
    "TaskcastHTTPError",
    "UnauthorizedError",
    "__version__",
]

__version__: str = _dist_version("taskcast-client")
"""The installed version (every taskcast package of a release has the same one)."""
