"""The application factory for uvicorn's worker processes.

``taskcast start --workers N`` hands uvicorn the import string
``taskcast.cli._app:build_app`` with ``factory=True``; each worker process calls it and
builds its own engine and application from the resolved settings, passed as JSON in the
``TASKCAST_CLI_SETTINGS`` environment variable. The same factory works under uvicorn's own
command, reading the environment and the configuration file as ``taskcast start`` does::

    TASKCAST_STORAGE=redis TASKCAST_REDIS_URL=redis://localhost:6379/0 \\
        uvicorn --factory taskcast.cli._app:build_app --workers 4 --port 3721

Graceful shutdown in a worker: uvicorn installs its SIGINT/SIGTERM handlers before it loads
the application, so the factory chains a handler in front of them that first asks every open
SSE stream to end (a ``retry:`` hint, no ``taskcast.done``), then lets uvicorn's handler run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from taskcast.core import TaskEngine

from ._build import build
from ._files import load_config_file
from ._resolve import file_layer, load_settings
from ._serve import METRICS_DIR_ENV, SETTINGS_ENV, end_streams_until, freeze_startup_objects
from ._settings import TaskcastSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["build_app", "settings_from_env"]


def settings_from_env() -> TaskcastSettings:
    """The settings a parent ``taskcast start`` put in ``TASKCAST_CLI_SETTINGS``, or else the
    ones the environment and the configuration file give (as ``taskcast start`` with no flags).
    """
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        # Started by uvicorn directly: resolve as `taskcast start` would without flags.
        return load_settings(environ=os.environ)
    settings = TaskcastSettings.from_json(raw)
    path = settings.config_file
    if path is not None and Path(path).suffix == ".py":
        # Python objects (hooks, an authenticator) do not travel as JSON: each worker runs
        # the configuration module again to get its own.
        loaded = load_config_file(Path(path), os.environ)
        extras = file_layer(loaded.path, loaded.data).data.get("extras", {})
        settings = settings.model_copy(update={"extras": extras})
    return settings


def build_app() -> FastAPI:
    """Build this process's engine and application from :func:`settings_from_env`."""
    built = build(settings_from_env(), metrics_dir=os.environ.get(METRICS_DIR_ENV))
    _chain_shutdown_signals(built.engine)
    _freeze_after_startup(built.app)
    return built.app


def _freeze_after_startup(app: FastAPI) -> None:
    # A worker's engine starts in the application's lifespan, after this factory returns.
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with started(app) as state:
            freeze_startup_objects()
            yield state

    app.router.lifespan_context = lifespan


_pending: set[asyncio.Task[None]] = set()


def _chain_shutdown_signals(engine: TaskEngine) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    done = asyncio.Event()

    def start_ending() -> None:
        if not _pending:
            task = loop.create_task(end_streams_until(engine, done))
            _pending.add(task)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue
        signal.signal(sig, _chained(loop, start_ending, previous))


def _chained(
    loop: asyncio.AbstractEventLoop,
    first: Callable[[], None],
    then: Callable[[int, FrameType | None], Any],
) -> Callable[[int, FrameType | None], None]:
    def handler(sig: int, frame: FrameType | None) -> None:
        # A signal handler may interrupt the loop anywhere: hand the work to the loop.
        loop.call_soon_threadsafe(first)
        then(sig, frame)

    return handler
