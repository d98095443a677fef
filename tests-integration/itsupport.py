"""Helpers for the cross-package tests: a `taskcast start` subprocess and free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx

# Alone, a server here answers /health 1-2 s after it is started; beside other work on a
# two-core machine one took over 20 s. A deadline costs time only when a start really
# fails, so it scales with the slowest start seen in this run and is never under 60 s.
_slowest_start = 0.0


def startup_deadline() -> float:
    """Seconds to wait for a server to answer: 4x the slowest start so far, at least 60."""
    return max(60.0, 4 * _slowest_start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A `taskcast start` subprocess."""

    args: list[str]
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float | None = None) -> Server:
        global _slowest_start
        env = {**os.environ, **self.env}
        cmd = [sys.executable, "-m", "taskcast.cli", "start", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started = time.monotonic()
        deadline = started + (startup_deadline() if timeout is None else timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"server exited with {self.proc.returncode}: {out}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    _slowest_start = max(_slowest_start, time.monotonic() - started)
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not become healthy")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid
