"""How client commands print: coloured lines for people, JSON lines for machines.

rich colours only when the stream is a terminal (and honours ``NO_COLOR``/``FORCE_COLOR``),
so piped output is plain text. Lines are never wrapped: a log line stays one line.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import IO, Any

from rich.console import Console
from rich.text import Text

__all__ = ["Output", "format_event", "short_id", "status_style"]

_LEVEL_STYLES = {"debug": "dim", "info": "green", "warn": "yellow", "error": "bold red"}
_STATUS_STYLES = {
    "pending": "dim",
    "assigned": "cyan",
    "running": "blue",
    "paused": "yellow",
    "blocked": "yellow",
    "completed": "green",
    "failed": "bold red",
    "timeout": "red",
    "cancelled": "magenta",
}


def status_style(status: str) -> str:
    return _STATUS_STYLES.get(status, "")


def clock(timestamp_ms: int) -> str:
    """``HH:MM:SS`` in local time."""
    return datetime.fromtimestamp(timestamp_ms / 1000).strftime("%H:%M:%S")


def short_id(task_id: str) -> str:
    """A short, distinctive form of a task id for ``taskcast tail``.

    The original shows the first 7 characters. Our ids are ULIDs, whose first 10 characters
    are the creation time, identical for tasks created together; their last 8 characters
    (the random part, incremented within a millisecond) tell them apart. Other ids keep the
    original's first 7 characters.
    """
    if len(task_id) == 26 and task_id.isalnum():
        return task_id[-8:]
    return task_id[:7]


def format_event(event: Any, *, prefix: str | None = None) -> Text:
    """``[HH:MM:SS] <type padded 16> <level padded 5> <data as JSON>`` (the original's line).

    ``event`` is anything with ``timestamp``, ``type``, ``level`` and ``data``.
    """
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    line = Text()
    if prefix is not None:
        line.append(prefix, style="bold cyan")
        line.append(" ")
    line.append(f"[{clock(event.timestamp)}]", style="dim")
    line.append(" ")
    line.append(f"{event.type:<16}", style="magenta" if event.type.startswith("taskcast") else "")
    line.append(" ")
    line.append(f"{event.level:<5}", style=_LEVEL_STYLES.get(event.level, ""))
    line.append(" ")
    line.append(data)
    return line


class Output:
    """Where a client command writes.

    Args:
        json_mode: Machine output: :meth:`json` lines only on stdout (people's lines are
            suppressed); errors still go to stderr.
        file: Standard output (default: ``sys.stdout`` at the time of writing).
        err_file: Standard error (default: ``sys.stderr``).
    """

    def __init__(
        self,
        *,
        json_mode: bool = False,
        file: IO[str] | None = None,
        err_file: IO[str] | None = None,
    ) -> None:
        self.json_mode = json_mode
        self._out = Console(file=file, highlight=False, markup=False, emoji=False, soft_wrap=True)
        self._err = Console(
            file=err_file,
            stderr=err_file is None,
            highlight=False,
            markup=False,
            emoji=False,
            soft_wrap=True,
        )

    def line(self, text: Text | str) -> None:
        """A line for people (nothing in JSON mode)."""
        if not self.json_mode:
            self._out.print(text)

    def json(self, data: Any) -> None:
        """One JSON object on one line (JSON mode only)."""
        if self.json_mode:
            self._out.file.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
            self._out.file.write("\n")
            self._out.file.flush()

    def error(self, message: str) -> None:
        self._err.print(Text(message, style="red"))

    def note(self, message: str) -> None:
        """A one-line notice on stderr, in JSON mode too (stdout stays machine-readable)."""
        self._err.print(Text(message, style="yellow"))
