"""Coalescing text chunks for :meth:`publish_stream`.

Token-by-token LLM output arrives as many tiny chunks. Publishing each as its own event
costs one request and one stored event per token, so chunks are buffered and sent when the
buffer holds ``max_chars`` characters or its oldest chunk has waited ``max_interval``
seconds. A flush sends one ``accumulate`` delta per ``max_chars`` of text (several deltas
go out as one batch request), so the series' accumulated text is always exactly the
concatenation of the chunks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["ChunkBuffer", "StreamSpec"]


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamSpec:
    """Validated ``publish_stream`` settings."""

    series_id: str
    field: str
    type: str
    level: str
    max_chars: int
    max_interval: float

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise ValueError("max_batch_chars must be at least 1")
        if self.max_interval < 0:
            raise ValueError("max_interval must not be negative")

    def event(self, text: str) -> dict[str, object]:
        return {
            "type": self.type,
            "level": self.level,
            "data": {self.field: text},
            "seriesId": self.series_id,
            "seriesMode": "accumulate",
            "seriesAccField": self.field,
        }


class ChunkBuffer:
    """Chunks waiting to be published, and when they are due."""

    __slots__ = ("_parts", "_since", "_size", "chunks", "max_chars", "max_interval", "text")

    def __init__(self, spec: StreamSpec) -> None:
        self.max_chars = spec.max_chars
        self.max_interval = spec.max_interval
        self._parts: list[str] = []
        self._size = 0
        self._since = 0.0
        self.chunks = 0
        self.text: list[str] = []

    def add(self, chunk: str) -> None:
        if not isinstance(chunk, str):
            raise TypeError(f"publish_stream chunks must be str, not {type(chunk).__name__}")
        if not chunk:
            return
        if not self._parts:
            self._since = time.monotonic()
        self._parts.append(chunk)
        self._size += len(chunk)
        self.chunks += 1
        self.text.append(chunk)

    @property
    def empty(self) -> bool:
        return not self._parts

    @property
    def full(self) -> bool:
        return self._size >= self.max_chars

    def wait(self) -> float | None:
        """Seconds until the buffer is due (0 when due now), or None when it is empty."""
        if not self._parts:
            return None
        return max(0.0, self._since + self.max_interval - time.monotonic())

    def take(self) -> list[str]:
        """Empty the buffer into deltas of at most ``max_chars`` characters each."""
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        step = self.max_chars
        return [text[i : i + step] for i in range(0, len(text), step)]
