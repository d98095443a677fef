"""Engine hooks that report to Sentry.

Every call into ``sentry_sdk`` is wrapped: a Sentry outage, a misconfigured client or a
transport that raises is logged at DEBUG and otherwise ignored, so it can never break a
transition or a publish. With no Sentry client initialised the hooks cost one cheap call
each and send nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sentry_sdk

from taskcast.core import Task, TaskcastError, TaskcastHooks, TaskEvent

__all__ = [
    "ArchiveWriteRefusedError",
    "EventDroppedError",
    "SentryOptions",
    "TaskFailedError",
    "TaskTimedOutError",
    "sentry_hooks",
    "setup_sentry",
]

logger = logging.getLogger(__name__)

# Sentry truncates tag values at 200 characters; doing it ourselves keeps them readable.
_TAG_MAX = 200


class TaskFailedError(TaskcastError):
    """Reported (never raised) when a task enters ``failed``."""


class TaskTimedOutError(TaskcastError):
    """Reported (never raised) when a task enters ``timeout``."""


class EventDroppedError(TaskcastError):
    """Reported (never raised) when an event could not be archived to the long-term store."""


class ArchiveWriteRefusedError(TaskcastError):
    """Reported (never raised) when the long-term store starts refusing a task's writes."""


@dataclass(slots=True, frozen=True, kw_only=True)
class SentryOptions:
    """What :func:`sentry_hooks` reports."""

    capture_task_failures: bool = True
    """One event per task entering ``failed``: ``Task failed [<id>]: <message>``."""
    capture_task_timeouts: bool = True
    """One event per task entering ``timeout``."""
    capture_webhook_failures: bool = True
    """The delivery error when a webhook gives up after its retries."""
    capture_unhandled_errors: bool = True
    """Errors the server or engine caught without a better place to report them."""
    capture_dropped_events: bool = True
    """Events that could not be written to the long-term store."""
    capture_archive_failures: bool = True
    """The store's error when it starts refusing a task's archive writes: one event per
    failing task (its first failed attempt), not one per retry."""
    include_params: bool = False
    """Attach the task's ``params`` to failure events. Off by default: params often hold
    prompts or personal data (Sentry's ``send_default_pii`` spirit)."""
    breadcrumbs: bool = True
    """Record task transitions and SSE connects/disconnects as breadcrumbs, so an error
    reported later in the same request or process shows what led to it."""


def _tag(value: object) -> str:
    text = str(value)
    return text if len(text) <= _TAG_MAX else text[: _TAG_MAX - 1] + "\u2026"


def _safe_url(url: object) -> str:
    # Webhook URLs may carry credentials (userinfo) or tokens (query); neither belongs in a tag.
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "invalid-url"


def _capture(
    error: BaseException,
    *,
    tags: Mapping[str, object],
    context: Mapping[str, object] | None = None,
    fingerprint: list[str] | None = None,
) -> None:
    try:
        with sentry_sdk.new_scope() as scope:
            for key, value in tags.items():
                if value is not None:
                    scope.set_tag(key, _tag(value))
            if context:
                scope.set_context("taskcast", dict(context))
            if fingerprint:
                scope.fingerprint = fingerprint
            sentry_sdk.capture_exception(error)
    except Exception:
        # Sentry must never break the engine; DEBUG because an ERROR log would itself be
        # captured by Sentry's logging integration.
        logger.debug("sentry capture failed", exc_info=True)


def _breadcrumb(message: str, data: Mapping[str, object]) -> None:
    try:
        sentry_sdk.add_breadcrumb(category="taskcast", message=message, data=dict(data))
    except Exception:
        logger.debug("sentry breadcrumb failed", exc_info=True)


def sentry_hooks(options: SentryOptions | None = None) -> TaskcastHooks:
    """Engine hooks reporting to the current Sentry client.

    Pass the result to ``TaskEngine(hooks=...)`` (alongside other hook sets if any).
    Initialise Sentry yourself (``sentry_sdk.init``) or use :func:`setup_sentry`.

    Events (all with tag ``taskcast: true``):

    * task failed: ``TaskFailedError("Task failed [<id>]: <message>")``, tags ``task_id``,
      ``task_type``, ``status``, ``error_code`` (``"unknown"`` when absent); context: the
      task error (and params when ``include_params``); grouped by task type and error code,
      not by task id.
    * task timed out: ``TaskTimedOutError("Task timed out [<id>]")``, grouped by task type.
    * webhook failed: the delivery error, tags ``webhook_url`` (no credentials or query),
      ``task_id``.
    * unhandled error: the error, tags ``operation``, ``task_id``.
    * event dropped: ``EventDroppedError("Event dropped [<event id>]: <reason>")``, tags
      ``task_id``, ``event_type``.
    * archive writes refused: ``ArchiveWriteRefusedError("Archive writes refused [<task
      id>]: <error type>: <first line of its message>")`` (later lines of a database error
      can quote the refused row), tags ``task_id``, ``error_type``; once per failing task
      (its later attempts are backed-off retries); grouped by error type.
    """
    opts = options or SentryOptions()

    def on_task_failed(task: Task, error: dict[str, Any] | None) -> None:
        error = error or {}
        message = error.get("message") or "unknown error"
        code = error.get("code") or "unknown"
        context: dict[str, object] = {"error": error}
        if opts.include_params and task.params is not None:
            context["params"] = task.params
        _capture(
            TaskFailedError(f"Task failed [{task.id}]: {message}"),
            tags={
                "taskcast": "true",
                "task_id": task.id,
                "task_type": task.type,
                "status": task.status,
                "error_code": code,
            },
            context=context,
            fingerprint=["taskcast.task_failed", task.type or "-", str(code)],
        )

    def on_task_timeout(task: Task) -> None:
        context: dict[str, object] = {}
        if opts.include_params and task.params is not None:
            context["params"] = task.params
        _capture(
            TaskTimedOutError(f"Task timed out [{task.id}]"),
            tags={
                "taskcast": "true",
                "task_id": task.id,
                "task_type": task.type,
                "status": "timeout",
            },
            context=context,
            fingerprint=["taskcast.task_timeout", task.type or "-"],
        )

    def on_webhook_failed(webhook: dict[str, Any], error: BaseException) -> None:
        url = webhook.get("url")
        _capture(
            error,
            tags={
                "taskcast": "true",
                "webhook_url": _safe_url(url) if url else None,
                "task_id": webhook.get("taskId") or webhook.get("task_id"),
            },
        )

    def on_unhandled_error(error: BaseException, context: dict[str, Any]) -> None:
        _capture(
            error,
            tags={
                "taskcast": "true",
                "operation": context.get("operation"),
                "task_id": context.get("taskId") or context.get("task_id"),
            },
        )

    def on_event_dropped(event: TaskEvent, reason: str) -> None:
        _capture(
            EventDroppedError(f"Event dropped [{event.id}]: {reason}"),
            tags={"taskcast": "true", "task_id": event.task_id, "event_type": event.type},
            context={"reason": reason, "eventId": event.id, "index": event.index},
            fingerprint=["taskcast.event_dropped"],
        )

    def on_archive_failed(task_id: str, error: BaseException, attempts: int) -> None:
        if attempts != 1:
            return
        lines = str(error).strip().splitlines()
        message = type(error).__name__ + (f": {lines[0]}" if lines else "")
        _capture(
            ArchiveWriteRefusedError(f"Archive writes refused [{task_id}]: {message}"),
            tags={"taskcast": "true", "task_id": task_id, "error_type": type(error).__name__},
            fingerprint=["taskcast.archive_refused", type(error).__name__],
        )

    def on_task_transitioned(task: Task, previous: str, status: str) -> None:
        _breadcrumb(
            f"task {task.id}: {previous} \u2192 {status}",
            {"taskId": task.id, "from": previous, "to": status},
        )

    def on_sse_connect(task_id: str) -> None:
        _breadcrumb(f"SSE subscriber connected to {task_id}", {"taskId": task_id})

    def on_sse_disconnect(task_id: str, reason: str) -> None:
        _breadcrumb(
            f"SSE subscriber left {task_id}: {reason}", {"taskId": task_id, "reason": reason}
        )

    return TaskcastHooks(
        on_task_failed=on_task_failed if opts.capture_task_failures else None,
        on_task_timeout=on_task_timeout if opts.capture_task_timeouts else None,
        on_webhook_failed=on_webhook_failed if opts.capture_webhook_failures else None,
        on_unhandled_error=on_unhandled_error if opts.capture_unhandled_errors else None,
        on_event_dropped=on_event_dropped if opts.capture_dropped_events else None,
        on_archive_failed=on_archive_failed if opts.capture_archive_failures else None,
        on_task_transitioned=on_task_transitioned if opts.breadcrumbs else None,
        on_sse_connect=on_sse_connect if opts.breadcrumbs else None,
        on_sse_disconnect=on_sse_disconnect if opts.breadcrumbs else None,
    )


def setup_sentry(
    dsn: str,
    *,
    options: SentryOptions | None = None,
    environment: str | None = None,
    release: str | None = None,
    traces_sample_rate: float | None = None,
    **sentry_kwargs: Any,
) -> TaskcastHooks:
    """Initialise the Sentry SDK and return the hooks (what the CLI does for ``SENTRY_DSN``).

    ``traces_sample_rate`` turns on Sentry performance tracing; Sentry's own FastAPI/Starlette
    integrations then trace every HTTP request, publishes included. Extra keyword arguments
    go to ``sentry_sdk.init`` unchanged.
    """
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        traces_sample_rate=traces_sample_rate,
        **sentry_kwargs,
    )
    return sentry_hooks(options)
