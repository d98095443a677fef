"""Running the server: one process we own, or several under uvicorn's supervisor.

Graceful shutdown (architecture §7): on SIGINT/SIGTERM the listening socket closes, every open
SSE stream is asked to end (it sends a ``retry:`` hint and closes *without* ``taskcast.done``,
so clients reconnect elsewhere and resume), uvicorn waits up to ``shutdown_timeout_seconds``
for requests in flight, and the engine flushes and closes its stores. The process then exits
with status 0: a requested stop is not a failure.

We subclass :class:`uvicorn.Server` instead of patching uvicorn's globals (what sse-starlette
does): the server object is ours, so its hooks are too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import math
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from types import FrameType

import uvicorn
from uvicorn._compat import asyncio_run
from uvicorn.supervisors import Multiprocess

from taskcast.core import TaskcastError, TaskEngine

from ._build import build, check_db_path, describe_storage
from ._connections import (
    ConnectionLimits,
    LimitedConfig,
    default_max_connections,
    raise_open_files_limit,
)
from ._errors import SettingsError, StartupError
from ._settings import TaskcastSettings
from ._startup import wait_for_dependencies

__all__ = [
    "METRICS_DIR_ENV",
    "SETTINGS_ENV",
    "TaskcastServer",
    "bind_socket",
    "connection_limits",
    "freeze_startup_objects",
    "serve",
]

logger = logging.getLogger("taskcast.cli")

SETTINGS_ENV = "TASKCAST_CLI_SETTINGS"
"""Environment variable carrying the resolved settings (JSON) to worker processes."""
METRICS_DIR_ENV = "TASKCAST_CLI_METRICS_DIR"
"""Environment variable naming the directory the worker processes share their metrics in
(``ServerConfig.metrics_dir``), so ``/metrics`` answers for all of them."""

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def freeze_startup_objects() -> None:
    """Exempt everything built so far from the cyclic garbage collector's later passes.

    The first full collection after startup walked every object the imports, the
    application and the stores had made (~90,000) and held the event loop for 50-70 ms
    in the middle of serving: one publish stalled and the ~13 events queued behind it were
    late to every subscriber (memory backend, S2 max latency 65-75 ms in every run, p99
    +30%). Frozen, those objects are never walked again; what is made while serving is
    collected as before. ``gc`` is process-wide, so only the process owner (this CLI, not
    the libraries) may do this.
    """
    gc.collect()
    gc.freeze()
    logger.debug("%d startup objects exempted from garbage collection", gc.get_freeze_count())


async def end_streams_until(engine: TaskEngine, done: asyncio.Event) -> None:
    """Ask every open stream to end, again and again until ``done``.

    Requests accepted just before the listener closed may subscribe after the first call; a
    short repeat catches them instead of leaving them open until the graceful timeout.
    """
    while True:
        engine.hub.shutdown()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.05)
        if done.is_set():
            return


class TaskcastServer(uvicorn.Server):
    """uvicorn's server with Taskcast's shutdown: streams end first, then requests drain.

    Args:
        config: The uvicorn configuration (its app serves ``engine``).
        engine: The engine behind the app; opened before serving and closed after.
        on_started: Called with the bound port once the server accepts connections.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        engine: TaskEngine,
        on_started: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.engine = engine
        self._on_started = on_started
        self._port: int | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the captured signal after shutting down, so that the default
        # action runs; for SIGTERM that kills the process with -15. A stop we carried out
        # gracefully is a success, so the handlers are restored but nothing is re-raised.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            logger.info("stopping (signal %s); open streams are told to reconnect", sig)
        super().handle_exit(sig, frame)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await self.engine.start()
        try:
            await super().serve(sockets)
        finally:
            await self.engine.stop()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        freeze_startup_objects()
        if self._on_started is not None:
            listeners = sockets or [s for srv in self.servers for s in (srv.sockets or ())]
            self._on_started(int(listeners[0].getsockname()[1]))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first, so that no new stream opens after the streams are ended.
        for server in getattr(self, "servers", ()):
            server.close()
        done = asyncio.Event()
        ender = asyncio.create_task(end_streams_until(self.engine, done))
        try:
            await super().shutdown(sockets)
        finally:
            done.set()
            await ender


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so a taken port is a clear one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        if exc.errno == errno.EADDRINUSE:
            reason = "the address is already in use (is another server running?)"
        raise StartupError(f"cannot listen on {_address(host, port)}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connection_limits(settings: TaskcastSettings) -> ConnectionLimits:
    """The limits on connections, after raising this process's open files limit (which the
    worker processes of ``--workers N`` inherit)."""
    descriptor_limit = raise_open_files_limit()
    limits = settings.limits
    max_connections = limits.max_connections or default_max_connections(descriptor_limit)
    logger.debug(
        "at most %d open connections per process (open files limit %s)",
        max_connections,
        descriptor_limit,
    )
    return ConnectionLimits(
        max_header_bytes=limits.max_header_bytes,
        max_headers=limits.max_headers,
        max_url_bytes=limits.max_url_bytes,
        header_timeout_seconds=limits.header_timeout_seconds,
        max_connections=max_connections,
        descriptor_limit=descriptor_limit,
    )


def _uvicorn_config(
    app: object, settings: TaskcastSettings, log_config: dict[str, object], **extra: object
) -> uvicorn.Config:
    return LimitedConfig(
        app,
        connection_limits=connection_limits(settings),
        host=settings.host,
        port=settings.port,
        log_config=log_config,
        log_level=None,
        access_log=settings.access_log,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_seconds),
        server_header=False,
        lifespan="on",
        **extra,
    )


def serve(
    settings: TaskcastSettings,
    *,
    log_config: dict[str, object],
    announce: Callable[[str], None],
) -> None:
    """Run the server until SIGINT/SIGTERM.

    Raises:
        StartupError: The port, the database path or a storage backend is not usable.
        SettingsError: The settings cannot work together (e.g. several processes on a
            process-local broadcast).
    """
    if settings.storage == "sqlite":
        assert settings.db_path is not None
        check_db_path(settings.db_path)
    # Before anything opens a pool: a dependency still starting is waited for (bounded).
    wait_for_dependencies(settings)
    if settings.postgres.auto_migrate and settings.long_term_url:
        _migrate(settings.long_term_url, settings.postgres.schema_name)
    if settings.processes > 1:
        _serve_processes(settings, log_config=log_config, announce=announce)
        return
    try:
        built = build(settings)
    except TaskcastError:
        raise
    except Exception as exc:
        logger.debug("building the application failed", exc_info=True)
        raise StartupError(f"cannot start: {_one_line(exc)}") from None
    sock = bind_socket(settings.host, settings.port)
    config = _uvicorn_config(built.app, settings, log_config)
    storage = describe_storage(settings)

    def started(port: int) -> None:
        announce(f"taskcast listening on {_url(settings.host, port)} (storage: {storage})")

    server = TaskcastServer(config, engine=built.engine, on_started=started)
    try:
        asyncio_run(server.serve(sockets=[sock]), loop_factory=config.get_loop_factory())
    except SystemExit as exc:  # pragma: no cover - uvicorn's own exit on a lifespan failure
        # uvicorn exits with status 3 when the application's lifespan startup fails (the
        # engine is already open by then, so only an application hook can cause it); it
        # has logged the reason already.
        raise StartupError("the application failed to start (see the log above)") from exc
    except Exception as exc:
        logger.debug("startup failed", exc_info=True)
        raise StartupError(f"cannot start: {_one_line(exc)}") from None
    finally:
        sock.close()


def _migrate(url: str, schema: str | None) -> None:
    from taskcast.postgres import apply_migrations

    try:
        applied = asyncio.run(apply_migrations(url, schema))
    except Exception as exc:
        raise StartupError(f"cannot migrate the PostgreSQL database: {_one_line(exc)}") from None
    for migration in applied:
        logger.info("applied migration %s", migration.label)


def _url(host: str, port: int) -> str:
    shown = "[" + host + "]" if ":" in host else host
    return f"http://{shown}:{port}"


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, TaskcastError):
        return exc.message
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _serve_processes(
    settings: TaskcastSettings,
    *,
    log_config: dict[str, object],
    announce: Callable[[str], None],
) -> None:
    if settings.admin_api and not settings.admin_token:
        # One token for every process, not one per process.
        settings = settings.model_copy(update={"admin_token": secrets.token_urlsafe(32)})
        logger.warning("[taskcast] Admin token (auto-generated): %s", settings.admin_token)
    # Build once here (then discard) so that a wrong setting is one clear error here
    # instead of N crashing workers.
    engine = build(settings).engine
    if not (engine.broadcast.shared_across_processes and engine.short_term.shared_across_processes):
        raise SettingsError(
            f"--workers {settings.processes} needs storage shared across processes (redis): with "
            f"storage {settings.storage} a subscriber in one process would never see events "
            "published in another"
        )
    # Open and close the stores once here, so that an unreachable backend is one clear error
    # instead of N crashing workers.
    try:
        asyncio.run(_probe(engine))
    except Exception as exc:
        raise StartupError(f"cannot start: {_one_line(exc)}") from None
    sock = bind_socket(settings.host, settings.port)
    os.environ[SETTINGS_ENV] = settings.to_json()
    # Made and removed by this process, which outlives every worker.
    metrics_dir = (
        tempfile.TemporaryDirectory(prefix="taskcast-metrics-") if settings.metrics else None
    )
    if metrics_dir is not None:
        os.environ[METRICS_DIR_ENV] = metrics_dir.name
    config = _uvicorn_config(
        "taskcast.cli._app:build_app",
        settings,
        log_config,
        factory=True,
        workers=settings.processes,
    )
    port = int(sock.getsockname()[1])
    announce(
        f"taskcast listening on {_url(settings.host, port)} "
        f"(storage: {describe_storage(settings)}; {settings.processes} processes)"
    )
    try:
        Supervisor(
            config, sockets=[sock], grace_seconds=settings.shutdown_timeout_seconds + 10
        ).run()
    finally:
        sock.close()
        os.environ.pop(SETTINGS_ENV, None)
        os.environ.pop(METRICS_DIR_ENV, None)
        if metrics_dir is not None:
            metrics_dir.cleanup()
    sys.stderr.flush()


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor with a stop deadline.

    uvicorn joins its workers without a timeout, so one worker that never finishes its
    shutdown kept ``taskcast start --workers N`` from ever exiting. (The case seen, a
    worker's webhook loop going on after its cancellation was lost on Python 3.11, is fixed
    in the dispatcher, whose stop is bounded now; this deadline is the safety net for any
    other.) Here a worker still alive is sent SIGTERM again each second (one that was still
    starting may have missed the first) and killed once ``grace_seconds`` have passed.
    Nothing acknowledged is lost by the kill: commits are in Redis before any answer, and
    archive writes still queued are restored by the next start's reconcile.
    """

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], *, grace_seconds: float
    ):
        super().__init__(config, sockets=sockets)
        self.grace_seconds = grace_seconds

    def join_all(self) -> None:
        deadline = time.monotonic() + self.grace_seconds
        for worker in self.processes:
            process = worker.process
            while process.is_alive() and time.monotonic() < deadline:
                process.join(timeout=min(1.0, max(deadline - time.monotonic(), 0.0)))
                if process.is_alive() and process.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGTERM)
            if process.is_alive():
                logger.error(
                    "worker %s did not stop within %.0f s; killing it",
                    process.pid,
                    self.grace_seconds,
                )
                process.kill()
                process.join()


async def _probe(engine: TaskEngine) -> None:
    await engine.start()
    await engine.stop()
