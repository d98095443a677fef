"""The ``taskcast`` command line: the root command, and which module holds each command.

typer owns argv. Every command's options are declared in a small module that imports only
typer; what a command does (settings, stores, server, httpx, rich) is imported when it
runs, so ``taskcast --version`` and ``taskcast --help`` start without any of it.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ._archive_cli import export_cmd, import_cmd
from ._client_cli import doctor, logs, ping, tail
from ._completion_cli import completion
from ._node_cli import node_app
from ._server_cli import migrate, start
from ._tasks_cli import tasks_app
from ._usage import ArgumentsCommand

__all__ = ["app", "main"]


class _DefaultToStart(TyperGroup):
    """``taskcast`` and ``taskcast --port 4000`` mean ``taskcast start ...`` (as the original)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        first = args[0] if args else None
        # Only options imply `start`; an unknown word is reported as an unknown command.
        # While completing (`taskcast <TAB>`), no word yet means a command name is wanted.
        if (first is None and not ctx.resilient_parsing) or (
            first is not None and first.startswith("-") and first not in _ROOT_OPTIONS
        ):
            args = ["start", *args]
        return super().parse_args(ctx, args)

    def _main_shell_completion(
        self, ctx_args: Any, prog_name: str, complete_var: Any = None
    ) -> None:
        # `taskcast completion SHELL` scripts call back with _TASKCAST_COMPLETE set; typer
        # registers its shells' completers only with add_completion, which would add two
        # options to every help page instead of one command.
        if os.environ.get(complete_var or "_TASKCAST_COMPLETE"):
            from typer._completion_classes import completion_init

            completion_init()
        super()._main_shell_completion(ctx_args, prog_name, complete_var)

    # Usage errors (a bad value, an unknown option or command) are one `taskcast:` line
    # like every other error, not typer's four lines: the root's own arguments are parsed
    # in make_context, every subcommand's within invoke.
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        from typer._click.exceptions import ClickException

        try:
            return super().make_context(*args, **kwargs)
        except ClickException as exc:
            from ._usage import one_line

            raise one_line(exc) from None

    def invoke(self, ctx: Any) -> Any:
        from typer._click.exceptions import ClickException

        try:
            return super().invoke(ctx)
        except ClickException as exc:
            from ._usage import one_line

            raise one_line(exc) from None


_ROOT_OPTIONS = {"--help", "-h", "--version"}

app = typer.Typer(
    name="taskcast",
    cls=_DefaultToStart,
    help="Taskcast: long-running task tracking with resumable SSE streams.",
    add_completion=False,
    # Tracebacks with local variables could print secrets; errors are one line instead.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"taskcast {version('taskcast-cli')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Show the version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Taskcast: long-running task tracking with resumable SSE streams.

    Without a command, `taskcast` runs `taskcast start`.
    """


# The order here is the order of `taskcast --help`.
app.command(no_args_is_help=False)(start)
app.command()(migrate)
app.command(cls=ArgumentsCommand)(completion)
app.command()(ping)
app.command()(doctor)
app.command(cls=ArgumentsCommand)(logs)
app.command()(tail)
app.command("export", cls=ArgumentsCommand)(export_cmd)
app.command("import", cls=ArgumentsCommand)(import_cmd)
app.add_typer(tasks_app)
app.add_typer(node_app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``taskcast`` script."""
    app(args=argv, prog_name="taskcast")
