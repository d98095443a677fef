"""Races and fan-out over real HTTP (uvicorn on a loopback port)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from taskcast.core import EventInput, TaskEngine, encode_count
from taskcast.server import ServerConfig

pytestmark = pytest.mark.anyio


async def running_task(engine: TaskEngine) -> str:
    task = await engine.create_task()
    await engine.transition_task(task.id, "running")
    return task.id


async def test_concurrent_terminal_transitions(live: httpx.AsyncClient, engine: TaskEngine) -> None:
    tid = await running_task(engine)
    targets = ["completed", "failed", "cancelled", "timeout"]
    responses = await asyncio.gather(
        *(live.patch(f"/tasks/{tid}/status", json={"status": targets[i % 4]}) for i in range(100))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 99
    winner = next(r.json() for r in responses if r.status_code == 200)
    task = await engine.get_task(tid)
    assert task is not None and task.status == winner["status"]
    statuses = [e for e in await engine.get_events(tid) if e.type == "taskcast:status"]
    assert len(statuses) == 2  # running + the one terminal move
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"].startswith("Invalid transition: ")


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client: httpx costs more CPU than the server under test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base_url: str) -> RawConnection:
        host, port = base_url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def post(self, path: str, body: bytes) -> tuple[int, Any]:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next(
            int(v)
            for k, _, v in (line.partition(":") for line in lines)
            if k.lower() == "content-length"
        )
        return int(lines[0].split()[1]), json.loads(await self.reader.readexactly(length))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.mark.slow
async def test_concurrent_publishers_get_contiguous_indexes(
    live: httpx.AsyncClient, engine: TaskEngine
) -> None:
    tid = await running_task(engine)

    async def publisher(p: int) -> list[int]:
        conn = await RawConnection.open(str(live.base_url).rstrip("/"))
        out = []
        try:
            for i in range(100):
                status, body = await conn.post(
                    f"/tasks/{tid}/events", b'{"type":"p","data":[%d,%d]}' % (p, i)
                )
                assert status == 201
                out.append(body["index"])
        finally:
            await conn.close()
        return out

    results = await asyncio.gather(*(publisher(p) for p in range(50)))
    indexes = sorted(i for chunk in results for i in chunk)
    assert indexes == list(range(1, 5001))
    for chunk in results:
        assert chunk == sorted(chunk)  # each publisher's events keep its order
    stored = await engine.get_events(tid)
    assert [e.index for e in stored] == list(range(5001))
    assert [e.data for e in stored[1:] if e.data[0] == 7] == [[7, i] for i in range(100)]


@pytest.mark.slow
async def test_late_joiner_during_publishing(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any
) -> None:
    tid = await running_task(engine)
    for _ in range(5):
        await engine.publish_events(tid, [EventInput(type="old") for _ in range(1000)])
    stop = asyncio.Event()

    async def publisher() -> None:
        while not stop.is_set():
            r = await live.post(f"/tasks/{tid}/events", json=[{"type": "new"}, {"type": "new"}])
            assert r.status_code == 201

    pubs = [asyncio.create_task(publisher()) for _ in range(4)]
    await asyncio.sleep(0.05)
    async with open_sse(live, f"/tasks/{tid}/events") as s:
        seen = await s.events_until(lambda f: f.data["rawIndex"] >= 5400)
        stop.set()
        await asyncio.gather(*pubs)
        await engine.transition_task(tid, "completed")
        seen += await s.events_until(lambda f: f.event == "taskcast.done")
    indexes = [f.data["rawIndex"] for f in seen if f.event == "taskcast.event"]
    assert indexes == list(range(await engine.last_index(tid) + 1))
    assert seen[-1].data == {"reason": "completed"}


# Long heartbeats: an idle-time catch-up read re-encodes events per subscriber by design, and
# this test is about the live fan-out path.
@pytest.mark.parametrize("config", [ServerConfig(heartbeat_seconds=60)])
async def test_fan_out_encodes_once_per_event_and_shape(
    live: httpx.AsyncClient, engine: TaskEngine, open_sse: Any
) -> None:
    tid = await running_task(engine)
    streams = []
    async with asyncio.timeout(60):
        contexts = [open_sse(live, f"/tasks/{tid}/events") for _ in range(100)]
        contexts += [
            open_sse(live, f"/tasks/{tid}/events", params={"wrap": "false"}) for _ in range(5)
        ]
        for ctx in contexts:
            streams.append(await ctx.__aenter__())
        try:
            # Everyone has replayed the status event and is live.
            await asyncio.gather(*(s.events_until(lambda f: True) for s in streams))
            assert engine.subscriber_count(tid) == 105
            before = encode_count()
            await engine.publish_events(tid, [EventInput(type="x", data=i) for i in range(10)])
            got = await asyncio.gather(
                *(
                    s.events_until(lambda f: f.data.get("rawIndex", f.data.get("index")) == 10)
                    for s in streams
                )
            )
            # 10 events x 2 shapes, whatever the number of subscribers.
            assert encode_count() - before == 20
            assert all(len(frames) == 10 for frames in got)
            wrapped = got[0]
            assert [f.data["filteredIndex"] for f in wrapped] == list(range(1, 11))
            assert [f.data["index"] for f in got[-1]] == list(range(1, 11))
        finally:
            for ctx in reversed(contexts):
                await ctx.__aexit__(None, None, None)
