"""Many subscribers and a stalled one, over real TCP against a real server process."""

from __future__ import annotations

import asyncio
import os

import httpx
import psutil
import pytest
from itsupport import Server
from sse_client import RawStream

pytestmark = pytest.mark.anyio


async def test_thousand_subscribers_each_get_every_event_once_in_order(
    servers: list[Server],
) -> None:
    server = Server(["--storage", "memory"]).start()
    servers.append(server)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=20)) as client:
        tid = (await client.post(server.url + "/tasks", json={})).json()["id"]
        await client.patch(f"{server.url}/tasks/{tid}/status", json={"status": "running"})
        streams = [RawStream("127.0.0.1", server.port, f"/tasks/{tid}/events") for _ in range(1000)]
        for i in range(0, 1000, 100):
            await asyncio.gather(*(s.open() for s in streams[i : i + 100]))

        async def consume(stream: RawStream) -> list[int]:
            seen = []
            async for event, data, _ in stream.frames():
                if event == "taskcast.done":
                    return seen
                seen.append(data["rawIndex"])
            return seen

        consumers = [asyncio.create_task(consume(s)) for s in streams]

        async def publisher(p: int) -> None:
            for i in range(10):
                r = await client.post(
                    f"{server.url}/tasks/{tid}/events", json={"type": "tick", "data": [p, i]}
                )
                assert r.status_code == 201

        await asyncio.gather(*(publisher(p) for p in range(10)))
        await client.patch(f"{server.url}/tasks/{tid}/status", json={"status": "completed"})
        results = await asyncio.wait_for(asyncio.gather(*consumers), 120)
        for stream in streams:
            stream.close()
    expected = list(range(102))
    assert all(r == expected for r in results)


async def test_stalled_reader_is_cut_with_bounded_memory_and_resumes_exactly(
    servers: list[Server],
) -> None:
    server = Server(["--storage", "memory", "--queue-limit", "500"]).start()
    servers.append(server)
    proc = psutil.Process(server.pid)
    payload = "x" * 2000
    async with httpx.AsyncClient(timeout=60) as client:
        tid = (await client.post(server.url + "/tasks", json={})).json()["id"]
        await client.patch(f"{server.url}/tasks/{tid}/status", json={"status": "running"})
        stalled = RawStream("127.0.0.1", server.port, f"/tasks/{tid}/events")
        await stalled.open()
        baseline = proc.memory_info().rss
        for batch in range(40):
            events = [
                {"type": "blob", "data": {"b": batch, "i": i, "pad": payload}} for i in range(100)
            ]
            r = await client.post(f"{server.url}/tasks/{tid}/events", json=events)
            assert r.status_code == 201
        grown = proc.memory_info().rss - baseline
        # 4,000 events of ~2 KB were published; the stalled subscriber must not hold them all.
        assert grown < 40 * 1024 * 1024, grown
        # Now read what the server sent before cutting us off; the stream must end.
        received: list[tuple[int, str]] = []
        async with asyncio.timeout(30):
            async for event, data, id_ in stalled.frames():
                if event == "taskcast.event":
                    received.append((data["rawIndex"], id_))
        stalled.close()
        assert received, "the stalled client received nothing before the cut"
        last_index, last_id = received[-1]
        assert [i for i, _ in received] == list(range(last_index + 1))
        assert last_index < 4000
        await client.patch(f"{server.url}/tasks/{tid}/status", json={"status": "completed"})
        resumed = RawStream(
            "127.0.0.1", server.port, f"/tasks/{tid}/events", {"Last-Event-ID": last_id}
        )
        await resumed.open()
        rest = []
        async for event, data, _ in resumed.frames():
            if event == "taskcast.done":
                break
            rest.append(data["rawIndex"])
        resumed.close()
        assert rest == list(range(last_index + 1, 4002))
    assert os.getpid() != server.pid
