from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskcast.core import ShortTermStore
from taskcast.core.testing import EventCacheContract, ShortTermStoreContract
from taskcast.sqlite import SQLiteStore


class TestSQLiteShortTermStore(ShortTermStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        store = SQLiteStore(tmp_path / "contract.db")
        await store.open()
        yield store
        await store.close()

    async def test_is_a_short_term_store(self, store: SQLiteStore) -> None:
        assert isinstance(store, ShortTermStore)
        assert (store.name, store.publishes_on_commit, store.shared_across_processes) == (
            "sqlite",
            False,
            True,
        )


class TestSQLiteEventCache(EventCacheContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        store = SQLiteStore(tmp_path / "cached.db")
        await store.open()
        yield store
        await store.close()

    @pytest.fixture
    async def uncached_store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        store = SQLiteStore(tmp_path / "uncached.db", cache_bytes=0)
        await store.open()
        yield store
        await store.close()
