"""The server SDK against a real Taskcast server on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from taskcast.server_sdk import (
    AsyncTaskcastServerClient,
    BadRequestError,
    BlockedRequest,
    ConflictError,
    EventInput,
    ForbiddenError,
    NotFoundError,
    TaskcastServerClient,
    TaskError,
    UnauthorizedError,
)

pytestmark = pytest.mark.anyio


def test_every_route_sync(live: Any) -> None:
    with TaskcastServerClient(live.url) as client:
        assert client.health().ok
        info = client.server_info()
        assert info.name == "taskcast" and info.api_version == "v1"

        task = client.create_task(
            type="sdk.test",
            params={"prompt": "hi"},
            metadata={"owner": "me"},
            ttl=600,
            tags=["a"],
            extra={"cost": 2},
        )
        assert (task.status, task.type, task.params, task.ttl, task.tags, task.cost) == (
            "pending",
            "sdk.test",
            {"prompt": "hi"},
            600,
            ["a"],
            2,
        )
        with pytest.raises(ConflictError, match="already exists"):
            client.create_task(id=task.id)
        fetched = client.get_task(task.id)
        assert fetched.id == task.id and fetched.subscriber_count == 0 and fetched.hot is False

        client.transition_task(task.id, "running")
        first = client.publish_event(task.id, "log", {"line": 1}, level="debug")
        again = client.publish_event(
            task.id, "log", {"line": 1}, idempotency_key=first.idempotency_key
        )
        assert again.id == first.id and again.index == first.index
        batch = client.publish_events(task.id, [EventInput(type="a"), {"type": "b", "data": 2}])
        assert [e.index for e in batch] == [first.index + 1, first.index + 2]

        blocked = client.transition_task(
            task.id, "blocked", reason="approve?", blocked_request=BlockedRequest(type="confirm")
        )
        assert blocked.reason == "approve?"
        assert client.get_request(task.id).type == "confirm"
        assert client.resolve(task.id, {"approved": True}).status == "running"
        with pytest.raises(NotFoundError, match="No blocked request"):
            client.get_request(task.id)
        with pytest.raises(BadRequestError, match="not blocked"):
            client.resolve(task.id, 1)

        history = client.get_history(task.id)
        types = [e.type for e in history]
        assert types[:5] == ["taskcast:status", "log", "a", "b", "taskcast:status"]
        assert [e.type for e in client.get_history(task.id, types=["a", "b"])] == ["a", "b"]
        assert [e.type for e in client.get_history(task.id, since_index=first.index, limit=1)] == [
            "a"
        ]
        assert [
            e.type for e in client.get_history(task.id, since_id=batch[1].id, levels="debug")
        ] == []

        done = client.transition_task(
            task.id, "failed", error=TaskError(code="E42", message="bad"), result={"partial": 1}
        )
        assert done.error == TaskError(code="E42", message="bad") and done.result == {"partial": 1}
        with pytest.raises(ConflictError, match="Invalid transition"):
            client.transition_task(task.id, "running")
        with pytest.raises(BadRequestError, match="terminal"):
            client.publish_event(task.id, "late")

        client.delete_task(task.id)
        with pytest.raises(NotFoundError):
            client.get_task(task.id)


def test_list_tasks_pages(live: Any) -> None:
    with TaskcastServerClient(live.url) as client:
        ids = {client.create_task(type="paging").id for _ in range(5)}
        page = client.list_tasks(type="paging", limit=2)
        assert len(page.tasks) == 2 and page.next_cursor is not None
        seen = [t.id for t in client.iter_tasks(type="paging", status="pending", page_size=2)]
        assert set(seen) == ids and len(seen) == 5


def test_webhook_secrets_never_reach_the_sdk(live: Any) -> None:
    # The filter matches nothing: no delivery leaves the machine.
    quiet = {"types": ["never.*"], "includeStatus": False}
    hook = {
        "url": "https://u:hookpass@hooks.example.com/in?key=qk-1",
        "secret": "whsec-x",
        "filter": quiet,
    }
    shown = [
        {"url": "https://***@hooks.example.com/in?key=***", "hasSecret": True, "filter": quiet}
    ]
    with TaskcastServerClient(live.url) as client:
        task = client.create_task(type="hooked", extra={"webhooks": [hook]})
        assert task.webhooks == shown
        assert client.get_task(task.id).webhooks == shown
        listed = [t for t in client.iter_tasks(type="hooked") if t.id == task.id]
        assert [t.webhooks for t in listed] == [shown]
        assert client.transition_task(task.id, "running").webhooks == shown


async def test_every_route_async(live: Any) -> None:
    async with AsyncTaskcastServerClient(live.url) as client:
        assert (await client.health()).ok
        assert (await client.server_info()).name == "taskcast"
        task = await client.create_task(type="async.test")
        assert (await client.get_task(task.id)).type == "async.test"
        assert task.id in [t.id async for t in client.iter_tasks(type="async.test")]
        assert (await client.list_tasks(status=["pending"], limit=1)).tasks
        await client.transition_task(task.id, "running")
        event = await client.publish_event(task.id, "x", 1)
        events = await client.publish_events(task.id, [EventInput(type="y")])
        assert events[0].index == event.index + 1
        await client.transition_task(task.id, "blocked", blocked_request={"type": "q", "data": 1})
        assert (await client.get_request(task.id)).data == 1
        await client.resolve(task.id, "yes")
        history = await client.get_history(task.id, types="x")
        assert [e.data for e in history] == [1]
        await client.delete_task(task.id)
        with pytest.raises(NotFoundError):
            await client.get_task(task.id)


def test_run_helper_sync(live: Any) -> None:
    with TaskcastServerClient(live.url) as client:
        ok = client.create_task()
        with client.run(ok.id) as run:
            run.publish("step", {"n": 1})
            run.result = {"answer": 42}
        done = client.get_task(ok.id)
        assert done.status == "completed" and done.result == {"answer": 42}

        bad = client.create_task()
        with pytest.raises(ValueError, match="exploded"), client.run(bad.id):
            raise ValueError("exploded")
        failed = client.get_task(bad.id)
        assert failed.status == "failed"
        assert failed.error == TaskError(code="ValueError", message="exploded")


async def test_run_helper_async(live: Any) -> None:
    async with AsyncTaskcastServerClient(live.url) as client:
        task = await client.create_task()
        with pytest.raises(RuntimeError):
            async with client.run(task.id) as run:
                await run.publish("step")
                raise RuntimeError("nope")
        assert (await client.get_task(task.id)).status == "failed"


def counting_client(requests: list[httpx.Request]) -> httpx.Client:
    return httpx.Client(timeout=10, event_hooks={"request": [requests.append]})


def test_publish_stream_thousand_chunks(live: Any) -> None:
    requests: list[httpx.Request] = []
    chunks = [f"token{i} " for i in range(1000)]
    with counting_client(requests) as http, TaskcastServerClient(live.url, http_client=http) as c:
        task = c.create_task(type="llm")
        with c.run(task.id) as run:
            before = len(requests)
            result = run.publish_stream(chunks)
            publishes = len(requests) - before
        history = c.get_history(task.id, series_format="accumulated")
        deltas = c.get_history(task.id, types=["llm.delta"])
    expected = "".join(chunks)
    assert result.text == expected and result.chunks == 1000
    assert publishes == result.requests and publishes < 50  # far fewer than 1,000
    (snapshot,) = [e for e in history if e.series_id == "output"]
    assert snapshot.series_snapshot and snapshot.data["delta"] == expected
    assert "".join(e.data["delta"] for e in deltas) == expected
    assert len(deltas) == result.events


async def test_publish_stream_thousand_chunks_async(live: Any) -> None:
    requests: list[httpx.Request] = []

    async def hook(request: httpx.Request) -> None:
        requests.append(request)

    async def produce() -> AsyncIterator[str]:
        for i in range(1000):
            yield f"t{i},"

    expected = "".join(f"t{i}," for i in range(1000))
    async with (
        httpx.AsyncClient(timeout=10, event_hooks={"request": [hook]}) as http,
        AsyncTaskcastServerClient(live.url, http_client=http) as client,
    ):
        task = await client.create_task()
        await client.transition_task(task.id, "running")
        before = len(requests)
        result = await client.publish_stream(
            task.id, produce(), series_id="answer", field="text", type="chat.text"
        )
        assert len(requests) - before == result.requests < 50
        history = await client.get_history(task.id, series_format="accumulated")
    (snapshot,) = [e for e in history if e.series_id == "answer"]
    assert snapshot.type == "chat.text" and snapshot.data["text"] == expected


def test_token_and_auth_errors(auth_live: Any) -> None:
    with TaskcastServerClient(auth_live.url, token="writer") as client:
        task = client.create_task()
        with pytest.raises(ForbiddenError) as forbidden:
            client.get_task(task.id)
        assert (forbidden.value.status_code, forbidden.value.message) == (403, "Forbidden")
        client.token = "admin"
        assert client.get_task(task.id).id == task.id
        client.token = None
        with pytest.raises(UnauthorizedError, match="Invalid or expired token"):
            client.get_task(task.id)
        assert client.health().ok  # public route
