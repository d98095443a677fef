"""The worker-process application factory and what it builds."""

from __future__ import annotations

import gc
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskcast.cli import SettingsError, build, build_engine, resolve_settings
from taskcast.cli._app import build_app, settings_from_env
from taskcast.cli._serve import SETTINGS_ENV
from taskcast.core import MemoryShortTermStore, TaskcastHooks
from taskcast.sqlite import SQLiteStore

from ._server import env_for

pytestmark = pytest.mark.anyio


def test_settings_travel_as_json(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = resolve_settings(
        flags={"storage": ("--storage", "memory"), "port": ("--port", 4321)},
        environ={"TASKCAST_JWT_SECRET": "s"},
    )
    monkeypatch.setenv(SETTINGS_ENV, settings.to_json())
    assert settings_from_env() == settings
    assert settings_from_env().auth.jwt.secret == "s"


def test_without_json_the_factory_resolves_env_and_file(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / "taskcast.config.toml").write_text('storage = "memory"\nport = 4444\n')
    monkeypatch.setenv("TASKCAST_RETRY_MS", "77")
    settings = settings_from_env()
    assert (settings.storage, settings.port, settings.retry_ms) == ("memory", 4444, 77)


def test_python_config_objects_are_rebuilt_in_each_worker(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / "taskcast.config.py").write_text(
        "from taskcast.core import TaskcastHooks\n"
        "config = {'storage': 'memory', 'hooks': [TaskcastHooks()]}\n"
    )
    monkeypatch.setenv(SETTINGS_ENV, settings_from_env().to_json())
    settings = settings_from_env()
    assert isinstance(settings.extras["hooks"][0], TaskcastHooks)
    engine = build_engine(settings)
    assert isinstance(engine.short_term, MemoryShortTermStore)


def test_hooks_must_be_taskcast_hooks(clean_env: Path) -> None:
    path = clean_env / "taskcast.config.py"
    path.write_text("config = {'storage': 'memory', 'hooks': TaskcastHooks()}\n"
                    "from taskcast.core import TaskcastHooks\n")  # fmt: skip
    single = resolve_settings(file=(path, {"storage": "memory", "hooks": TaskcastHooks()}))
    assert build_engine(single) is not None
    for bad in ([1], "nope"):
        settings = resolve_settings(file=(path, {"storage": "memory", "hooks": bad}))
        with pytest.raises(SettingsError, match="hooks: expected TaskcastHooks instances"):
            build_engine(settings)


def test_build_uses_the_settings(clean_env: Path, tmp_path: Path) -> None:
    settings = resolve_settings(
        flags={"db_path": ("--db-path", tmp_path / "x.db")},
        file=(
            clean_env / "f.yaml",
            {
                "cors": ["https://a"],
                "limits": {
                    "maxBatch": 5,
                    "maxIdChars": 64,
                    "maxNameChars": 32,
                    "queueLimit": 6,
                    "eventCacheBytes": 4096,
                    "defaultPageSize": 2,
                    "maxPageSize": 3,
                },
                "retryMs": 9,
                "writeTimeoutSeconds": 12,
            },
        ),
    )
    built = build(settings)
    assert isinstance(built.engine.short_term, SQLiteStore)
    assert built.engine.short_term.event_cache.max_bytes == 4096
    assert built.engine.limits.max_batch == 5
    assert (built.engine.limits.max_id_chars, built.engine.limits.max_name_chars) == (64, 32)
    config = built.app.state.config
    assert config.cors_origins == ("https://a",)
    assert (config.max_batch, config.queue_limit, config.retry_ms) == (5, 6, 9)
    assert config.write_timeout_seconds == 12
    assert (config.default_page_size, config.max_page_size) == (2, 3)
    assert built.app.state.engine is built.engine


async def test_build_app_in_a_running_loop_chains_signal_handlers(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKCAST_STORAGE", "memory")
    seen: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, lambda sig, frame: seen.append(sig))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        app = build_app()
        engine = app.state.engine
        await engine.start()
        sub = await engine.hub.open("t1")
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]  # the previous handler still runs
        frames = await sub.get(5)
        assert frames == []
        assert sub.closing
        await engine.hub.close(sub)
        await engine.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def test_worker_lifespan_freezes_startup_objects_once_the_engine_runs(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKCAST_STORAGE", "memory")
    app = build_app()
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
            assert frozen > 1000  # the imports, the app and the engine
            # Served requests still work on a frozen process.
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                created = await client.post("/tasks", json={})
                assert created.status_code == 201
    finally:
        gc.unfreeze()


def test_factory_under_plain_uvicorn_ends_streams_on_sigterm(tmp_path: Path) -> None:
    env = env_for(tmp_path, {"TASKCAST_STORAGE": "memory", "TASKCAST_RETRY_MS": "4321"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "taskcast.cli._app:build_app",
         "--port", "0", "--timeout-graceful-shutdown", "15"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    url = ""
    deadline = time.monotonic() + 20
    while not url and time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"running on (http://\S+)", line)
        if match:
            url = match.group(1)
        elif not line:
            break
    assert url, proc.communicate()
    with httpx.Client(base_url=url, timeout=10) as client:
        task = client.post("/tasks", json={}).json()
        client.patch(f"/tasks/{task['id']}/status", json={"status": "running"})
        body = b""
        with client.stream("GET", f"/tasks/{task['id']}/events") as response:
            chunks = response.iter_raw()
            while b"taskcast:status" not in body:
                body += next(chunks)
            proc.send_signal(signal.SIGTERM)
            for chunk in chunks:
                body += chunk
    proc.communicate(timeout=20)
    assert b"retry: 4321" in body.split(b"taskcast:status", 1)[1]
    assert b"taskcast.done" not in body


def test_build_app_outside_a_loop_or_main_thread_leaves_signals_alone(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    monkeypatch.setenv("TASKCAST_STORAGE", "memory")
    before = signal.getsignal(signal.SIGTERM)
    assert build_app().state.engine is not None
    apps: list[object] = []
    thread = threading.Thread(target=lambda: apps.append(build_app()))
    thread.start()
    thread.join()
    assert len(apps) == 1
    assert signal.getsignal(signal.SIGTERM) is before


def test_db_path_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskcast.cli import StartupError
    from taskcast.cli._build import check_db_path

    check_db_path(tmp_path / "new" / "dir" / "t.db")
    assert (tmp_path / "new" / "dir").is_dir()
    with pytest.raises(StartupError, match=r"the database path .* is a directory"):
        check_db_path(tmp_path / "new")
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(StartupError, match=r"is not writable \(permission denied\)$"):
        check_db_path(tmp_path / "new" / "dir" / "t.db")


def test_sentry_dsn_adds_sentry_hooks(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import taskcast.sentry

    calls: list[str] = []
    hooks = TaskcastHooks(on_task_created=lambda task: None)

    def fake_setup(dsn: str, **kwargs: Any) -> TaskcastHooks:
        calls.append(dsn)
        return hooks

    monkeypatch.setattr(taskcast.sentry, "setup_sentry", fake_setup)
    settings = resolve_settings(
        flags={"storage": ("-s", "memory")}, environ={"SENTRY_DSN": "https://k@sentry.example/1"}
    )
    engine = build_engine(settings)
    assert calls == ["https://k@sentry.example/1"]
    assert engine.hooks.wants("on_task_created")


def test_sentry_section_sets_dsn_and_options(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import taskcast.sentry

    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_setup(dsn: str, **kwargs: Any) -> TaskcastHooks:
        calls.append((dsn, kwargs))
        return TaskcastHooks()

    monkeypatch.setattr(taskcast.sentry, "setup_sentry", fake_setup)
    sentry = {
        "dsn": "https://k@sentry.example/2",
        "environment": "staging",
        "tracesSampleRate": 0.5,
        "captureTaskTimeouts": False,
        "includeParams": True,
    }
    settings = resolve_settings(
        flags={"storage": ("-s", "memory")}, file=(clean_env / "c.yaml", {"sentry": sentry})
    )
    build_engine(settings)
    ((dsn, kwargs),) = calls
    assert dsn == "https://k@sentry.example/2"
    assert kwargs["environment"] == "staging" and kwargs["traces_sample_rate"] == 0.5
    options = kwargs["options"]
    assert options.capture_task_timeouts is False and options.include_params is True
    assert options.capture_task_failures is True
    # SENTRY_DSN wins over the file; enabled: false turns Sentry off whatever the DSN.
    calls.clear()
    both = resolve_settings(
        flags={"storage": ("-s", "memory")},
        environ={"SENTRY_DSN": "https://k@sentry.example/3"},
        file=(clean_env / "c.yaml", {"sentry": sentry}),
    )
    build_engine(both)
    assert [dsn for dsn, _ in calls] == ["https://k@sentry.example/3"]
    calls.clear()
    off = resolve_settings(
        flags={"storage": ("-s", "memory")},
        environ={"SENTRY_DSN": "https://k@sentry.example/3"},
        file=(clean_env / "c.yaml", {"sentry": {"enabled": False}}),
    )
    build_engine(off)
    assert calls == []
    assert off.redacted()["sentry"]["dsn"] is None
    assert settings.redacted()["sentry"]["dsn"] == "https://k@sentry.example/2"
