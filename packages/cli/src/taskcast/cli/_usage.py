"""Command-line usage errors as the one documented line: ``taskcast: <what is wrong>``.

Typer shows a usage error as four lines (usage, a hint, a blank line, ``Error: ...``) and
words a bad value as pydantic does ("Input should be a valid integer, unable to parse string
as an integer"). Every other error of the command is one ``taskcast:`` line worded as the
settings' own errors, so usage errors are turned into the same.
"""

from __future__ import annotations

from typing import IO, Any

import typer

# Typer vendors click; its exception classes are only reachable here.
from typer._click.exceptions import (
    BadParameter,
    ClickException,
    MissingParameter,
    NoArgsIsHelpError,
    UsageError,
)
from typer.core import TyperCommand

__all__ = ["ArgumentsCommand", "OneLineError", "one_line"]


class OneLineError(ClickException):
    """A usage error printed as one ``taskcast:`` line on stderr (exit status 2)."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        typer.echo(f"taskcast: {self.message}", err=True)


def _param_name(exc: BadParameter) -> str:
    param = exc.param
    if param is None:
        return ""
    opts = [opt for opt in getattr(param, "opts", []) if opt.startswith("-")]
    if opts:
        # The long form ("--port", not "-p"), as the settings' errors name flags.
        return str(max(opts, key=len))
    return str(getattr(param, "metavar", None) or param.name or "").upper()


def _problem(exc: BadParameter) -> str:
    # Imported here: the command line is built without pydantic (see _main).
    from pydantic import ValidationError

    from ._resolve import describe_error

    cause = exc.__cause__
    if isinstance(cause, ValidationError) and cause.errors():
        return describe_error(cause.errors()[0])
    message = exc.message.strip().rstrip(".")
    return message[:1].lower() + message[1:]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def one_line(exc: ClickException, command_path: str | None = None) -> ClickException:
    """The error to raise instead of ``exc`` (``exc`` itself when it is not a usage error).

    ``command_path`` (``taskcast tasks list``) is named in a hint to its ``-h``.
    """
    if isinstance(exc, OneLineError | NoArgsIsHelpError) or not isinstance(exc, UsageError):
        return exc
    if command_path is None and exc.ctx is not None:
        command_path = exc.ctx.command_path
    if isinstance(exc, MissingParameter):
        name = _param_name(exc)
        kind = "option" if name.startswith("-") else "argument"
        text = f"missing {kind} {name}"
    elif isinstance(exc, BadParameter):
        name = _param_name(exc)
        text = f"invalid value for {name}: {_problem(exc)}" if name else _problem(exc)
    else:
        text = _lower_first(exc.format_message().strip()).rstrip(".")
        text = text.replace("(Possible options:", "(did you mean one of:")
        text = text.replace(". Did you mean", "; did you mean")
    if command_path:
        text += f" (see '{command_path} -h')"
    return OneLineError(text)


class ArgumentsCommand(TyperCommand):
    """A command whose help lists its arguments without typer's type labels (``<str>``)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args: list[tuple[str, str]] = []
        opts: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                # The argument's name (its metavar), not "TASK_ID <str>".
                args.append((record[0].split(" <", 1)[0], record[1]))
            else:
                opts.append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)
