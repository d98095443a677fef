"""Engine hooks: how integrations (Sentry, webhooks, metrics) learn what happens.

A hook that raises is logged and otherwise ignored: integrations never break the engine.
Hooks may be plain functions or coroutine functions.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ._models import Task, TaskEvent

__all__ = ["HookRunner", "TaskcastHooks"]

logger = logging.getLogger("taskcast.core.hooks")

HookResult = Awaitable[None] | None


@dataclass(slots=True, frozen=True, kw_only=True)
class TaskcastHooks:
    """Callbacks fired by the engine; every field is optional."""

    on_task_created: Callable[[Task], HookResult] | None = None
    on_task_transitioned: Callable[[Task, str, str], HookResult] | None = None
    on_task_failed: Callable[[Task, dict[str, Any] | None], HookResult] | None = None
    on_task_timeout: Callable[[Task], HookResult] | None = None
    on_events_published: Callable[[str, Sequence[TaskEvent]], HookResult] | None = None
    on_event_dropped: Callable[[TaskEvent, str], HookResult] | None = None
    on_archive_failed: Callable[[str, BaseException, int], HookResult] | None = None
    """``(task_id, error, attempts)``: the long-term store refused writes of a task (not an
    outage). Fired per failed attempt; attempts at one task back off up to
    ``RetryPolicy.failing_maximum`` apart, so a poison task cannot flood it."""
    on_webhook_failed: Callable[[dict[str, Any], BaseException], HookResult] | None = None
    on_unhandled_error: Callable[[BaseException, dict[str, Any]], HookResult] | None = None
    on_sse_connect: Callable[[str], HookResult] | None = None
    on_sse_disconnect: Callable[[str, str], HookResult] | None = None


class HookRunner:
    """Calls every registered hook set, containing failures."""

    def __init__(self, hooks: Sequence[TaskcastHooks] = ()) -> None:
        self._hooks: list[TaskcastHooks] = list(hooks)
        self._wanted = self._names()

    def add(self, hooks: TaskcastHooks) -> None:
        self._hooks.append(hooks)
        self._wanted = self._names()

    def wants(self, name: str) -> bool:
        # Asked on every publish; hook sets are frozen, so the answer changes only in add().
        return name in self._wanted

    def _names(self) -> frozenset[str]:
        return frozenset(
            name for name in HOOK_NAMES if any(getattr(h, name) is not None for h in self._hooks)
        )

    async def fire(self, name: str, *args: Any) -> None:
        for hooks in self._hooks:
            fn = getattr(hooks, name)
            if fn is None:
                continue
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # Integrations must never break the engine: log and carry on.
                logger.exception("taskcast hook %s raised; ignored", name)

    async def fire_unhandled(self, error: BaseException, context: dict[str, Any]) -> None:
        await self.fire("on_unhandled_error", error, context)


HOOK_NAMES = tuple(f.name for f in fields(TaskcastHooks))
