"""Taskcast core: models, state machine, series, filters, the engine and storage ports.

Imports nothing from the other Taskcast packages; adapters and the server build on it.
"""

from importlib.metadata import version as _dist_version

from ._archive import ArchiveWriter, RetryPolicy
from ._archive_check import (
    ArchiveCheckConfig,
    ArchiveChecker,
    ArchiveTrackingStore,
    tracks_archive,
)
from ._background import StopSignal, stop_task
from ._cache import DEFAULT_CACHE_BYTES, EventCache, EventCacheStats
from ._engine import DELETED_EVENT, EngineLimits, EventInput, TaskEngine, TaskInput
from ._errors import (
    ConfigError,
    InvalidInputError,
    InvalidTransitionError,
    StaleRevisionError,
    StorageUnavailableError,
    TaskcastError,
    TaskConflictError,
    TaskNotFoundError,
    TaskTerminalError,
    UsageError,
)
from ._filters import STATUS_EVENT, EventFilter, matches_type
from ._hooks import HookRunner, TaskcastHooks
from ._hub import Hub, Subscriber
from ._ids import new_id, now_ms
from ._lifecycle import (
    LifecycleConfig,
    LifecycleWorker,
    ReleasableStore,
    rehydrate,
    series_states,
    supports_release,
)
from ._memory import MemoryBroadcast, MemoryLongTermStore, MemoryShortTermStore, select_events
from ._models import (
    LEVELS,
    SERIES_MODES,
    STATUSES,
    TERMINAL_STATUSES,
    CommitResult,
    EventDraft,
    EventQuery,
    Level,
    SeriesMode,
    Task,
    TaskEvent,
    TaskPage,
    TaskQuery,
    TaskStatus,
)
from ._ports import (
    BroadcastHandler,
    BroadcastProvider,
    LongTermStore,
    ShortTermStore,
    Unsubscribe,
    WebhookOutbox,
)
from ._redact import MASK, public_webhook, redact_url
from ._scheduler import CleanupRule, Scheduler, SchedulerConfig, matches_cleanup_rule
from ._series import Collapser, CommitPlan, accumulate, collapse, plan_commit
from ._state_machine import SUSPENDED_STATUSES, TRANSITIONS, can_transition, is_terminal
from ._stream import StreamOptions, TaskStream
from ._task_archive import (
    ARCHIVE_SCHEMA,
    ARCHIVE_VERSION,
    ImportResult,
    InvalidTaskArchiveError,
    TaskArchive,
    compact_history,
    parse_task_archive,
)
from ._validation import (
    MAX_CHARS_CAP,
    check_name,
    check_no_nul,
    check_task_id,
    find_nul,
    task_id_problem,
)
from ._webhooks import (
    DeliveryStatus,
    LeaseSettlingOutbox,
    MemoryWebhookOutbox,
    WebhookConfig,
    WebhookDelivery,
    WebhookRetry,
    parse_webhooks,
)
from ._wire import WireEvent, encode_count, envelope_dict

__all__ = [
    "ARCHIVE_SCHEMA",
    "ARCHIVE_VERSION",
    "DEFAULT_CACHE_BYTES",
    # Engine and streams
    "DELETED_EVENT",
    # Models
    "LEVELS",
    "MASK",
    "MAX_CHARS_CAP",
    "SERIES_MODES",
    "STATUSES",
    # State machine, series, filters
    "STATUS_EVENT",
    "SUSPENDED_STATUSES",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "ArchiveCheckConfig",
    "ArchiveChecker",
    "ArchiveTrackingStore",
    "ArchiveWriter",
    # Ports and memory adapters
    "BroadcastHandler",
    "BroadcastProvider",
    "CleanupRule",
    "Collapser",
    "CommitPlan",
    "CommitResult",
    # Errors
    "ConfigError",
    "DeliveryStatus",
    "EngineLimits",
    "EventCache",
    "EventCacheStats",
    "EventDraft",
    "EventFilter",
    "EventInput",
    "EventQuery",
    "HookRunner",
    "Hub",
    "ImportResult",
    "InvalidInputError",
    "InvalidTaskArchiveError",
    "InvalidTransitionError",
    "LeaseSettlingOutbox",
    "Level",
    "LifecycleConfig",
    "LifecycleWorker",
    "LongTermStore",
    "MemoryBroadcast",
    "MemoryLongTermStore",
    "MemoryShortTermStore",
    "MemoryWebhookOutbox",
    "ReleasableStore",
    "RetryPolicy",
    "Scheduler",
    "SchedulerConfig",
    "SeriesMode",
    "ShortTermStore",
    "StaleRevisionError",
    "StopSignal",
    "StorageUnavailableError",
    "StreamOptions",
    "Subscriber",
    "Task",
    "TaskArchive",
    "TaskConflictError",
    "TaskEngine",
    "TaskEvent",
    "TaskInput",
    "TaskNotFoundError",
    "TaskPage",
    "TaskQuery",
    "TaskStatus",
    "TaskStream",
    "TaskTerminalError",
    "TaskcastError",
    "TaskcastHooks",
    "Unsubscribe",
    "UsageError",
    "WebhookConfig",
    "WebhookDelivery",
    "WebhookOutbox",
    "WebhookRetry",
    "WireEvent",
    "__version__",
    "accumulate",
    "can_transition",
    "check_name",
    "check_no_nul",
    "check_task_id",
    "collapse",
    "compact_history",
    "encode_count",
    "envelope_dict",
    "find_nul",
    "is_terminal",
    "matches_cleanup_rule",
    "matches_type",
    "new_id",
    "now_ms",
    "parse_task_archive",
    "parse_webhooks",
    "plan_commit",
    "public_webhook",
    "redact_url",
    "rehydrate",
    "select_events",
    "series_states",
    "stop_task",
    "supports_release",
    "task_id_problem",
    "tracks_archive",
]

__version__: str = _dist_version("taskcast-core")
"""The installed version (every taskcast package of a release has the same one)."""
