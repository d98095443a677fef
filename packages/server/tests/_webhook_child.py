"""A Taskcast server on SQLite with webhooks, run as a child process by the restart test.

Usage: python _webhook_child.py DB_PATH. Prints the port once serving.
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn

from taskcast.core import TaskEngine, WebhookRetry
from taskcast.server import WebhookSettings, create_app
from taskcast.sqlite import SQLiteStore


async def main(path: str) -> None:
    engine = TaskEngine(short_term=SQLiteStore(path))
    settings = WebhookSettings(
        allow_private=True,
        poll_seconds=0.05,
        # Short lease: a delivery in flight at the kill is claimable again soon after.
        lease_seconds=2,
        default_retry=WebhookRetry(retries=20, backoff="fixed", initial_delay_ms=100, jitter=0),
    )
    app = create_app(engine, webhooks=settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes no started event
        await asyncio.sleep(0.01)
    print(server.servers[0].sockets[0].getsockname()[1], flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
