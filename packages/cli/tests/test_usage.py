"""Every command's help, and every usage error, as a newcomer meets them.

Help shows no internal type names (``<str>``, ``<list[str]>``, ``<int range>``) and no
truncated descriptions; every error is the one documented ``taskcast: ...`` line, exit 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from taskcast.cli import app

runner = CliRunner()


def _paths(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _paths(sub, (*path, name))


COMMANDS = list(_paths(typer.main.get_command(app)))


def test_every_command_is_listed() -> None:
    names = {" ".join(path) for path in COMMANDS}
    assert {"", "start", "logs", "tail", "tasks list", "node add", "migrate", "doctor"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "taskcast")
def test_help_shows_no_internal_type_names_and_no_truncation(
    path: tuple[str, ...], clean_env: Path
) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith("Usage: taskcast")
    for line in text.splitlines()[1:]:
        assert "<" not in line and ">" not in line, line
        # click shortens a command's description to fit and marks it with "...".
        assert not line.rstrip().endswith("..."), line


ERRORS = [
    (["--port", "abc"], 'taskcast: invalid value for --port: expected an integer, got "abc"'),
    (["start", "--workers", "x"], "taskcast: invalid value for --workers: expected an integer"),
    (["start", "--bogus"], "taskcast: no such option: --bogus"),
    (["nosuch"], "taskcast: no such command 'nosuch'"),
    (["logs"], "taskcast: missing argument TASK_ID (see 'taskcast logs -h')"),
    (["node", "add", "x"], "taskcast: missing option --url (see 'taskcast node add -h')"),
    (["node", "use"], "taskcast: missing argument NAME"),
    (
        ["tasks", "list", "--limit", "0"],
        "taskcast: invalid value for --limit: expected an integer of at least 1, got 0",
    ),
    (["tasks", "list", "extra"], "taskcast: got unexpected extra argument"),
    (["tasks", "inspect", "x", "-e", "-1"], "taskcast: invalid value for --events"),
    (["tail", "-n", "0"], "taskcast: invalid value for --count"),
    (
        ["ping", "--timeout", "0"],
        "taskcast: invalid value for --timeout: expected a number greater",
    ),
    (["doctor", "--timeout", "-1"], "taskcast: invalid value for --timeout"),
    (["ping", "--timeout", "nan"], "taskcast: invalid value for --timeout"),
    (["ping", "--timeout", "soon"], "taskcast: invalid value for --timeout: expected a number"),
    (["start", "--log-level", "loud"], "taskcast: invalid value for --log-level: expected debug"),
    (["start", "--storage", "mongo"], "taskcast: invalid value for --storage"),
    (["tasks", "create", "--params", "{"], "taskcast: --params is not JSON"),
    (["tasks", "create", "--ttl", "0"], "taskcast: invalid value for --ttl"),
    (["node", "add", "x", "--url", "u", "--token-type", "y"], "taskcast: --token-type must be"),
    (["start", "--port"], "taskcast: option '--port' requires an argument"),
]


@pytest.mark.parametrize(
    ("args", "start"), ERRORS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_every_usage_error_is_one_taskcast_line(
    args: list[str], start: str, clean_env: Path
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(start), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert "Input should" not in result.stderr  # pydantic's wording


@pytest.mark.parametrize("level", ["warn", "warning", "WARNING"])
def test_log_level_accepts_warn_and_warning(level: str, clean_env: Path) -> None:
    result = runner.invoke(app, ["start", "--log-level", level, "--print-config"])
    assert result.exit_code == 0, result.output
    assert '"logLevel": "warning"' in result.stdout or '"log_level": "warning"' in result.stdout


def test_a_group_without_a_command_shows_its_help(clean_env: Path) -> None:
    result = runner.invoke(app, ["tasks"])
    assert "Usage: taskcast tasks" in result.output
    assert "list" in result.output
