"""Run ``taskcast`` in a subprocess and talk to it (shared by the serving tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_LISTENING = re.compile(r"taskcast listening on (http://\S+)")


@dataclass
class Running:
    proc: subprocess.Popen[str]
    url: str = ""
    lines: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, str]:
        """Send ``sig``; return the exit status and everything written to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + err


def env_for(tmp: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TASKCAST_") and k not in ("SENTRY_DSN", "XDG_DATA_HOME")
    }
    env["HOME"] = str(tmp)
    env["TASKCAST_SQLITE_PATH"] = str(tmp / "data" / "taskcast.db")
    env.update(extra or {})
    return env


def command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "taskcast.cli", *args]


def start(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float = 20,
    preexec_fn: Callable[[], object] | None = None,
) -> Running:
    """Start the server and wait for its "listening" line (it binds port 0 by default).

    ``preexec_fn`` runs in the child before the server starts (e.g. to set its rlimits).
    """
    proc = subprocess.Popen(
        command(args),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
    running = Running(proc)
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    stream: IO[str] = proc.stderr
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        running.lines.append(line)
        match = _LISTENING.search(line)
        if match:
            running.url = match.group(1)
            return running
    proc.kill()
    _, err = proc.communicate()
    raise AssertionError("server did not start:\n" + "".join(running.lines) + err)


def run(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run a command that is expected to end by itself."""
    return subprocess.run(
        command(args),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
