"""The package's public surface is exactly what ``__all__`` lists."""

from __future__ import annotations

import taskcast.redis as pkg
from taskcast.core import BroadcastProvider, ShortTermStore
from taskcast.redis import RedisBroadcast, RedisShortTermStore


def test_all_lists_the_public_names() -> None:
    public = {name for name in vars(pkg) if not name.startswith("_")}
    assert set(pkg.__all__) == public | {"__version__"}


def test_adapters_satisfy_the_core_ports() -> None:
    store = RedisShortTermStore("redis://127.0.0.1:6379/0")
    broadcast = RedisBroadcast("redis://127.0.0.1:6379/0")
    assert isinstance(store, ShortTermStore)
    assert isinstance(broadcast, BroadcastProvider)
    assert (store.name, store.publishes_on_commit, store.shared_across_processes) == (
        "redis",
        True,
        True,
    )
    assert (broadcast.name, broadcast.shared_across_processes) == ("redis", True)
