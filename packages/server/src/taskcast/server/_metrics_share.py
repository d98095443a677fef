"""``GET /metrics`` for several processes serving one port (``taskcast start --workers N``).

Each scrape reaches one process at random, so process-local counters would jump between
processes' values from one scrape to the next and ``rate()`` would read every jump down as
a counter reset. Labelling each process's series does not help either: a scrape shows only
the series of the process it reached, so every series has gaps. Instead every process
writes a snapshot of its samples to a directory the processes share, and the process a
scrape reaches answers the aggregate of all snapshots:

- counters and histograms are summed over every process that ever wrote one, including
  processes that have stopped or died, so the totals never go down when a worker is
  replaced (prometheus_client's multiprocess mode does the same);
- gauges are summed over the live processes only (a stopped process says so in its last
  snapshot; a killed one is found dead by its process id), except the archive check's
  readings, which every process takes of the same shared store: their maximum.

A process writes its snapshot every :data:`WRITE_INTERVAL_SECONDS` and just before it
answers a scrape, so the answer is exact for the process scraped and at most that old for
the others. Files are replaced atomically (write, then rename): a reader never sees half a
file. Each process's file name carries a random part, so a new process that is given a
dead one's id starts its own file instead of resetting the dead one's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from ._metrics import Metrics, render_number

__all__ = ["WRITE_INTERVAL_SECONDS", "SharedMetrics", "aggregate"]

logger = logging.getLogger(__name__)

WRITE_INTERVAL_SECONDS = 1.0
# Gauges every process reads from the same shared store: summing would count them N times.
_MAX_GAUGES = frozenset(
    {
        "taskcast_archive_gap_tasks",
        "taskcast_archive_gap_oldest_seconds",
        "taskcast_archive_failing_oldest_seconds",
    }
)
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class SharedMetrics:
    """This process's side of a metrics directory shared with the other processes."""

    def __init__(self, metrics: Metrics, directory: str | os.PathLike[str]) -> None:
        self._metrics = metrics
        self._directory = Path(directory)
        self._pid = os.getpid()
        self.path = self._directory / f"{self._pid}-{secrets.token_hex(4)}.json"
        self._task: asyncio.Task[None] | None = None

    def write(self, *, stopped: bool = False) -> None:
        """Replace this process's snapshot with its current samples."""
        samples = dict(_samples(self._metrics.render()))
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(
            json.dumps({"pid": self._pid, "stopped": stopped, "samples": samples}),
            encoding="utf-8",
        )
        os.replace(temporary, self.path)

    def render(self) -> str:
        """The exposition of every process's samples, aggregated (this process's fresh)."""
        self.write()
        snapshots: list[dict[str, Any]] = []
        for path in self._directory.glob("*.json"):
            try:
                snapshots.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                # Removed since the listing, or not ours: the others still make an answer.
                logger.debug("skipping metrics snapshot %s", path, exc_info=True)
        return aggregate(self._metrics.render(), snapshots, self._pid)

    async def start(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        self.write()
        self._task = asyncio.create_task(self._run(), name="taskcast-metrics-share")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # The counters stay in the totals; the gauges leave with the process.
        with contextlib.suppress(OSError):
            self.write(stopped=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(WRITE_INTERVAL_SECONDS)
            try:
                self.write()
            except OSError:
                # A full or removed directory must not end the process; the next write retries.
                logger.warning("cannot write the metrics snapshot %s", self.path, exc_info=True)


def _samples(text: str) -> list[tuple[str, float]]:
    """``(series, value)`` for every sample line of an exposition."""
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out.append((series, float(value)))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process: it exists
        return True
    return True


def aggregate(local: str, snapshots: list[dict[str, Any]], own_pid: int) -> str:
    """``local`` (this process's exposition, for the families, their help and order) with
    every sample replaced by its aggregate over ``snapshots``."""
    families: list[tuple[str, list[str], list[str]]] = []  # (name, header lines, series)
    kinds: dict[str, str] = {}
    for line in local.splitlines():
        if line.startswith("# HELP "):
            families.append((line.split(" ", 3)[2], [line], []))
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            kinds[name] = kind
            families[-1][1].append(line)
        elif line:
            families[-1][2].append(line.rpartition(" ")[0])

    def family_of(series: str) -> str | None:
        name = series.split("{", 1)[0]
        if name in kinds:
            return name
        for suffix in _HISTOGRAM_SUFFIXES:
            base = name.removesuffix(suffix)
            if base != name and kinds.get(base) == "histogram":
                return base
        return None

    totals: dict[str, float] = {}
    for snapshot in snapshots:
        pid = int(snapshot.get("pid", 0))
        alive = pid == own_pid or (not snapshot.get("stopped") and _alive(pid))
        for series, value in dict(snapshot.get("samples", {})).items():
            family = family_of(series)
            if family is None:
                continue  # written by another version of the server
            if kinds[family] == "gauge":
                if not alive:
                    continue
                if family in _MAX_GAUGES:
                    totals[series] = max(totals.get(series, 0.0), float(value))
                    continue
            totals[series] = totals.get(series, 0.0) + float(value)

    extra: dict[str, list[str]] = {}
    for series in totals:
        family = family_of(series)
        if family is not None:
            extra.setdefault(family, []).append(series)
    lines: list[str] = []
    for name, header, local_series in families:
        lines.extend(header)
        known = set(local_series)
        for series in local_series + sorted(s for s in extra.get(name, []) if s not in known):
            lines.append(f"{series} {render_number(totals.get(series, 0.0))}")
    return "\n".join(lines) + "\n"
