"""Identifiers and clocks."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id", "now_ms"]

# Crockford base32, two characters (10 bits) per lookup: a ULID's 130 bits are 13 lookups.
# About 3x faster than ``str(ulid.ULID.from_bytes(...))``, which matters at 10k+ events/s.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))

_lock = threading.Lock()
_last: tuple[int, int] = (0, 0)

# Random bits come from a pool refilled by one os.urandom call per ~400 new milliseconds.
# os.urandom releases the GIL for its syscall, and with a writer thread busy (SQLite) the
# caller then waited for the GIL again: ~10% of a single-event publish under load.
_POOL_BYTES = 4000
_pool = b""
_pool_pos = 0


def _forget_pool() -> None:
    # A forked child must not reuse its parent's unread random bytes (same ids in both).
    global _pool, _pool_pos
    _pool, _pool_pos = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def _random_79() -> int:
    """79 fresh random bits (the caller holds ``_lock``)."""
    global _pool, _pool_pos
    if _pool_pos + 10 > len(_pool):
        _pool, _pool_pos = os.urandom(_POOL_BYTES), 0
    start = _pool_pos
    _pool_pos = start + 10
    return int.from_bytes(_pool[start : start + 10], "big") >> 1


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
            rand = _random_79()
        _last = (ms, rand)
    value = (ms << 80) | rand
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])
