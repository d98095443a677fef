"""The core contract suites, run against Redis."""

from __future__ import annotations

from taskcast.core.testing import BroadcastContract, ReleasableStoreContract, ShortTermStoreContract

# The `store` and `broadcast` fixtures come from conftest.py.


class TestRedisShortTermStore(ShortTermStoreContract):
    pass


class TestRedisBroadcast(BroadcastContract):
    pass


class TestRedisReleasableStore(ReleasableStoreContract):
    pass
