"""Webhooks delivered for real to a receiver on a loopback port (uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from taskcast.core import (
    ConfigError,
    EventInput,
    MemoryShortTermStore,
    MemoryWebhookOutbox,
    TaskcastHooks,
    TaskEngine,
    TaskInput,
    WebhookConfig,
    WebhookDelivery,
    WebhookRetry,
)
from taskcast.server import (
    WebhookDeliveryError,
    WebhookDispatcher,
    WebhookRefusedError,
    WebhookSettings,
    create_app,
    sign_headers,
    taskcast_lifespan,
)
from taskcast.server._webhooks import _is_public, resolve_public
from taskcast.server_sdk import verify_webhook

pytestmark = pytest.mark.anyio

FAST = WebhookRetry(retries=3, backoff="fixed", initial_delay_ms=30, jitter=0.0)
SETTINGS = WebhookSettings(allow_private=True, poll_seconds=0.05, default_retry=FAST)


@dataclass
class Receiver:
    """Records every POST; answers with the queued statuses (then 200), or hangs."""

    url: str = ""
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    """The request target (path and query) of each POST."""
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def bodies(self) -> list[Any]:
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
async def receiver(serve_app: Any) -> AsyncIterator[Receiver]:
    state = Receiver()

    async def hook(request: Request) -> Response:
        body = await request.body()
        state.requests.append((dict(request.headers), body))
        state.targets.append(request.url.path + "?" + request.url.query)
        if state.hang:
            await state.release.wait()
        status = state.statuses.pop(0) if state.statuses else 200
        return Response(b"x" * 10, status_code=status)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_app(app) as url:
        state.url = url + "/hook"
        yield state
        state.release.set()


@pytest.fixture
def failures() -> list[tuple[dict[str, Any], BaseException]]:
    return []


@pytest.fixture
def engine(failures: list[tuple[dict[str, Any], BaseException]]) -> TaskEngine:
    hooks = TaskcastHooks(on_webhook_failed=lambda info, exc: failures.append((info, exc)))
    return TaskEngine(short_term=MemoryShortTermStore(), hooks=hooks)


@pytest.fixture
def settings() -> WebhookSettings:
    return SETTINGS


@pytest.fixture
async def api(
    engine: TaskEngine, settings: WebhookSettings, serve_app: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(engine, webhooks=settings)
    async with serve_app(app, engine) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        yield c


async def make_task(api: httpx.AsyncClient, *hooks: dict[str, Any]) -> str:
    resp = await api.post("/tasks", json={"webhooks": list(hooks)})
    assert resp.status_code == 201, resp.text
    task_id: str = resp.json()["id"]
    assert (await api.patch(f"/tasks/{task_id}/status", json={"status": "running"})).is_success
    return task_id


async def deliveries(api: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    resp = await api.get(f"/tasks/{task_id}/webhooks/deliveries")
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["deliveries"]
    return items


async def test_signed_post_per_matching_event(
    api: httpx.AsyncClient, receiver: Receiver, eventually: Any
) -> None:
    task_id = await make_task(
        api, {"url": receiver.url, "secret": "s3cret", "filter": {"types": ["llm.*"]}}
    )
    resp = await api.post(
        f"/tasks/{task_id}/events",
        json=[
            {"type": "llm.delta", "level": "info", "data": {"delta": "Hi"}},
            {"type": "other", "level": "info", "data": 1},
            {"type": "llm.done", "level": "info", "data": None},
        ],
    )
    assert resp.status_code == 201
    await eventually(lambda: len(receiver.requests) >= 2)
    published = resp.json()
    bodies = sorted(receiver.bodies(), key=lambda b: b["index"])
    assert bodies == [published[0], published[2]]  # the raw TaskEvent, as the original sends
    for headers, body in receiver.requests:
        assert verify_webhook(body, headers, "s3cret")
        assert headers["content-type"] == "application/json"
        assert headers["x-taskcast-event"] in ("llm.delta", "llm.done")
        assert headers["webhook-id"] == headers["x-taskcast-delivery"]
        assert headers["user-agent"] == "Taskcast-Webhooks/1"
        assert not verify_webhook(body, headers, "wrong")
    listed = await deliveries(api, task_id)
    assert {d["status"] for d in listed} <= {"delivered", "pending"}


async def test_readers_never_see_the_secret_but_deliveries_use_it(
    api: httpx.AsyncClient, receiver: Receiver, eventually: Any
) -> None:
    # Regression (issue 15 item 1): task reads returned each webhook's secret and full URL.
    secret = "whsec-never-shown-0123456789"
    target = receiver.url.replace("http://", "http://hookuser:hookpass@") + "?key=qk-123&x=1"
    created = await api.post("/tasks", json={"webhooks": [{"url": target, "secret": secret}]})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    await api.patch(f"/tasks/{task_id}/status", json={"status": "running"})
    reads = [
        created,
        await api.get(f"/tasks/{task_id}"),
        await api.get("/tasks"),
        await api.patch(f"/tasks/{task_id}/status", json={"status": "completed"}),
    ]
    shown = receiver.url.replace("http://", "http://***@") + "?key=***&x=***"
    for resp in reads:
        assert resp.status_code in (200, 201), resp.text
        for leaked in (secret, "hookpass", "hookuser", "qk-123"):
            assert leaked not in resp.text, (resp.request.url, leaked)
    task = reads[1].json()
    assert task["webhooks"] == [{"url": shown, "hasSecret": True}]
    assert reads[2].json()["tasks"][0]["webhooks"] == task["webhooks"]
    # The deliveries still go to the real URL (credentials, query) signed with the real secret.
    await eventually(lambda: len(receiver.requests) == 2)
    for (headers, body), where in zip(receiver.requests, receiver.targets, strict=True):
        assert where == "/hook?key=qk-123&x=1"
        assert headers["authorization"] == "Basic aG9va3VzZXI6aG9va3Bhc3M="  # hookuser:hookpass
        assert verify_webhook(body, headers, secret)
    listed = await api.get(f"/tasks/{task_id}/webhooks/deliveries")
    assert {d["url"] for d in listed.json()["deliveries"]} == {shown}
    assert secret not in listed.text and "qk-123" not in listed.text


async def test_status_changes_and_wrap(
    api: httpx.AsyncClient, receiver: Receiver, eventually: Any
) -> None:
    task_id = await make_task(
        api, {"url": receiver.url, "wrap": True, "filter": {"types": ["taskcast:status"]}}
    )
    await api.patch(f"/tasks/{task_id}/status", json={"status": "completed", "result": {"ok": 1}})
    await eventually(lambda: len(receiver.requests) == 2)
    bodies = sorted(receiver.bodies(), key=lambda b: b["rawIndex"])
    assert [b["data"]["status"] for b in bodies] == ["running", "completed"]
    assert bodies[1]["data"]["result"] == {"ok": 1}
    assert bodies[0]["filteredIndex"] == bodies[0]["rawIndex"] == 0
    assert {"eventId", "taskId", "type", "timestamp", "level"} <= set(bodies[0])
    # No secret: identifying headers, no signatures.
    headers = receiver.requests[0][0]
    assert "webhook-signature" not in headers and "x-taskcast-signature" not in headers


async def test_fails_twice_then_succeeds_on_the_third_attempt(
    api: httpx.AsyncClient, receiver: Receiver, eventually: Any, failures: list[Any]
) -> None:
    receiver.statuses = [500, 503]
    task_id = await make_task(
        api, {"url": receiver.url, "secret": "k", "filter": {"includeStatus": False}}
    )
    await api.post(f"/tasks/{task_id}/events", json={"type": "a", "level": "info"})
    await eventually(lambda: len(receiver.requests) == 3)

    async def done() -> list[dict[str, Any]]:
        while True:
            listed = await deliveries(api, task_id)
            if listed and listed[0]["status"] == "delivered":
                return listed
            await asyncio.sleep(0.02)

    (item,) = await asyncio.wait_for(done(), 10)
    assert (item["attempts"], item["maxAttempts"], item["responseStatus"]) == (3, 4, 200)
    assert "lastError" not in item and "nextAttemptAt" not in item
    ids = {headers["webhook-id"] for headers, _ in receiver.requests}
    assert ids == {item["id"]}  # one delivery id across attempts: receivers dedupe on it
    assert failures == []


async def test_final_failure_reaches_the_hook(
    api: httpx.AsyncClient, receiver: Receiver, eventually: Any, failures: list[Any]
) -> None:
    receiver.statuses = [500] * 10
    task_id = await make_task(
        api,
        {
            "url": receiver.url + "?token=abc",
            "retry": {"retries": 1, "initialDelayMs": 10},
            "filter": {"types": ["only"]},
        },
    )
    await api.post(f"/tasks/{task_id}/events", json={"type": "only", "level": "info"})
    await eventually(lambda: len(failures) == 1)
    info, exc = failures[0]
    assert isinstance(exc, WebhookDeliveryError)
    assert str(exc) == "Webhook delivery failed after 2 attempts: HTTP 500"
    assert (info["url"], info["taskId"], info["attempts"]) == (
        receiver.url + "?token=abc",
        task_id,
        2,
    )
    (item,) = await deliveries(api, task_id)
    assert item["id"] == info["deliveryId"]
    assert (item["status"], item["lastError"], item["responseStatus"]) == (
        "failed",
        "HTTP 500",
        500,
    )
    assert item["url"] == receiver.url + "?token=***"  # query values are not shown
    assert len(receiver.requests) == 2


async def test_attempt_timeout(
    api: httpx.AsyncClient, receiver: Receiver, eventually: Any, failures: list[Any]
) -> None:
    receiver.hang = True
    task_id = await make_task(api, {"url": receiver.url, "retry": {"retries": 0, "timeoutMs": 100}})
    await eventually(lambda: len(failures) == 1)
    assert str(failures[0][1]).endswith("Timed out after 100 ms")
    (item,) = await deliveries(api, task_id)
    assert item["status"] == "failed" and "responseStatus" not in item


async def test_unreachable_target_is_retried_then_failed(
    api: httpx.AsyncClient, eventually: Any, failures: list[Any]
) -> None:
    task_id = await make_task(
        api, {"url": "http://127.0.0.1:9/hook", "retry": {"retries": 1, "initialDelayMs": 5}}
    )
    await eventually(lambda: len(failures) == 1)
    (item,) = await deliveries(api, task_id)
    assert item["attempts"] == 2 and item["lastError"].startswith("ConnectError")


class TestPrivateAddressesRefusedByDefault:
    @pytest.fixture
    def settings(self) -> WebhookSettings:
        return WebhookSettings(poll_seconds=0.05)

    async def test_loopback_refused_with_a_clear_error(
        self, api: httpx.AsyncClient, receiver: Receiver, eventually: Any, failures: list[Any]
    ) -> None:
        task_id = await make_task(api, {"url": receiver.url})
        await eventually(lambda: len(failures) == 1)
        (item,) = await deliveries(api, task_id)
        assert item["status"] == "failed" and item["attempts"] == 1
        assert item["lastError"].startswith("Refused: 127.0.0.1 resolves to non-public address")
        assert receiver.requests == []


class TestGlobalHooks:
    @pytest.fixture
    def settings(self, receiver: Receiver) -> WebhookSettings:
        return WebhookSettings(
            allow_private=True,
            poll_seconds=0.05,
            global_hooks=[{"url": receiver.url, "filter": {"types": ["g"]}}],
        )

    async def test_every_task_reaches_the_global_hook(
        self, api: httpx.AsyncClient, receiver: Receiver, eventually: Any
    ) -> None:
        first, second = await make_task(api), await make_task(api)
        for task_id in (first, second):
            await api.post(f"/tasks/{task_id}/events", json={"type": "g", "level": "info"})
        await eventually(lambda: len(receiver.requests) == 2)
        assert {b["taskId"] for b in receiver.bodies()} == {first, second}
        (item,) = await deliveries(api, first)
        assert item["global"] is True


async def test_malformed_webhooks_are_refused_at_creation(api: httpx.AsyncClient) -> None:
    for hooks in (
        [{"url": "not a url"}],
        [{"url": "ftp://x/y"}],
        [{"url": "http://x", "retry": {"backoff": "sometimes"}}],
        ["http://x"],
    ):
        resp = await api.post("/tasks", json={"webhooks": hooks})
        assert resp.status_code == 400, hooks
        assert "webhook" in resp.json()["error"].lower()


async def test_deliveries_route_errors(api: httpx.AsyncClient) -> None:
    resp = await api.get("/tasks/nope/webhooks/deliveries")
    assert resp.status_code == 404 and "not found" in resp.json()["error"].lower()
    task_id = await make_task(api)
    assert (await deliveries(api, task_id)) == []
    resp = await api.get(f"/tasks/{task_id}/webhooks/deliveries", params={"limit": 0})
    assert resp.status_code == 400


async def test_stop_gives_in_flight_deliveries_back(receiver: Receiver, eventually: Any) -> None:
    receiver.hang = True
    engine = TaskEngine(short_term=MemoryShortTermStore())
    outbox = MemoryWebhookOutbox()
    dispatcher = WebhookDispatcher(engine, SETTINGS, outbox=outbox)
    async with engine:
        await dispatcher.start()
        await dispatcher.start()  # idempotent
        task = await engine.create_task(TaskInput(webhooks=[{"url": receiver.url}]))
        await engine.transition_task(task.id, "running")
        await eventually(lambda: len(receiver.requests) == 1)
        await dispatcher.stop()
        await dispatcher.stop()
        (item,) = await outbox.list_for_task(task.id, 5)
        assert (item.status, item.attempts, item.lease) == ("pending", 0, "")
        assert not dispatcher.running


async def _stops(dispatcher: WebhookDispatcher) -> bool:
    """Whether ``dispatcher.stop()`` returns (within a generous 30 s)."""
    stopping = asyncio.ensure_future(dispatcher.stop())
    done, _ = await asyncio.wait({stopping}, timeout=30)
    for task in done:
        task.result()
    return bool(done)


class _LosesCancellation(MemoryWebhookOutbox):
    """A slow outbox whose claims absorb a cancellation, as redis-py's commands do on Python
    3.11: their socket write runs in ``asyncio.wait_for``, which returns instead of raising
    when the cancel lands just after the write finished (CPython gh-86296)."""

    def __init__(self) -> None:
        super().__init__()
        self.claiming = asyncio.Event()
        self.gate = asyncio.Event()
        self.lost = 0

    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[WebhookDelivery]:
        self.claiming.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.lost += 1
        return await super().claim_due(now, limit, lease_ms)


async def test_stop_ends_the_loop_when_its_cancellation_is_lost(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    outbox = _LosesCancellation()
    dispatcher = WebhookDispatcher(engine, SETTINGS, outbox=outbox)
    async with engine:
        await dispatcher.start()
        await outbox.claiming.wait()  # the loop's first claim waits on the slow outbox
        task = await engine.create_task(TaskInput(webhooks=[{"url": receiver.url}]))
        await engine.transition_task(task.id, "running")  # a delivery is due now
        # Before the fix the loop went on after the lost cancellation and stop() never
        # returned.
        stopped = await _stops(dispatcher)
        outbox.gate.set()  # (so that a loop left running can be cancelled at teardown)
        assert stopped, "stop() did not return"
        assert outbox.lost == 1
        # The claim that absorbed the stop took the due delivery: it is given back unsent.
        (item,) = await outbox.list_for_task(task.id, 5)
        assert (item.status, item.attempts, item.lease) == ("pending", 0, "")
    assert receiver.requests == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_stop_is_bounded_when_the_loop_never_ends(caplog: pytest.LogCaptureFixture) -> None:
    class _Stuck(MemoryWebhookOutbox):
        def __init__(self) -> None:
            super().__init__()
            self.claiming = asyncio.Event()
            self.gate = asyncio.Event()

        async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[WebhookDelivery]:
            self.claiming.set()
            while not self.gate.is_set():  # deaf to cancellation: every one is absorbed
                with contextlib.suppress(asyncio.CancelledError):
                    await self.gate.wait()
            return []

    engine = TaskEngine(short_term=MemoryShortTermStore())
    outbox = _Stuck()
    settings = WebhookSettings(allow_private=True, poll_seconds=0.05, stop_timeout_seconds=0.2)
    dispatcher = WebhookDispatcher(engine, settings, outbox=outbox)
    async with engine:
        await dispatcher.start()
        await outbox.claiming.wait()
        await asyncio.wait_for(dispatcher.stop(), 30)
        assert not dispatcher.running
        assert "did not stop within 0.2 s" in caplog.text
        assert "claim_due" in caplog.text  # where it is stuck
        outbox.gate.set()  # let the abandoned loop end (it sees its stop, then exits)
        await asyncio.sleep(0.05)


async def test_events_before_start_are_not_enqueued(receiver: Receiver) -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    outbox = MemoryWebhookOutbox()
    WebhookDispatcher(engine, SETTINGS, outbox=outbox)
    async with engine:
        task = await engine.create_task(TaskInput(webhooks=[{"url": receiver.url}]))
        await engine.transition_task(task.id, "running")
        assert await outbox.list_for_task(task.id, 5) == []


async def test_mounted_app_delivers_with_the_lifespan_helper(
    receiver: Receiver, eventually: Any
) -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    app = create_app(engine, webhooks=SETTINGS)
    async with taskcast_lifespan(engine, app):
        task = await engine.create_task(TaskInput(webhooks=[{"url": receiver.url}]))
        await engine.transition_task(task.id, "running")
        await eventually(lambda: len(receiver.requests) == 1)
    assert not app.state.webhooks.running


async def test_invalid_stored_webhooks_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    outbox = MemoryWebhookOutbox()
    dispatcher = WebhookDispatcher(engine, SETTINGS, outbox=outbox)
    async with engine:
        await dispatcher.start()
        task = await engine.create_task(TaskInput(webhooks=[{"url": 5}]))
        dispatcher._hooks_cache.clear()  # as another process would: read from the store
        await engine.transition_task(task.id, "running")
        await dispatcher.stop()
    assert await outbox.list_for_task(task.id, 5) == []
    assert "invalid webhooks" in caplog.text


# -- units -----------------------------------------------------------------------------


def test_sign_headers_both_formats() -> None:
    body = b'{"a":1}'
    headers = sign_headers(body, delivery_id="d1", event_type="x", secret="k", timestamp=100)
    assert headers["webhook-timestamp"] == headers["X-Taskcast-Timestamp"] == "100"
    assert verify_webhook(body, headers, "k", now=100)
    legacy = {"X-Taskcast-Signature": headers["X-Taskcast-Signature"]}
    assert verify_webhook(body, legacy, "k")
    whsec = "whsec_" + "a2V5LWJ5dGVz"
    headers = sign_headers(body, delivery_id="d1", event_type="x", secret=whsec, timestamp=5)
    assert verify_webhook(body, headers, whsec, now=5)
    bad = "whsec_***"
    headers = sign_headers(body, delivery_id="d1", event_type="x", secret=bad, timestamp=5)
    assert verify_webhook(body, headers, bad, now=5)
    plain = sign_headers(body, delivery_id="d", event_type="x", secret=None, timestamp=1)
    assert "webhook-signature" not in plain


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert _is_public(address) is public


async def test_resolve_public() -> None:
    assert await resolve_public("93.184.216.34", 80) == "93.184.216.34"
    with pytest.raises(WebhookRefusedError, match="localhost resolves to non-public"):
        await resolve_public("localhost", 80)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_requests_are_pinned_to_the_checked_address(scheme: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    engine = TaskEngine(short_term=MemoryShortTermStore())
    outbox = MemoryWebhookOutbox()
    dispatcher = WebhookDispatcher(
        engine,
        WebhookSettings(poll_seconds=0.05),
        outbox=outbox,
        transport=httpx.MockTransport(handler),
    )
    async with engine:
        await dispatcher.start()
        url = f"{scheme}://93.184.216.34:8443/hook"
        task = await engine.create_task(TaskInput(webhooks=[{"url": url}]))
        await engine.transition_task(task.id, "running")
        async with asyncio.timeout(10):
            while not seen or (await outbox.list_for_task(task.id, 1))[0].status != "delivered":  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await dispatcher.stop()
    request = seen[0]
    assert request.headers["host"] == "93.184.216.34:8443"
    assert (scheme == "https") == ("sni_hostname" in request.extensions)


def test_settings_validation() -> None:
    hook = WebhookConfig(url="http://h")
    assert WebhookSettings(global_hooks=[hook, {"url": "http://i"}]).hooks[0] is hook
    for kwargs, message in (
        ({"global_hooks": [{"url": "nope"}]}, "global webhook"),
        ({"poll_seconds": 0}, "poll_seconds"),
        ({"lease_seconds": 1}, "lease_seconds"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"retention_seconds": -1}, "retention_seconds"),
        ({"stop_timeout_seconds": 0}, "stop_timeout_seconds"),
    ):
        with pytest.raises(ConfigError, match=message):
            WebhookSettings(**kwargs)  # type: ignore[arg-type]


# -- durability across a crash ---------------------------------------------------------


class _Child:
    def __init__(self, db: str) -> None:
        import subprocess
        import sys
        from pathlib import Path

        script = Path(__file__).with_name("_webhook_child.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), db], stdout=subprocess.PIPE, text=True
        )

    async def url(self) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 30)
        assert line.strip().isdigit(), line
        return f"http://127.0.0.1:{line.strip()}"

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no shutdown code runs
        self.proc.wait(10)


async def test_pending_delivery_survives_kill_9(
    receiver: Receiver, tmp_path: Any, eventually: Any
) -> None:
    db = str(tmp_path / "taskcast.db")
    receiver.statuses = [500] * 10_000
    first = _Child(db)
    try:
        async with httpx.AsyncClient(base_url=await first.url(), timeout=10) as api:
            task_id = await make_task(api, {"url": receiver.url, "secret": "k"})
        await eventually(lambda: len(receiver.requests) >= 2)  # failing, being retried
    finally:
        first.kill()
    receiver.statuses = []  # the receiver is healthy again
    seen = len(receiver.requests)
    second = _Child(db)
    try:
        async with httpx.AsyncClient(base_url=await second.url(), timeout=10) as api:
            await eventually(lambda: len(receiver.requests) > seen)
            headers, body = receiver.requests[-1]
            assert verify_webhook(body, headers, "k")
            assert json.loads(body)["data"]["status"] == "running"

            async def delivered() -> dict[str, Any]:
                while True:
                    (item,) = await deliveries(api, task_id)
                    if item["status"] == "delivered":
                        return item
                    await asyncio.sleep(0.02)

            item = await asyncio.wait_for(delivered(), 10)
            # The kill may land after the receiver answered but before the attempt was
            # recorded (at-least-once), so only one failed attempt is sure to be stored.
            assert item["attempts"] >= 2 and item["responseStatus"] == 200
    finally:
        second.kill()


class _FlakyOutbox(MemoryWebhookOutbox):
    """Fails the first claim, the first outcome write and the first purge."""

    def __init__(self) -> None:
        super().__init__()
        self.claim_errors = 1
        self.outcome_errors = 1
        self.purge_calls = 0

    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[Any]:
        if self.claim_errors:
            self.claim_errors -= 1
            raise OSError("claim down")
        return await super().claim_due(now, limit, lease_ms)

    async def complete(self, *args: Any, **kwargs: Any) -> bool:
        if self.outcome_errors:
            self.outcome_errors -= 1
            raise OSError("write down")
        return await super().complete(*args, **kwargs)

    async def purge(self, finished_before: int) -> int:
        self.purge_calls += 1
        if self.purge_calls == 1:
            raise OSError("purge down")
        return await super().purge(finished_before)


async def test_outbox_outages_are_survived(
    receiver: Receiver, eventually: Any, caplog: pytest.LogCaptureFixture
) -> None:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    outbox = _FlakyOutbox()
    settings = WebhookSettings(
        allow_private=True, poll_seconds=0.05, lease_seconds=2, retention_seconds=0.001
    )
    dispatcher = WebhookDispatcher(engine, settings, outbox=outbox)
    async with engine:
        await dispatcher.start()
        task = await engine.create_task(TaskInput(webhooks=[{"url": receiver.url}]))
        await engine.transition_task(task.id, "running")
        # The first outcome write fails: the lease runs out and the delivery is sent again.
        await eventually(lambda: len(receiver.requests) == 2)
        await eventually(
            lambda: (
                outbox.purge_calls >= 1
                and all(d.status == "delivered" for d in outbox._items.values())
            )
        )

        async def purged() -> None:
            # Purges run hourly: allow the next loop to purge again until the finished
            # delivery is gone (a purge may run just before the outcome was recorded).
            while outbox._items:
                dispatcher._last_purge = 0
                await asyncio.sleep(0.05)

        await asyncio.wait_for(purged(), 10)
        await dispatcher.stop()
    assert "claim failed" in caplog.text and "could not record" in caplog.text
    assert "purge failed" in caplog.text


async def test_task_hooks_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskcast.server import _webhooks

    monkeypatch.setattr(_webhooks, "_CACHE_SIZE", 2)
    engine = TaskEngine(short_term=MemoryShortTermStore())
    dispatcher = WebhookDispatcher(engine, SETTINGS, outbox=MemoryWebhookOutbox())
    async with engine:
        await dispatcher.start()
        for _ in range(3):
            task = await engine.create_task(TaskInput(webhooks=[]))
            await engine.transition_task(task.id, "running")
        await dispatcher.stop()
    assert len(dispatcher._hooks_cache) == 2


# -- Redis: the store's outbox is used, shared by two server processes ----------------


@pytest.fixture
def redis_prefix() -> Any:
    import os
    import uuid

    import redis

    url = os.environ.get("TASKCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis not reachable at {url}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    value = "tcwebhooks-" + uuid.uuid4().hex
    yield url, value
    keys = list(client.scan_iter(match=f"{value}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


async def test_redis_backed_instances_deliver_each_event_once(
    redis_prefix: tuple[str, str], receiver: Receiver, serve_app: Any, eventually: Any
) -> None:
    from taskcast.redis import RedisBroadcast, RedisShortTermStore, RedisWebhookOutbox

    url, prefix = redis_prefix
    engines = [
        TaskEngine(
            short_term=RedisShortTermStore(url, prefix=prefix),
            broadcast=RedisBroadcast(url, prefix=prefix),
        )
        for _ in range(2)
    ]
    apps = [create_app(e, webhooks=SETTINGS) for e in engines]
    assert all(isinstance(a.state.webhooks.outbox, RedisWebhookOutbox) for a in apps)
    async with (
        serve_app(apps[0], engines[0]) as first,
        serve_app(apps[1], engines[1]) as second,
        httpx.AsyncClient(base_url=first, timeout=10) as api,
        httpx.AsyncClient(base_url=second, timeout=10) as other,
    ):
        task_id = await make_task(api, {"url": receiver.url, "filter": {"types": ["n"]}})
        for i in range(20):
            client = api if i % 2 else other
            resp = await client.post(
                f"/tasks/{task_id}/events", json={"type": "n", "level": "info", "data": i}
            )
            assert resp.status_code == 201
        await eventually(lambda: len(receiver.requests) >= 20)
        listed = await deliveries(other, task_id)
        assert len(listed) == 20
    assert sorted(b["data"] for b in receiver.bodies()) == list(range(20))


async def test_redis_outbox_stops_promptly_wherever_the_stop_lands(
    redis_prefix: tuple[str, str], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Start and stop over the real Redis outbox, the stop landing 0, 1, 2... event-loop turns
    into a claim. On Python 3.11 a cancel landing while redis-py's wait_for-wrapped socket
    write is finishing is lost (CPython gh-86296); the dispatcher must stop all the same."""
    from taskcast.redis import RedisWebhookOutbox

    class _Observed(RedisWebhookOutbox):
        claiming = asyncio.Event()

        async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[WebhookDelivery]:
            self.claiming.set()
            return await super().claim_due(now, limit, lease_ms)

    url, prefix = redis_prefix
    engine = TaskEngine(short_term=MemoryShortTermStore())
    outbox = _Observed(url, prefix=prefix)
    dispatcher = WebhookDispatcher(engine, SETTINGS, outbox=outbox)
    async with engine:
        task = await engine.create_task(TaskInput(webhooks=[{"url": receiver.url}]))
        await engine.transition_task(task.id, "running")
        for turns in range(40):
            outbox.claiming.clear()
            await dispatcher.start()
            # Deliveries in flight too: one event per round, sent while the loop runs.
            await engine.publish_event(task.id, EventInput(type="n", data=turns))
            await outbox.claiming.wait()
            for _ in range(turns % 20):
                await asyncio.sleep(0)
            assert await _stops(dispatcher), f"stop() did not return (stop {turns} turns in)"
    assert "did not stop" not in caplog.text


async def test_unusable_stored_urls_fail_at_once(failures: list[Any], eventually: Any) -> None:
    from taskcast.core import WebhookDelivery, now_ms

    def handler(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("transport bug")

    engine = TaskEngine(
        short_term=MemoryShortTermStore(),
        hooks=TaskcastHooks(on_webhook_failed=lambda info, exc: failures.append((info, exc))),
    )
    outbox = MemoryWebhookOutbox()
    settings = WebhookSettings(
        allow_private=True, poll_seconds=0.05, default_retry=WebhookRetry(retries=0)
    )
    dispatcher = WebhookDispatcher(
        engine, settings, outbox=outbox, transport=httpx.MockTransport(handler)
    )
    now = now_ms()
    bad = WebhookDelivery(
        id="bad",
        task_id="t",
        event_id="e",
        event_type="x",
        url="http://\x00/",
        body="{}",
        created_at=now,
        next_attempt_at=now,
        retry=WebhookRetry(retries=3),
    )
    odd = WebhookDelivery(
        id="odd",
        task_id="t",
        event_id="e",
        event_type="x",
        url="http://h.test/",
        body="{}",
        created_at=now,
        next_attempt_at=now,
        retry=WebhookRetry(retries=0),
    )
    await outbox.enqueue([bad, odd])
    async with engine:
        await dispatcher.start()
        await eventually(lambda: len(failures) == 2)
        await dispatcher.stop()
    errors = {info["deliveryId"]: exc.last_error for info, exc in failures}
    assert errors["bad"].startswith("Invalid URL")
    assert errors["odd"] == "RuntimeError: transport bug"
