"""The `--workers` supervisor never waits forever for a worker that does not stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import uvicorn

from taskcast.cli._serve import Supervisor

# Child programs: argv[1] is a file written once the SIGTERM handler is in place.
_IGNORES_SIGTERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").close()
time.sleep(60)
"""

_STOPS_ON_SECOND_SIGTERM = """
import signal, sys, time
hits = []
signal.signal(signal.SIGTERM, lambda *_: hits.append(1))
open(sys.argv[1], "w").close()
while len(hits) < 2:
    time.sleep(0.01)
with open(sys.argv[2], "w") as f:
    f.write(str(len(hits)))
"""


class _Child:
    """A worker as the supervisor handles one (``multiprocessing.Process``'s methods), run as
    a fresh interpreter: a forked copy of the test process could inherit a lock held by one
    of its threads and never get to run."""

    def __init__(self, program: str, *args: str) -> None:
        self._popen = subprocess.Popen([sys.executable, "-c", program, *args])

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        self._popen.kill()


def _supervised(tmp_path: Path, program: str, *args: str) -> tuple[Supervisor, _Child]:
    config = uvicorn.Config(app="taskcast.cli._app:build_app", factory=True)
    supervisor = Supervisor(config, sockets=[], grace_seconds=2.0)
    ready = tmp_path / "ready"
    child = _Child(program, str(ready), *args)
    supervisor.processes.append(SimpleNamespace(process=child))  # type: ignore[arg-type]
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert time.monotonic() < deadline, "the child never installed its handler"
        assert child.is_alive(), "the child exited early"
        time.sleep(0.01)
    return supervisor, child


def test_a_stuck_worker_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    supervisor, child = _supervised(tmp_path, _IGNORES_SIGTERM)
    supervisor.join_all()
    assert not child.is_alive()
    assert child.exitcode == -signal.SIGKILL


def test_a_worker_that_missed_the_first_sigterm_gets_another(tmp_path: Path) -> None:
    record = tmp_path / "hits"
    supervisor, child = _supervised(tmp_path, _STOPS_ON_SECOND_SIGTERM, str(record))
    child._popen.send_signal(signal.SIGTERM)  # the supervisor's own first SIGTERM
    supervisor.join_all()
    # It stopped by itself after the supervisor's second SIGTERM, not by the final kill.
    assert record.read_text() == "2"
    assert child.exitcode == 0
