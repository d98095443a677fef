"""Decoded events by their stored JSON, so a replayed history is parsed once, not per viewer.

A replay decodes every stored event it sends; when several viewers open the same task (or
one reloads the page) they decode the same rows again. A committed event never changes, so
the stored text fully determines the decoded event: an entry can be unused but never stale,
and nothing has to invalidate it (a deleted event's row is simply never read again).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from ._errors import ConfigError
from ._models import TaskEvent

__all__ = ["DEFAULT_CACHE_BYTES", "EventCache", "EventCacheStats"]

T = TypeVar("T", str, bytes)

DEFAULT_CACHE_BYTES: Final = 32 << 20
"""What a store's event cache may hold by default (an estimate, see ``ENTRY_OVERHEAD``)."""

ENTRY_OVERHEAD: Final = 550
"""Bytes an entry holds beyond three times its text's length: the key, the TaskEvent, its
data and strings, its encoded SSE envelope once replayed, the dict slot (measured with
tracemalloc on short events, as a replay has)."""


@dataclass(slots=True, frozen=True)
class EventCacheStats:
    hits: int
    misses: int
    entries: int
    bytes: int
    """The estimated memory the entries hold."""


class EventCache(Generic[T]):
    """Events decoded from stored JSON (``str`` or ``bytes``), by that JSON, least recently
    used out first once the estimated size passes ``max_bytes``.

    The events handed out are shared between readers, like the memory store's: callers
    must not modify them (nothing in Taskcast does; the collapser copies).

    Safe to share between threads (SQLite decodes on its reader threads): the map changes
    under a lock taken twice per batch, never held while decoding.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ConfigError(f"the event cache size must be >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        # An OrderedDict is an LRU in C: a hit is a lookup and a move_to_end.
        self._map: OrderedDict[T, TaskEvent] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def decode(
        self, texts: Sequence[T], decode: Callable[[list[T]], list[TaskEvent]]
    ) -> list[TaskEvent]:
        """The events of ``texts``, in order; ``decode`` is called once, for those not held."""
        if not self.max_bytes:
            return decode(list(texts))
        found: list[TaskEvent | None] = []
        missing: list[T] = []
        cached = self._map
        get, touch = cached.get, cached.move_to_end
        with self._lock:
            for text in texts:
                event = get(text)
                if event is None:
                    missing.append(text)
                else:
                    touch(text)
                found.append(event)
            self._hits += len(found) - len(missing)
            self._misses += len(missing)
        if not missing:
            return found  # type: ignore[return-value]
        decoded = decode(missing)
        with self._lock:
            size = self._bytes
            for text, event in zip(missing, decoded, strict=True):
                cost = 3 * len(text) + ENTRY_OVERHEAD
                # One huge event must not push out everything else.
                if cost <= self.max_bytes // 2 and text not in cached:
                    size += cost
                    cached[text] = event
            while size > self.max_bytes and cached:
                text, _ = cached.popitem(last=False)
                size -= 3 * len(text) + ENTRY_OVERHEAD
            self._bytes = size
        if len(decoded) == len(found):
            return decoded
        fresh = iter(decoded)
        return [next(fresh) if event is None else event for event in found]

    def clear(self) -> None:
        with self._lock:
            self._map.clear()
            self._bytes = 0

    def stats(self) -> EventCacheStats:
        with self._lock:
            return EventCacheStats(
                hits=self._hits, misses=self._misses, entries=len(self._map), bytes=self._bytes
            )
