"""Shell completion: ``taskcast completion SHELL`` prints a script that really completes.

bash runs the printed script itself; zsh and fish (not installed everywhere) are driven
through the same protocol their scripts use (``_TASKCAST_COMPLETE=complete_zsh`` ...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._server import command, env_for

BIN = str(Path(sys.executable).parent)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = env_for(tmp_path, extra)
    # The scripts call `taskcast` by name, as a shell would.
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    return env


def _run(tmp_path: Path, args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(args),
        cwd=tmp_path,
        env=_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_subcommands_and_options(tmp_path: Path) -> None:
    assert shutil.which("taskcast", path=BIN) is not None
    script = r"""
set -e
eval "$(taskcast completion bash)"
complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _taskcast_completion taskcast;
                   printf '%s\n' "${COMPREPLY[@]}"; echo ---; }
complete_words taskcast ta
complete_words taskcast tasks ''
complete_words taskcast start --stor
"""
    result = subprocess.run(
        ["bash", "-c", script], env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    commands, tasks, options, _ = result.stdout.split("---\n")
    assert commands.split() == ["tail", "tasks"]
    assert tasks.split() == ["list", "inspect", "create", "cancel"]
    assert options.split() == ["--storage"]


def test_zsh_and_fish_scripts_and_their_protocol(tmp_path: Path) -> None:
    zsh = _run(tmp_path, ["completion", "zsh"])
    assert zsh.returncode == 0 and "compdef _taskcast_completion taskcast" in zsh.stdout
    fish = _run(tmp_path, ["completion", "fish"])
    assert fish.returncode == 0 and "complete --command taskcast" in fish.stdout

    answer = _run(
        tmp_path, [], _TYPER_COMPLETE_ARGS="taskcast node ", _TASKCAST_COMPLETE="complete_zsh"
    )
    assert answer.returncode == 0, answer.stderr
    for name in ("add", "use", "remove", "list"):
        assert f'"{name}":' in answer.stdout
    answer = _run(
        tmp_path,
        [],
        _TYPER_COMPLETE_ARGS="taskcast logs --ty",
        _TYPER_COMPLETE_FISH_ACTION="get-args",
        _TASKCAST_COMPLETE="complete_fish",
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("--types\t")


def test_an_unknown_shell_is_one_line(tmp_path: Path) -> None:
    result = _run(tmp_path, ["completion", "powershell"])
    assert result.returncode == 2
    assert result.stderr == (
        "taskcast: invalid value for SHELL: expected bash, zsh or fish, got 'powershell'\n"
    )
