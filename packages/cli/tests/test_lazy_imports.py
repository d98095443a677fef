"""``taskcast --version`` and ``--help`` start without the server, the stores or httpx.

Importing them took ~2 s of CPU before every command, however small. Pinned by what a fresh
interpreter has loaded after the command, not by timing it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# What a command that only prints must not load (each costs tens to hundreds of ms). Not
# pydantic itself: typer converts a subcommand's parameters with it.
HEAVY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "redis",
    "psycopg",
    "aiosqlite",
    "sqlite3",
    "yaml",
    "rich",
    "pydantic_settings",
    "taskcast.core",
    "taskcast.server",
    "taskcast.sqlite",
    "taskcast.redis",
    "taskcast.postgres",
    "taskcast.sentry",
    "taskcast.cli._settings",
    "taskcast.cli._build",
    "taskcast.cli._serve",
)

# The `taskcast` script's entry point is `from taskcast.cli import main`.
_RUN = """
import json, sys
from taskcast.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _run(args: list[str], cwd: Path) -> tuple[int, str, set[str]]:
    # Not under coverage either: the suite measures subprocesses (COVERAGE_PROCESS_*), and
    # coverage loads sqlite3 for its data file in every interpreter it starts in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKCAST_", "COVERAGE_"))}
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], done.stdout, set(report["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted(
        name for name in modules for heavy in HEAVY if name == heavy or name.startswith(heavy + ".")
    )


PRINTING = [
    (["--version"], "taskcast "),
    (["--help"], "Usage: taskcast [OPTIONS] COMMAND"),
    (["-h"], "Usage: taskcast [OPTIONS] COMMAND"),
    (["start", "--help"], "Usage: taskcast start"),
    (["tasks", "list", "--help"], "Usage: taskcast tasks list"),
    (["export", "--help"], "Usage: taskcast export"),
    (["node", "--help"], "Usage: taskcast node"),
    (["completion", "bash"], "_TASKCAST_COMPLETE"),
]


@pytest.mark.parametrize(
    ("args", "shows"), [pytest.param(*case, id=" ".join(case[0])) for case in PRINTING]
)
def test_printing_commands_load_no_server_store_or_http_client(
    args: list[str], shows: str, tmp_path: Path
) -> None:
    code, out, modules = _run(args, tmp_path)
    assert code == 0, out
    assert shows in out
    assert _heavy(modules) == []


def test_a_command_that_needs_them_still_loads_them(clean_env: Path) -> None:
    # The check above would pass vacuously if the probe could not see an import.
    code, out, modules = _run(["start", "--print-config"], clean_env)
    assert code == 0, out
    assert json.loads(out)["port"] == 3721
    assert "taskcast.cli._settings" in modules and "pydantic_settings" in modules
