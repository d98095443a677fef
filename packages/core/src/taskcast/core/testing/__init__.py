"""Test support shipped with core: the adapter contract suites.

An adapter's test module subclasses the suites and provides the fixtures::

    from taskcast.core.testing import BroadcastContract, ShortTermStoreContract

    class TestMyStore(ShortTermStoreContract):
        @pytest.fixture
        async def store(self):
            store = MyStore(...)
            await store.open()
            yield store
            await store.close()

Importing this module needs pytest (it is not a runtime dependency of taskcast-core).
"""

from ._contract import (
    BroadcastContract,
    EventCacheContract,
    LongTermStoreContract,
    ReleasableStoreContract,
    ShortTermStoreContract,
)
from ._sse import Frame, collect, events, parse
from ._webhook_contract import WebhookOutboxContract

__all__ = [
    "BroadcastContract",
    "EventCacheContract",
    "Frame",
    "LongTermStoreContract",
    "ReleasableStoreContract",
    "ShortTermStoreContract",
    "WebhookOutboxContract",
    "collect",
    "events",
    "parse",
]
