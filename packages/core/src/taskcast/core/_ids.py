"""Identifiers and clocks."""

from __future__ import annotations

import os
import threading
import time

from ulid import ULID

__all__ = ["new_id", "now_ms"]

_lock = threading.Lock()
_last: tuple[int, int] = (0, 0)


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds, as every Taskcast timestamp."""
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """A new ULID string, strictly increasing within this process.

    python-ulid's default generator is random per millisecond; monotonic ids keep event ids
    sortable in publish order, which makes them good cursors.
    """
    global _last
    with _lock:
        ms = now_ms()
        last_ms, last_rand = _last
        if ms <= last_ms:
            ms = last_ms
            rand = last_rand + 1
        else:
            # Leave the top bit clear so increments within one millisecond never overflow.
            rand = int.from_bytes(os.urandom(10), "big") >> 1
        _last = (ms, rand)
    return str(ULID.from_bytes(ms.to_bytes(6, "big") + rand.to_bytes(10, "big")))
