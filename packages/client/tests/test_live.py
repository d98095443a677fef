"""The client against a real Taskcast server on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from taskcast.client import (
    AsyncTaskcastClient,
    ForbiddenError,
    NotFoundError,
    ReconnectConfig,
    Resync,
    StreamEvent,
    TaskcastClient,
    UnauthorizedError,
)

pytestmark = pytest.mark.anyio

FAST = ReconnectConfig(initial_delay=0.02, max_delay=0.2)


@pytest.fixture
async def http(live: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url) as client:
        yield client


class Api:
    """Just enough REST calls to drive a task (plain httpx: no dependency on the SDK)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def task(self, status: str | None = "running") -> str:
        response = await self.http.post("/tasks", json={})
        response.raise_for_status()
        tid: str = response.json()["id"]
        if status is not None:
            await self.status(tid, status)
        return tid

    async def status(self, tid: str, status: str) -> None:
        (await self.http.patch(f"/tasks/{tid}/status", json={"status": status})).raise_for_status()

    async def publish(
        self, tid: str, type: str = "llm.delta", data: Any = None, level: str = "info"
    ) -> int:
        response = await self.http.post(
            f"/tasks/{tid}/events", json={"type": type, "level": level, "data": data}
        )
        response.raise_for_status()
        return int(response.json()["index"])

    async def subscribers(self, tid: str) -> int:
        return int((await self.http.get(f"/tasks/{tid}")).json()["subscriberCount"])

    async def wait_subscribers(self, tid: str, count: int) -> None:
        with anyio.fail_after(10):
            # Server-side state: there is no event to wait on, so poll it.
            while await self.subscribers(tid) != count:  # noqa: ASYNC110
                await anyio.sleep(0.01)


@pytest.fixture
def api(http: httpx.AsyncClient) -> Api:
    return Api(http)


def only_events(items: list[StreamEvent | Resync]) -> list[StreamEvent]:
    return [i for i in items if isinstance(i, StreamEvent)]


async def test_replay_then_live_then_done(live: Any, api: Api) -> None:
    tid = await api.task()
    for i in range(3):
        await api.publish(tid, data={"n": i})
    received: list[StreamEvent | Resync] = []
    async with (
        AsyncTaskcastClient(live.url, reconnect=FAST) as client,
        client.subscribe(tid) as sub,
    ):
        async for item in sub:
            received.append(item)
            if len(received) == 4:  # replay seen: status + 3 events; now go live
                for i in range(3, 6):
                    await api.publish(tid, data={"n": i})
                await api.status(tid, "completed")
    events = only_events(received)
    assert [e.index for e in events] == list(range(8))
    assert [e.filtered_index for e in events] == list(range(8))
    assert [e.data["n"] for e in events if e.type == "llm.delta"] == list(range(6))
    assert events[-1].type == "taskcast:status" and events[-1].data["status"] == "completed"
    assert sub.done_reason == "completed"


async def test_sync_client_follows_live(live: Any, api: Api) -> None:
    tid = await api.task()
    await api.publish(tid, data="first")

    def follow() -> tuple[list[Any], str | None]:
        with (
            TaskcastClient(live.url, reconnect=FAST) as client,
            client.subscribe(tid, include_status=False) as sub,
        ):
            return [e.data for e in only_events(list(sub))], sub.done_reason

    async with anyio.create_task_group() as tg:
        result: list[Any] = []

        async def run() -> None:
            result.append(await anyio.to_thread.run_sync(follow))

        tg.start_soon(run)
        await api.wait_subscribers(tid, 1)
        await api.publish(tid, data="second")
        await api.status(tid, "failed")
    assert result == [(["first", "second"], "failed")]


async def test_filters_and_unwrapped(live: Any, api: Api) -> None:
    tid = await api.task()
    await api.publish(tid, "llm.delta", "a")
    await api.publish(tid, "tool.call", "b", level="debug")
    await api.publish(tid, "llm.done", "c", level="warn")
    await api.status(tid, "completed")
    async with AsyncTaskcastClient(live.url) as client:
        items = [i async for i in client.subscribe(tid, types=["llm.*"], include_status=False)]
        assert [e.data for e in only_events(items)] == ["a", "c"]
        assert [e.filtered_index for e in only_events(items)] == [0, 1]
        items = [i async for i in client.subscribe(tid, levels=["debug", "warn"], wrap=False)]
        events = only_events(items)
        assert [e.data for e in events] == ["b", "c"] and events[0].filtered_index is None


async def test_since_cursors_and_resync(live: Any, api: Api) -> None:
    tid = await api.task()
    for i in range(4):
        await api.publish(tid, data=i)
    await api.status(tid, "completed")
    async with AsyncTaskcastClient(live.url) as client:
        history = only_events([i async for i in client.subscribe(tid)])
        after = only_events([i async for i in client.subscribe(tid, since_id=history[2].id)])
        assert [e.index for e in after] == [e.index for e in history[3:]]
        items = [i async for i in client.subscribe(tid, since_id="01UNKNOWNCURSOR00000000000")]
        assert isinstance(items[0], Resync)
        assert items[0].reason == "unknown-cursor" and items[0].status == "completed"
        assert [e.index for e in only_events(items)] == [e.index for e in history]


async def test_pending_task_is_held_until_running(live: Any, api: Api) -> None:
    tid = await api.task(status=None)
    await api.publish(tid, data="early")
    got: list[StreamEvent | Resync] = []
    async with (
        AsyncTaskcastClient(live.url) as client,
        client.subscribe(tid) as sub,
        anyio.create_task_group() as tg,
    ):

        async def drive() -> None:
            await api.wait_subscribers(tid, 1)
            assert got == []
            await api.status(tid, "running")
            await api.status(tid, "completed")

        tg.start_soon(drive)
        async for item in sub:
            got.append(item)
    assert [e.data for e in only_events(got)] == [
        "early",
        {"status": "running"},
        {"status": "completed"},
    ]


async def test_breaking_out_closes_the_connection(live: Any, api: Api) -> None:
    tid = await api.task()
    async with AsyncTaskcastClient(live.url) as client:
        async with client.subscribe(tid) as sub:
            async for _ in sub:
                assert await api.subscribers(tid) == 1
                break
        await api.wait_subscribers(tid, 0)


def test_sync_breaking_out_closes_the_connection(live: Any) -> None:
    with httpx.Client(base_url=live.url) as http:
        tid = http.post("/tasks", json={}).json()["id"]
        http.patch(f"/tasks/{tid}/status", json={"status": "running"})
        with TaskcastClient(live.url) as client:
            for _ in client.subscribe(tid):
                break  # no `with`: dropping the iterator closes it
        count = 1
        for _ in range(1000):
            count = http.get(f"/tasks/{tid}").json()["subscriberCount"]
            if count == 0:
                break
            anyio.run(anyio.sleep, 0.01)
        assert count == 0


async def test_deleted_task_ends_stream(live: Any, api: Api, http: httpx.AsyncClient) -> None:
    tid = await api.task()
    async with AsyncTaskcastClient(live.url) as client, client.subscribe(tid) as sub:
        async for item in sub:
            assert isinstance(item, StreamEvent)
            (await http.delete(f"/tasks/{tid}")).raise_for_status()
    assert sub.done_reason == "deleted"


async def test_unknown_task(live: Any) -> None:
    async with AsyncTaskcastClient(live.url) as client:
        with pytest.raises(NotFoundError) as info:
            async for _ in client.subscribe("no-such-task"):
                pass
    assert info.value.status_code == 404


async def test_token_refresh_against_real_auth(auth_live: Any) -> None:
    headers = {"Authorization": "Bearer admin"}
    async with httpx.AsyncClient(base_url=auth_live.url, headers=headers) as http:
        tid = (await http.post("/tasks", json={})).json()["id"]
        response = await http.patch(f"/tasks/{tid}/status", json={"status": "cancelled"})
        response.raise_for_status()
    refreshed: list[str] = []

    async def refresh() -> str:
        refreshed.append("admin")
        return "admin"

    async with AsyncTaskcastClient(auth_live.url, token="stale", refresh_token=refresh) as c:
        items = [i async for i in c.subscribe(tid)]
        assert [e.data for e in only_events(items)] == [{"status": "cancelled"}]
        assert refreshed == ["admin"] and c.token == "admin"
    with TaskcastClient(auth_live.url, token="writer") as sync_client:
        with pytest.raises(ForbiddenError) as forbidden:
            list(sync_client.subscribe(tid))
        assert forbidden.value.message == "Forbidden"
        sync_client.token = "stale"
        with pytest.raises(UnauthorizedError, match="Invalid or expired token"):
            list(sync_client.subscribe(tid))


def _replacement(tid: str) -> dict[str, Any]:
    """An archive for ``tid`` whose history reuses the old indexes and one old id (``e-0``
    stands for any id a client might still hold as a cursor): nothing in it is new by the
    old history's numbers, so only a fresh start shows it."""
    events: list[dict[str, Any]] = [
        {"id": f"new-{i}", "taskId": tid, "index": i, "timestamp": 10 + i, "type": "llm.delta",
         "level": "info", "data": {"n": f"new{i}"}}
        for i in range(3)
    ]  # fmt: skip
    events.append(
        {"id": "new-done", "taskId": tid, "index": 3, "timestamp": 20, "type": "taskcast:status",
         "level": "info", "data": {"status": "completed"}}
    )  # fmt: skip
    return {
        "schema": "taskcast.taskArchive",
        "version": 1,
        "exportedAt": 1,
        "task": {"id": tid, "status": "completed", "createdAt": 1, "updatedAt": 20},
        "events": events,
    }


async def _overwrite(http: httpx.AsyncClient, tid: str) -> None:
    response = await http.post(
        "/tasks/import", json={"archive": _replacement(tid), "overwrite": True}
    )
    assert response.status_code == 200, response.text
    assert response.json()["overwritten"] is True


@pytest.fixture
async def served(live: Any) -> AsyncIterator[tuple[Any, Api, httpx.AsyncClient]]:
    # ``live`` sends a heartbeat every 0.2 s, so an idle stream's store catch-up often
    # falls between an overwrite's store write and its broadcast: the stream itself must
    # tell the new history from the old (core TaskStream._fill).
    async with httpx.AsyncClient(base_url=live.url) as client:
        yield live, Api(client), client


async def test_replaced_task_is_followed_to_its_new_history(served: Any) -> None:
    live, api, http = served
    tid = await api.task()
    for i in range(5):
        await api.publish(tid, data={"n": f"old{i}"})
    received: list[StreamEvent | Resync] = []
    async with (
        AsyncTaskcastClient(live.url, reconnect=FAST) as client,
        client.subscribe(tid, since_index=1) as sub,
    ):
        async for item in sub:
            received.append(item)
            if isinstance(item, StreamEvent) and item.data == {"n": "old4"}:
                await _overwrite(http, tid)
    resync = next(i for i in received if isinstance(i, Resync))
    assert resync.reason == "replaced" and resync.cursor is not None
    after = received[received.index(resync) + 1 :]
    # Exactly the new history, from its start (since_index=1 no longer applies), then done.
    assert [e.id for e in only_events(after)] == ["new-0", "new-1", "new-2", "new-done"]
    assert [e.filtered_index for e in only_events(after)] == [0, 1, 2, 3]
    assert all(isinstance(i, StreamEvent) for i in after)
    assert sub.done_reason == "completed"
    assert sub.connections == 2


async def test_sync_client_follows_a_replaced_task(served: Any) -> None:
    live, api, http = served
    tid = await api.task()
    await api.publish(tid, data={"n": "old0"})

    def follow() -> tuple[list[Any], str | None]:
        with (
            TaskcastClient(live.url, reconnect=FAST) as client,
            client.subscribe(tid, include_status=False) as sub,
        ):
            items = [i.reason if isinstance(i, Resync) else i.data["n"] for i in sub]
            return items, sub.done_reason

    async with anyio.create_task_group() as tg:
        result: list[Any] = []

        async def run() -> None:
            result.append(await anyio.to_thread.run_sync(follow))

        tg.start_soon(run)
        await api.wait_subscribers(tid, 1)
        await _overwrite(http, tid)
    assert result == [(["old0", "replaced", "new0", "new1", "new2"], "completed")]


async def test_listen_hands_replaced_to_on_resync(served: Any) -> None:
    live, api, http = served
    tid = await api.task()
    seen: list[str] = []

    async def on_event(event: StreamEvent) -> None:
        seen.append(event.id)
        if event.type == "taskcast:status" and event.data["status"] == "running":
            await _overwrite(http, tid)

    async with AsyncTaskcastClient(live.url, reconnect=FAST) as client:
        reason = await client.listen(
            tid, on_event=on_event, on_resync=lambda r: seen.append(f"<{r.reason}>")
        )
    assert reason == "completed"
    assert seen[1:] == ["<replaced>", "new-0", "new-1", "new-2", "new-done"]
