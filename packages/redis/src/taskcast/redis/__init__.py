"""Redis broadcast provider and short-term store for Taskcast.

:class:`RedisShortTermStore` commits events in one Lua script (index allocation, append,
series state and the PUBLISH), so any number of server processes can share one Redis;
:class:`RedisBroadcast` keeps one pub/sub connection per process and fans out in-process.
"""

from importlib.metadata import version as _dist_version

from ._broadcast import BroadcastState, ReconnectBackoff, RedisBroadcast
from ._keys import KeySpace, TaskKeys
from ._outbox import RedisWebhookOutbox
from ._scripts import script_source
from ._store import RedisShortTermStore

__all__ = [
    "BroadcastState",
    "KeySpace",
    "ReconnectBackoff",
    "RedisBroadcast",
    "RedisShortTermStore",
    "RedisWebhookOutbox",
    "TaskKeys",
    "__version__",
    "script_source",
]

__version__: str = _dist_version("taskcast-redis")
"""The installed version (every taskcast package of a release has the same one)."""
