"""The embedded default (SQLite) under real processes: races, crashes and restarts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from itsupport import Server
from sse_client import RawStream

pytestmark = pytest.mark.anyio


def sqlite_server(db_path: Path, *extra: str) -> Server:
    return Server(["--storage", "sqlite", "--db-path", str(db_path), *extra])


async def test_terminal_race_across_two_processes(servers: list[Server], db_path: Path) -> None:
    a = sqlite_server(db_path).start()
    servers.append(a)
    b = sqlite_server(db_path).start()
    servers.append(b)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        task = (await client.post(a.url + "/tasks", json={})).json()
        assert (
            await client.patch(f"{b.url}/tasks/{task['id']}/status", json={"status": "running"})
        ).status_code == 200
        targets = ["completed", "failed", "cancelled", "timeout"]
        responses = await asyncio.gather(
            *(
                client.patch(
                    f"{(a, b)[i % 2].url}/tasks/{task['id']}/status",
                    json={"status": targets[i % 4]},
                )
                for i in range(100)
            )
        )
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] + [409] * 99
        loser = next(r for r in responses if r.status_code == 409)
        assert loser.json()["error"].startswith("Invalid transition: ")
        history = (await client.get(f"{a.url}/tasks/{task['id']}/events/history")).json()
        assert [e["data"]["status"] for e in history] == [
            "running",
            (await client.get(f"{b.url}/tasks/{task['id']}")).json()["status"],
        ]


async def test_memory_terminal_race(servers: list[Server]) -> None:
    server = Server(["--storage", "memory"]).start()
    servers.append(server)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        task = (await client.post(server.url + "/tasks", json={"id": "race"})).json()
        await client.patch(f"{server.url}/tasks/race/status", json={"status": "running"})
        responses = await asyncio.gather(
            *(
                client.patch(
                    f"{server.url}/tasks/{task['id']}/status", json={"status": "completed"}
                )
                for _ in range(100)
            )
        )
        assert sorted(r.status_code for r in responses) == [200] + [409] * 99


async def test_sigkill_after_last_ack_loses_nothing(servers: list[Server], db_path: Path) -> None:
    server = sqlite_server(db_path).start()
    servers.append(server)
    acked: list[dict] = []
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as client:
        task = (await client.post(server.url + "/tasks", json={})).json()
        tid = task["id"]
        await client.patch(f"{server.url}/tasks/{tid}/status", json={"status": "running"})

        async def publisher(p: int) -> None:
            for i in range(20):
                r = await client.post(
                    f"{server.url}/tasks/{tid}/events",
                    json={"type": "log", "data": {"p": p, "i": i}},
                )
                assert r.status_code == 201
                acked.append(r.json())

        await asyncio.gather(*(publisher(p) for p in range(25)))
    # No sleep, no flush: the process dies right after the last acknowledgement.
    server.kill()
    assert len(acked) == 500

    again = sqlite_server(db_path).start()
    servers.append(again)
    async with httpx.AsyncClient(timeout=30) as client:
        history = (await client.get(f"{again.url}/tasks/{tid}/events/history")).json()
        stored = {e["id"]: e for e in history}
        for event in acked:
            assert stored[event["id"]]["index"] == event["index"]
        assert [e["index"] for e in history] == list(range(501))
        # Resume mid-stream with Last-Event-ID: exactly the rest, then completion.
        middle = history[250]
        stream = RawStream(
            "127.0.0.1", again.port, f"/tasks/{tid}/events", {"Last-Event-ID": middle["id"]}
        )
        await stream.open()
        await client.patch(f"{again.url}/tasks/{tid}/status", json={"status": "completed"})
        got = []
        async for event, data, _ in stream.frames():
            if event == "taskcast.done":
                break
            got.append(data["rawIndex"])
        stream.close()
        assert got == list(range(251, 502))


async def test_ttl_deadline_survives_restart(servers: list[Server], db_path: Path) -> None:
    first = sqlite_server(db_path).start()
    servers.append(first)
    async with httpx.AsyncClient(timeout=30) as client:
        task = (await client.post(first.url + "/tasks", json={"ttl": 2})).json()
        await client.patch(f"{first.url}/tasks/{task['id']}/status", json={"status": "running"})
    first.stop()
    second = sqlite_server(db_path).start()
    servers.append(second)
    stream = RawStream("127.0.0.1", second.port, f"/tasks/{task['id']}/events")
    await stream.open()
    started = time.monotonic()
    events = []
    async with asyncio.timeout(10):
        async for event, data, _ in stream.frames():
            events.append((event, data))
            if event == "taskcast.done":
                break
    stream.close()
    assert events[-1] == ("taskcast.done", {"reason": "timeout"})
    assert events[-2][1]["data"] == {"status": "timeout"}
    assert time.monotonic() - started < 5
