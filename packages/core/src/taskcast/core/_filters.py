"""Event filters: type wildcards, levels and the built-in status switch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._models import TERMINAL_STATUSES, TaskEvent

__all__ = ["DELETED_EVENT", "STATUS_EVENT", "EventFilter", "matches_type", "terminal_status"]

STATUS_EVENT = "taskcast:status"
DELETED_EVENT = "taskcast:deleted"
"""Broadcast-only marker telling live subscribers that a task was deleted."""


def terminal_status(event: TaskEvent) -> str | None:
    """The terminal status an event announces (a ``taskcast:status`` event), else None."""
    if event.type == STATUS_EVENT and isinstance(event.data, dict):
        status = event.data.get("status")
        if status in TERMINAL_STATUSES:
            return str(status)
    return None


def matches_type(event_type: str | None, patterns: Sequence[str] | None) -> bool:
    """Match ``event_type`` against patterns.

    ``None`` matches everything and an empty list nothing; ``*`` matches all; ``prefix.*``
    matches ``prefix.`` followed by anything; anything else is exact and case-sensitive.
    """
    if patterns is None:
        return True
    if event_type is None:
        return False
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


@dataclass(slots=True, frozen=True, kw_only=True)
class EventFilter:
    """Which events a subscriber or webhook wants."""

    types: tuple[str, ...] | None = None
    levels: tuple[str, ...] | None = None
    include_status: bool = True

    def matches(self, event: TaskEvent) -> bool:
        if not self.include_status and event.type == STATUS_EVENT:
            return False
        if self.types is not None and not matches_type(event.type, self.types):
            return False
        return self.levels is None or event.level in self.levels

    @property
    def is_everything(self) -> bool:
        return self.types is None and self.levels is None and self.include_status
