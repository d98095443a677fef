"""Run in a subprocess by test_tracing.py: Sentry's FastAPI integration patches globals."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from taskcast.core import MemoryShortTermStore, TaskEngine
from taskcast.sentry import setup_sentry
from taskcast.server import create_app

transactions: list[dict[str, Any]] = []


class Capture(Transport):
    def capture_envelope(self, envelope: Envelope) -> None:
        event = envelope.get_transaction_event()
        if event is not None:
            transactions.append(event)


async def main() -> None:
    hooks = setup_sentry("http://key@localhost/1", traces_sample_rate=1.0, transport=Capture())
    engine = TaskEngine(short_term=MemoryShortTermStore(), hooks=hooks)
    app = create_app(engine)
    async with engine:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            tid = (await client.post("/tasks", json={})).json()["id"]
            await client.patch(f"/tasks/{tid}/status", json={"status": "running"})
            await client.post(f"/tasks/{tid}/events", json={"type": "log", "data": 1})
            await client.patch(f"/tasks/{tid}/status", json={"status": "completed"})
            # A finished task's stream replays and ends, so the whole SSE session is traced.
            body = (await client.get(f"/tasks/{tid}/events")).text
            assert "taskcast.done" in body
    sentry_sdk.flush()
    seen = [
        (t.get("transaction"), t.get("request", {}).get("method"), t["contexts"]["trace"]["op"])
        for t in transactions
    ]
    print(json.dumps(seen))


asyncio.run(main())
