from collections.abc import AsyncIterator

import pytest

from taskcast.core import MemoryBroadcast, MemoryLongTermStore, MemoryShortTermStore
from taskcast.core.testing import (
    BroadcastContract,
    LongTermStoreContract,
    ReleasableStoreContract,
    ShortTermStoreContract,
)


class TestMemoryShortTermStore(ShortTermStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryShortTermStore]:
        store = MemoryShortTermStore()
        await store.open()
        yield store
        await store.close()


class TestMemoryBroadcast(BroadcastContract):
    @pytest.fixture
    async def broadcast(self) -> AsyncIterator[MemoryBroadcast]:
        b = MemoryBroadcast()
        await b.open()
        yield b
        await b.close()


class TestMemoryLongTermStore(LongTermStoreContract):
    @pytest.fixture
    async def long_term(self) -> AsyncIterator[MemoryLongTermStore]:
        s = MemoryLongTermStore()
        yield s


class TestMemoryReleasableStore(ReleasableStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryShortTermStore]:
        yield MemoryShortTermStore()
