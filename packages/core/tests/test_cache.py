"""EventCache: decoded events by their stored JSON, within a memory budget."""

from __future__ import annotations

import threading

import pytest
from pydantic_core import from_json, to_json

from taskcast.core import ConfigError, EventCache, TaskEvent, new_id
from taskcast.core._cache import ENTRY_OVERHEAD


def stored(index: int, text: str = "x") -> bytes:
    event = TaskEvent(
        id=new_id(), task_id="t", index=index, timestamp=1, type="log", level="info",
        data={"text": text},
    )  # fmt: skip
    return to_json(event.to_dict())


class Decoder:
    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []

    def __call__(self, texts: list[bytes]) -> list[TaskEvent]:
        self.calls.append(list(texts))
        return [TaskEvent.from_dict(from_json(t)) for t in texts]


def test_only_what_is_not_held_is_decoded_and_order_is_kept() -> None:
    cache: EventCache[bytes] = EventCache()
    decode = Decoder()
    texts = [stored(i) for i in range(6)]
    first = cache.decode(texts[:3], decode)
    got = cache.decode(texts, decode)
    assert decode.calls == [texts[:3], texts[3:]]
    assert [e.index for e in got] == list(range(6))
    assert all(a is b for a, b in zip(first, got, strict=False))
    again = cache.decode([texts[4], texts[0]], decode)
    assert len(decode.calls) == 2
    assert again[0] is got[4] and again[1] is got[0]
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (5, 6, 6)
    assert stats.bytes == sum(3 * len(t) + ENTRY_OVERHEAD for t in texts)


def test_empty_batch() -> None:
    decode = Decoder()
    assert EventCache().decode([], decode) == []


def test_the_least_recently_used_go_first() -> None:
    texts = [stored(100 + i) for i in range(30)]  # all the same length
    size = 3 * len(texts[0]) + ENTRY_OVERHEAD
    cache: EventCache[bytes] = EventCache(max_bytes=20 * size)
    decode = Decoder()
    cache.decode(texts[:20], decode)
    kept = cache.decode(texts[:1], decode)[0]  # used again: now the most recent
    cache.decode(texts[20:30], decode)
    stats = cache.stats()
    assert stats.entries == 20 and stats.bytes == 20 * size
    calls = len(decode.calls)
    assert cache.decode([texts[0], *texts[11:30]], decode)[0] is kept
    assert len(decode.calls) == calls
    cache.decode(texts[1:11], decode)
    assert decode.calls[-1] == texts[1:11]


def test_an_entry_bigger_than_half_the_budget_is_not_kept() -> None:
    big = stored(0, "x" * 5000)
    cache: EventCache[bytes] = EventCache(max_bytes=4 * len(big))
    decode = Decoder()
    cache.decode([big], decode)
    cache.decode([big], decode)
    assert len(decode.calls) == 2
    assert cache.stats().entries == 0


def test_off() -> None:
    cache: EventCache[str] = EventCache(0)
    decode = Decoder()
    text = stored(0).decode()
    a, b = cache.decode([text], decode), cache.decode([text], decode)  # type: ignore[arg-type]
    assert a[0] is not b[0] and a[0] == b[0]
    assert cache.stats().entries == 0 and cache.stats().hits == 0
    with pytest.raises(ConfigError, match="event cache size"):
        EventCache(-1)


def test_clear() -> None:
    cache: EventCache[bytes] = EventCache()
    decode = Decoder()
    text = stored(0)
    cache.decode([text], decode)
    cache.clear()
    cache.decode([text], decode)
    assert len(decode.calls) == 2


def test_threads_share_one_cache() -> None:
    # SQLite decodes on several reader threads at once.
    texts = [stored(i) for i in range(300)]
    size = 3 * len(texts[0]) + ENTRY_OVERHEAD
    cache: EventCache[bytes] = EventCache(max_bytes=200 * size)  # ages while they run
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def reader(k: int) -> None:
        try:
            start.wait()
            for round_ in range(30):
                lo = (k * 37 + round_ * 11) % 250
                got = cache.decode(texts[lo : lo + 50], Decoder())
                assert [e.index for e in got] == list(range(lo, lo + 50))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stats = cache.stats()
    assert stats.hits + stats.misses == 8 * 30 * 50
    assert stats.hits > 0 and stats.entries <= 200
