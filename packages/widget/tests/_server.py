"""Run an ASGI app under uvicorn on a loopback port, in a thread with its own event loop.

Streaming needs a real socket (ASGI test transports buffer whole bodies). Coroutines that
touch the app's engine (publishers) run in the server's loop through :meth:`run`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            # Streams end at once on shutdown instead of holding the test for the default.
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="widget-test-server", daemon=True)
        self._error: BaseException | None = None

    def _main(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            self._ready.set()
            await self.server.serve()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # surfaced by start()/stop()
            self._error = exc
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)
        for _ in range(500):
            if self.server.started or self._error is not None:
                break
            threading.Event().wait(0.02)
        if self._error is not None:
            raise RuntimeError("test server failed to start") from self._error
        if not self.server.started:
            raise RuntimeError("test server did not start")

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` in the server's loop and await its result from the caller's loop."""
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        if self._error is not None:
            raise RuntimeError("test server failed") from self._error
