"""``taskcast completion SHELL``: the shell completion scripts."""

from __future__ import annotations

from typing import Annotated

import typer

from ._options import fail

__all__ = ["completion"]

_SHELLS = ("bash", "zsh", "fish")


def completion(
    shell: Annotated[
        str, typer.Argument(metavar="SHELL", help="bash, zsh or fish.", show_default=False)
    ],
) -> None:
    """Print the shell completion script for bash, zsh or fish.

    bash: eval "$(taskcast completion bash)" in ~/.bashrc; zsh: the same in ~/.zshrc (after
    compinit); fish: save the output as ~/.config/fish/completions/taskcast.fish.
    """
    if shell not in _SHELLS:
        raise fail(f"invalid value for SHELL: expected bash, zsh or fish, got {shell!r}", 2)
    from typer._completion_shared import get_completion_script

    typer.echo(
        get_completion_script(prog_name="taskcast", complete_var="_TASKCAST_COMPLETE", shell=shell)
    )
