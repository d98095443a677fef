"""Errors the command reports as one line on stderr (never a traceback).

::

    TaskcastError (taskcast.core)
    ├── ConfigError (UsageError)
    │   └── SettingsError          a configuration value is wrong; exit code 2
    │       └── ConfigFileError    ... and it came from a file (names the file and the key)
    └── StartupError               the server could not start (port in use, bad db path); exit 1
"""

from __future__ import annotations

from pathlib import Path

from taskcast.core import ConfigError, TaskcastError

__all__ = ["ConfigFileError", "SettingsError", "StartupError"]


class SettingsError(ConfigError):
    """A configuration value is wrong; the message says where it came from."""

    exit_code = 2


class ConfigFileError(SettingsError):
    """A configuration file cannot be read or holds a wrong value.

    Attributes:
        path: The file.
        key: The dotted key at fault, or None when the file as a whole is wrong.
    """

    def __init__(self, path: Path, key: str | None, problem: str) -> None:
        where = f"{_display(path)}: {key}" if key else _display(path)
        super().__init__(f"config error in {where}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


class StartupError(TaskcastError):
    """The server cannot start with this configuration and environment."""

    exit_code = 1


def _display(path: Path) -> str:
    """Paths under the working directory read as ``./name``; others stay as given."""
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return str(path)
    return f"./{rel.as_posix()}"
