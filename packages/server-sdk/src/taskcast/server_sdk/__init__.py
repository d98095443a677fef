"""Sync and async REST client for Taskcast servers.

Speaks HTTP only (httpx) and does not depend on ``taskcast-core``::

    from taskcast.server_sdk import TaskcastServerClient

    with TaskcastServerClient("http://127.0.0.1:3721") as client:
        task = client.create_task(type="llm.chat")
        with client.run(task.id) as run:
            run.publish_stream(["Hello", ", ", "world"])
"""

from importlib.metadata import version as _dist_version

from ._async_client import AsyncTaskcastServerClient, AsyncTaskRun
from ._calls import RetryConfig
from ._client import DEFAULT_BASE_URL, TaskcastServerClient, TaskRun
from ._errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    ServiceUnavailableError,
    TaskcastHTTPError,
    TaskcastTransportError,
    UnauthorizedError,
)
from ._models import (
    ArchiveImportResult,
    BlockedRequest,
    EventInput,
    Health,
    Level,
    PublishStreamResult,
    SeriesMode,
    ServerInfo,
    Task,
    TaskError,
    TaskEvent,
    TaskPage,
    TaskStatus,
)
from ._tokens import SUBSCRIBE_SCOPE, mint_subscribe_token
from ._webhooks import verify_webhook

__all__ = [
    "DEFAULT_BASE_URL",
    "SUBSCRIBE_SCOPE",
    "ArchiveImportResult",
    "AsyncTaskRun",
    "AsyncTaskcastServerClient",
    "BadRequestError",
    "BlockedRequest",
    "ConflictError",
    "EventInput",
    "ForbiddenError",
    "Health",
    "Level",
    "NotFoundError",
    "PayloadTooLargeError",
    "PublishStreamResult",
    "RetryConfig",
    "SeriesMode",
    "ServerError",
    "ServerInfo",
    "ServiceUnavailableError",
    "Task",
    "TaskError",
    "TaskEvent",
    "TaskPage",
    "TaskRun",
    "TaskStatus",
    "TaskcastHTTPError",
    "TaskcastServerClient",
    "TaskcastTransportError",
    "UnauthorizedError",
    "__version__",
    "mint_subscribe_token",
    "verify_webhook",
]

__version__: str = _dist_version("taskcast-server-sdk")
"""The installed version (every taskcast package of a release has the same one)."""
