import os
import warnings

import pytest

from taskcast.core import _ids
from taskcast.core._ids import new_id

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _random_part(ulid: str) -> int:
    value = 0
    for char in ulid:
        value = value * 32 + _ALPHABET.index(char)
    return value & ((1 << 80) - 1)


def _ticking_clock(monkeypatch: pytest.MonkeyPatch, start: int) -> None:
    """Every call of the clock is a new millisecond, so every id draws fresh random bits."""
    clock = iter(range(start, start + 10**9))
    monkeypatch.setattr(_ids, "now_ms", lambda: next(clock))


def test_ids_increase_and_stay_random_across_pool_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    _ticking_clock(monkeypatch, 4_000_000_000_000)
    draws = 3 * _ids._POOL_BYTES // 10  # three refills of the random pool
    ids = [new_id() for _ in range(draws)]
    assert ids == sorted(ids) and len(ids[0]) == 26
    randoms = [_random_part(i) for i in ids]
    assert len(set(randoms)) == draws
    assert all(r < 1 << 79 for r in randoms)


def test_ids_within_one_millisecond_count_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ids, "now_ms", lambda: 4_100_000_000_000)
    first, second = new_id(), new_id()
    assert _random_part(second) == _random_part(first) + 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_reuse_the_parents_random_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _ticking_clock(monkeypatch, 4_200_000_000_000)
    new_id()  # the pool now holds unread bytes the child inherits
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork in a threaded process; the child only writes and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write_end, new_id().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child_id = pipe.read().decode()
    os.waitpid(pid, 0)
    parent_id = new_id()
    assert len(child_id) == 26
    assert _random_part(child_id) != _random_part(parent_id)
