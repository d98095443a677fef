from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest
import sentry_sdk

import taskcast.sentry
from taskcast.core import (
    EventInput,
    InvalidInputError,
    MemoryLongTermStore,
    MemoryShortTermStore,
    TaskEngine,
    TaskEvent,
    TaskInput,
)
from taskcast.sentry import (
    EventDroppedError,
    SentryOptions,
    TaskFailedError,
    TaskTimedOutError,
    sentry_hooks,
    setup_sentry,
)
from taskcast.sentry._hooks import _safe_url, _tag

from .conftest import CapturingTransport

pytestmark = pytest.mark.anyio


def _engine(options: SentryOptions | None = None, **kwargs: Any) -> TaskEngine:
    return TaskEngine(short_term=MemoryShortTermStore(), hooks=sentry_hooks(options), **kwargs)


async def _fail(engine: TaskEngine, *, code: str | None = "E_LLM", params: Any = None) -> str:
    task = await engine.create_task(TaskInput(type="llm.chat", params=params))
    await engine.transition_task(task.id, "running")
    error: dict[str, Any] = {"message": "model overloaded"}
    if code is not None:
        error["code"] = code
    await engine.transition_task(task.id, "failed", error=error)
    return task.id


def _exception(event: dict[str, Any]) -> dict[str, Any]:
    values: list[dict[str, Any]] = event["exception"]["values"]
    return values[-1]


def test_public_names() -> None:
    public = {n for n in dir(taskcast.sentry) if not n.startswith("_")}
    assert set(taskcast.sentry.__all__) == public | {"__version__"}


async def test_failed_task_produces_exactly_one_event(sentry_transport: CapturingTransport) -> None:
    engine = _engine()
    task_id = await _fail(engine, params={"prompt": "secret"})
    events = sentry_transport.events
    assert len(events) == 1
    event = events[0]
    exc = _exception(event)
    assert exc["type"] == "TaskFailedError"
    assert exc["value"] == f"Task failed [{task_id}]: model overloaded"
    assert event["tags"] == {
        "taskcast": "true",
        "task_id": task_id,
        "task_type": "llm.chat",
        "status": "failed",
        "error_code": "E_LLM",
    }
    assert event["fingerprint"] == ["taskcast.task_failed", "llm.chat", "E_LLM"]
    assert event["contexts"]["taskcast"]["error"]["code"] == "E_LLM"
    # params are private by default
    assert "params" not in event["contexts"]["taskcast"]


async def test_failed_task_without_code_or_type(sentry_transport: CapturingTransport) -> None:
    engine = _engine(SentryOptions(include_params=True))
    task = await engine.create_task(TaskInput(params={"n": 1}))
    await engine.transition_task(task.id, "running")
    await engine.transition_task(task.id, "failed")
    (event,) = sentry_transport.events
    assert _exception(event)["value"] == f"Task failed [{task.id}]: unknown error"
    assert event["tags"]["error_code"] == "unknown"
    assert "task_type" not in event["tags"]
    assert event["fingerprint"] == ["taskcast.task_failed", "-", "unknown"]
    assert event["contexts"]["taskcast"]["params"] == {"n": 1}


async def test_timeout_reported(sentry_transport: CapturingTransport) -> None:
    engine = _engine(SentryOptions(include_params=True))
    task = await engine.create_task(TaskInput(type="job", params={"a": 1}))
    await engine.transition_task(task.id, "running")
    await engine.transition_task(task.id, "timeout")
    (event,) = sentry_transport.events
    exc = _exception(event)
    assert exc["type"] == "TaskTimedOutError"
    assert exc["value"] == f"Task timed out [{task.id}]"
    assert event["tags"] == {
        "taskcast": "true",
        "task_id": task.id,
        "task_type": "job",
        "status": "timeout",
    }
    assert event["contexts"]["taskcast"] == {"params": {"a": 1}}


async def test_timeout_without_params_has_no_context(sentry_transport: CapturingTransport) -> None:
    engine = _engine()
    task = await engine.create_task(TaskInput())
    await engine.transition_task(task.id, "running")
    await engine.transition_task(task.id, "timeout")
    (event,) = sentry_transport.events
    assert "taskcast" not in event.get("contexts", {})
    assert event["fingerprint"] == ["taskcast.task_timeout", "-"]


async def test_successful_task_sends_nothing(sentry_transport: CapturingTransport) -> None:
    engine = _engine()
    task = await engine.create_task(TaskInput())
    await engine.transition_task(task.id, "running")
    await engine.publish_event(task.id, EventInput(type="log", level="info", data={"x": 1}))
    await engine.transition_task(task.id, "completed")
    assert sentry_transport.envelopes == []


async def test_toggles_disable_each_capture(sentry_transport: CapturingTransport) -> None:
    options = SentryOptions(
        capture_task_failures=False,
        capture_task_timeouts=False,
        capture_webhook_failures=False,
        capture_unhandled_errors=False,
        capture_dropped_events=False,
        capture_archive_failures=False,
        breadcrumbs=False,
    )
    hooks = sentry_hooks(options)
    assert all(getattr(hooks, name) is None for name in hooks.__dataclass_fields__)
    engine = _engine(options)
    await _fail(engine)
    assert sentry_transport.envelopes == []


async def test_breadcrumbs_show_the_lifecycle(sentry_transport: CapturingTransport) -> None:
    engine = _engine()
    task = await engine.create_task(TaskInput())
    await engine.hooks.fire("on_sse_connect", task.id)
    await engine.transition_task(task.id, "running")
    await engine.hooks.fire("on_sse_disconnect", task.id, "client-closed")
    await engine.transition_task(task.id, "failed", error={"message": "x"})
    (event,) = sentry_transport.events
    messages = [b["message"] for b in event["breadcrumbs"]["values"]]
    # The failure is captured before its own transition breadcrumb is recorded.
    assert messages[-3:] == [
        f"SSE subscriber connected to {task.id}",
        f"task {task.id}: pending \u2192 running",
        f"SSE subscriber left {task.id}: client-closed",
    ]
    assert all(b["category"] == "taskcast" for b in event["breadcrumbs"]["values"])


async def test_webhook_failure_reported_without_credentials(
    sentry_transport: CapturingTransport,
) -> None:
    engine = _engine()
    error = ConnectionRefusedError("refused")
    webhook = {"url": "https://user:pw@hooks.example.com:8443/in?token=abc", "taskId": "t1"}
    await engine.hooks.fire("on_webhook_failed", webhook, error)
    (event,) = sentry_transport.events
    assert _exception(event)["type"] == "ConnectionRefusedError"
    assert event["tags"]["webhook_url"] == "https://hooks.example.com:8443/in"
    assert event["tags"]["task_id"] == "t1"


async def test_webhook_failure_without_url(sentry_transport: CapturingTransport) -> None:
    hooks = sentry_hooks()
    assert hooks.on_webhook_failed is not None
    hooks.on_webhook_failed({"task_id": "t2"}, RuntimeError("x"))
    (event,) = sentry_transport.events
    assert event["tags"] == {"taskcast": "true", "task_id": "t2"}


async def test_unhandled_error_reported(sentry_transport: CapturingTransport) -> None:
    engine = _engine()
    await engine.hooks.fire_unhandled(ValueError("bad"), {"operation": "sse", "taskId": "t9"})
    (event,) = sentry_transport.events
    assert _exception(event)["type"] == "ValueError"
    assert event["tags"] == {"taskcast": "true", "operation": "sse", "task_id": "t9"}


class _BrokenArchive(MemoryLongTermStore):
    async def save_events(self, events: Sequence[TaskEvent]) -> None:
        # Data the archive rejects is dropped at once (an outage would be retried instead).
        raise InvalidInputError("disk full")


async def test_dropped_event_reported(sentry_transport: CapturingTransport) -> None:
    engine = _engine(long_term=_BrokenArchive())
    async with engine:
        task = await engine.create_task(TaskInput())
        await engine.transition_task(task.id, "running")
        event = await engine.publish_event(task.id, EventInput(type="log", level="info"))
    dropped = [e for e in sentry_transport.events if _exception(e)["type"] == "EventDroppedError"]
    assert any(_exception(e)["value"] == f"Event dropped [{event.id}]: disk full" for e in dropped)
    mine = next(e for e in dropped if e["tags"]["event_type"] == "log")
    assert mine["tags"]["task_id"] == task.id
    assert mine["contexts"]["taskcast"]["reason"] == "disk full"
    assert mine["fingerprint"] == ["taskcast.event_dropped"]


class _RefusingArchive(MemoryLongTermStore):
    async def save_events(self, events: Sequence[TaskEvent]) -> None:
        # As PostgreSQL does, the second line quotes the refused row.
        raise RuntimeError("value out of range\nDETAIL:  Failing row contains (secret)")


async def test_archive_failure_reported_once_per_task(
    sentry_transport: CapturingTransport,
) -> None:
    engine = _engine(long_term=_RefusingArchive())
    async with engine:
        task = await engine.create_task(TaskInput())
        await engine.transition_task(task.id, "running")
        await engine.publish_event(task.id, EventInput(type="log"))
        archive = engine.archive
        assert archive is not None
        for _ in range(200):
            if archive.failing()["tasks"] and archive._failing[task.id].attempts >= 2:
                break
            await asyncio.sleep(0.05)
    refused = [
        e for e in sentry_transport.events if _exception(e)["type"] == "ArchiveWriteRefusedError"
    ]
    assert len(refused) == 1
    assert _exception(refused[0])["value"] == (
        f"Archive writes refused [{task.id}]: RuntimeError: value out of range"
    )
    assert refused[0]["tags"]["task_id"] == task.id
    assert refused[0]["tags"]["error_type"] == "RuntimeError"
    assert refused[0]["fingerprint"] == ["taskcast.archive_refused", "RuntimeError"]
    assert "secret" not in str(sentry_transport.events)


async def test_exploding_transport_never_breaks_the_engine(exploding_sentry: None) -> None:
    engine = _engine()
    task = await engine.create_task(TaskInput())
    await engine.transition_task(task.id, "running")
    failed = await engine.transition_task(task.id, "failed", error={"message": "boom"})
    assert failed.status == "failed"
    stored = await engine.get_task(task.id)
    assert stored is not None and stored.status == "failed"


async def test_raising_sdk_is_contained(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("sdk broken")

    monkeypatch.setattr(sentry_sdk, "capture_exception", boom)
    monkeypatch.setattr(sentry_sdk, "add_breadcrumb", boom)
    hooks = sentry_hooks()
    engine = _engine()
    caplog.set_level(logging.DEBUG, logger="taskcast.sentry._hooks")
    task = await engine.create_task(TaskInput())
    await engine.transition_task(task.id, "running")
    failed = await engine.transition_task(task.id, "failed", error={"message": "boom"})
    assert failed.status == "failed"
    # Direct calls (no HookRunner in between) are contained too.
    assert hooks.on_task_failed is not None
    hooks.on_task_failed(failed, failed.error)
    messages = [r.getMessage() for r in caplog.records]
    assert "sentry capture failed" in messages
    assert "sentry breadcrumb failed" in messages


async def test_without_a_client_nothing_is_sent() -> None:
    assert not sentry_sdk.get_client().is_active()
    engine = _engine()
    task_id = await _fail(engine)
    task = await engine.get_task(task_id)
    assert task is not None and task.status == "failed"


async def test_setup_sentry_initialises_and_returns_hooks() -> None:
    transport = CapturingTransport()
    try:
        hooks = setup_sentry(
            "http://key@localhost/1",
            options=SentryOptions(breadcrumbs=False),
            environment="test",
            release="taskcast@0.1.0",
            transport=transport,
            default_integrations=False,
            auto_enabling_integrations=False,
        )
        assert hooks.on_task_transitioned is None
        engine = TaskEngine(short_term=MemoryShortTermStore(), hooks=hooks)
        await _fail(engine)
        (event,) = transport.events
        assert event["environment"] == "test"
        assert event["release"] == "taskcast@0.1.0"
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)


def test_tag_and_url_helpers() -> None:
    assert _tag("x" * 300) == "x" * 199 + "\u2026"
    assert _tag(12) == "12"
    assert _safe_url("http://[::1") == "invalid-url"
    assert _safe_url("https://a.example/p?q=1#f") == "https://a.example/p"


def test_errors_are_taskcast_errors() -> None:
    from taskcast.core import TaskcastError

    for cls in (TaskFailedError, TaskTimedOutError, EventDroppedError):
        assert issubclass(cls, TaskcastError)
