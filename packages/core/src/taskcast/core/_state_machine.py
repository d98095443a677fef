"""The task state machine: nine statuses and exactly the original's edges."""

from __future__ import annotations

from typing import Final

from ._models import TERMINAL_STATUSES

__all__ = ["SUSPENDED_STATUSES", "TRANSITIONS", "can_transition", "is_terminal"]

TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "pending": frozenset({"assigned", "running", "paused", "timeout", "cancelled"}),
    "assigned": frozenset({"running", "pending", "paused", "timeout", "cancelled"}),
    "running": frozenset({"paused", "blocked", "completed", "failed", "timeout", "cancelled"}),
    "paused": frozenset({"running", "assigned", "blocked", "timeout", "cancelled"}),
    "blocked": frozenset({"running", "assigned", "paused", "cancelled", "failed", "timeout"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "timeout": frozenset(),
    "cancelled": frozenset(),
}

SUSPENDED_STATUSES: Final[frozenset[str]] = frozenset({"paused", "blocked"})


def can_transition(from_status: str, to_status: str) -> bool:
    """Whether ``from_status → to_status`` is an edge (self-transitions never are)."""
    return to_status in TRANSITIONS.get(from_status, frozenset())


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES
