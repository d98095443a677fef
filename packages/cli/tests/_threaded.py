"""A server built by the CLI's own factory, served by uvicorn in a thread of the test process."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import uvicorn

from taskcast.cli import TaskcastServer, build, resolve_settings


@contextmanager
def threaded_server(flags: Mapping[str, tuple[str, Any]] | None = None) -> Iterator[str]:
    """Yield the URL of a running server (memory storage unless ``flags`` say otherwise)."""
    settings = resolve_settings(flags={"storage": ("--storage", "memory"), **(flags or {})})
    built = build(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(built.app, log_config=None, lifespan="on", timeout_graceful_shutdown=1)
    # The CLI's own server class, here outside the main thread (no signal handlers).
    server = TaskcastServer(config, engine=built.engine)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        # The server froze the test process's objects at startup (freeze_startup_objects).
        gc.unfreeze()
