"""The `--workers` supervisor never waits forever for a worker that does not stop."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import uvicorn

from taskcast.cli._serve import Supervisor


def _ignores_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)


def _stops_on_second_sigterm(record: str) -> None:
    hits = []
    signal.signal(signal.SIGTERM, lambda *_: hits.append(1))
    while len(hits) < 2:
        time.sleep(0.01)
    with open(record, "w") as f:
        f.write(str(len(hits)))


def _supervisor(target: Any, *args: object) -> Supervisor:
    config = uvicorn.Config(app="taskcast.cli._app:build_app", factory=True)
    supervisor = Supervisor(config, sockets=[], grace_seconds=2.0)
    ctx = multiprocessing.get_context("fork")
    process = ctx.Process(target=target, args=args)
    process.start()
    supervisor.processes.append(SimpleNamespace(process=process))  # type: ignore[arg-type]
    return supervisor


def test_a_stuck_worker_is_killed_after_the_grace_period() -> None:
    supervisor = _supervisor(_ignores_sigterm)
    time.sleep(0.2)  # let the child install its handler
    supervisor.join_all()
    (worker,) = supervisor.processes
    assert not worker.process.is_alive()
    assert worker.process.exitcode == -signal.SIGKILL


def test_a_worker_that_missed_the_first_sigterm_gets_another(tmp_path: Path) -> None:
    record = tmp_path / "hits"
    supervisor = _supervisor(_stops_on_second_sigterm, str(record))
    time.sleep(0.2)
    (worker,) = supervisor.processes
    assert worker.process.pid is not None
    os.kill(worker.process.pid, signal.SIGTERM)  # the supervisor's own first SIGTERM
    supervisor.join_all()
    # It stopped by itself after the supervisor's second SIGTERM, not by the final kill.
    assert record.read_text() == "2"
    assert worker.process.exitcode != -signal.SIGKILL
