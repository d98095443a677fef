"""The issue's resume guarantee, end to end, across a crashed server.

"The Python client, with the server process killed and restarted mid-stream (SQLite),
delivers every event exactly once in order and ends on taskcast.done."
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread
import httpx
import pytest

from taskcast.client import (
    AsyncSubscription,
    AsyncTaskcastClient,
    ReconnectConfig,
    Resync,
    StreamEvent,
    Subscription,
    TaskcastClient,
)

pytestmark = pytest.mark.anyio

CHILD = str(Path(__file__).with_name("_server_child.py"))
TOTAL = 120
KILL_AT = 40


class ServerProcess:
    def __init__(self, port: int, db: Path) -> None:
        self.port, self.db = port, db
        self.url = f"http://127.0.0.1:{port}"
        self.proc: anyio.abc.Process | None = None

    async def start(self) -> None:
        self.proc = proc = await anyio.open_process(
            [sys.executable, CHILD, str(self.port), str(self.db)], stdout=None, stderr=None
        )
        async with httpx.AsyncClient() as http:
            with anyio.fail_after(20):
                while True:
                    if proc.returncode is not None:
                        raise RuntimeError(f"server exited with {proc.returncode}")
                    try:
                        if (await http.get(self.url + "/health")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.05)

    async def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            with anyio.move_on_after(10):
                await self.proc.wait()
                return
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def server(tmp_path: Path, port: int) -> AsyncIterator[ServerProcess]:
    proc = ServerProcess(port, tmp_path / "taskcast.db")
    yield proc
    await proc.stop()


async def publish(http: httpx.AsyncClient, tid: str, n: int) -> None:
    # Ride through the outage: the key makes a resent POST harmless if the first landed.
    body = {"type": "llm.delta", "level": "info", "data": {"n": n}, "idempotencyKey": f"k{n}"}
    with anyio.fail_after(30):
        while True:
            try:
                response = await http.post(f"/tasks/{tid}/events", json=body)
            except httpx.TransportError:
                await anyio.sleep(0.05)
                continue
            response.raise_for_status()
            return


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_kill_and_restart_mid_stream(server: ServerProcess, mode: str) -> None:
    await server.start()
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = (await http.post("/tasks", json={})).json()["id"]
        (await http.patch(f"/tasks/{tid}/status", json={"status": "running"})).raise_for_status()

        received: list[StreamEvent] = []
        reconnect = ReconnectConfig(initial_delay=0.02, max_delay=0.2)
        caught_up = anyio.Event()

        def take(item: StreamEvent | Resync) -> None:
            assert isinstance(item, StreamEvent)
            received.append(item)
            if item.type == "llm.delta" and item.data["n"] == KILL_AT - 1:
                caught_up.set()

        subscription: AsyncSubscription | Subscription
        if mode == "async":
            client = AsyncTaskcastClient(server.url, reconnect=reconnect)
            subscription = async_sub = client.subscribe(tid)

            async def follow() -> None:
                async with client, async_sub:
                    async for item in async_sub:
                        take(item)

        else:
            sync_client = TaskcastClient(server.url, reconnect=reconnect)
            subscription = sync_sub = sync_client.subscribe(tid)

            def follow_sync() -> None:
                with sync_client, sync_sub:
                    for item in sync_sub:
                        anyio.from_thread.run_sync(take, item)

            async def follow() -> None:
                await anyio.to_thread.run_sync(follow_sync)

        published = [0]

        async def produce() -> None:
            for n in range(TOTAL):
                await publish(http, tid, n)
                published[0] = n + 1

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                async with anyio.create_task_group() as producers:
                    producers.start_soon(produce)
                    await caught_up.wait()
                    # The producer is mid-request when the server dies; it resends with the
                    # same idempotency key once the server is back.
                    await server.kill()
                    at_kill = published[0]
                    await server.start()
                response = await http.patch(f"/tasks/{tid}/status", json={"status": "completed"})
                response.raise_for_status()

    # The stream really was cut mid-way. A subscriber may see event n before its publisher
    # has read the 201, so the producer may still be on n.
    assert KILL_AT - 1 <= at_kill < TOTAL
    assert subscription.done_reason == "completed"
    assert subscription.connections >= 2
    assert [e.index for e in received] == list(range(TOTAL + 2))
    deltas = [e.data["n"] for e in received if e.type == "llm.delta"]
    assert deltas == list(range(TOTAL))
    assert [e.data["status"] for e in received if e.type == "taskcast:status"] == [
        "running",
        "completed",
    ]
    assert len({e.id for e in received}) == len(received)
