"""What the commands share: the client options, their checks, and the one-line failure.

Imported while the command line is being built, so only typer is imported here; resolving
a server (``_nodes``, httpx) waits until a command runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ._nodes import Target

__all__ = [
    "JSON_OPTION",
    "LEVELS_OPTION",
    "NODE_OPTION",
    "TIMEOUT_OPTION",
    "TOKEN_OPTION",
    "TYPES_OPTION",
    "URL_OPTION",
    "at_least",
    "comma_list",
    "fail",
    "positive",
    "resolve_server",
]


def fail(message: str, code: int) -> typer.Exit:
    """Print ``taskcast: <message>`` on stderr; return the Exit to raise."""
    typer.echo(f"taskcast: {message}", err=True)
    return typer.Exit(code)


def positive(value: float) -> float:
    if not value > 0:  # also refuses NaN
        raise typer.BadParameter(f"expected a number greater than 0, got {value:g}")
    return value


def at_least(least: int) -> Callable[[int | None], int | None]:
    # A check of our own rather than typer's min=, whose help shows "[x>=1]".
    def check(value: int | None) -> int | None:
        if value is not None and value < least:
            raise typer.BadParameter(f"expected an integer of at least {least}, got {value}")
        return value

    return check


URL_OPTION = typer.Option(
    "--url",
    metavar="URL",
    help="Server URL (else --node, $TASKCAST_URL, the current node, http://127.0.0.1:3721).",
    show_default=False,
)
TOKEN_OPTION = typer.Option(
    "--token",
    metavar="TOKEN",
    help="Bearer token (else the node's, else $TASKCAST_TOKEN).",
    show_default=False,
)
NODE_OPTION = typer.Option(
    "--node", metavar="NAME", help="A server saved with `taskcast node add`.", show_default=False
)
TIMEOUT_OPTION = typer.Option(
    "--timeout",
    metavar="SECONDS",
    callback=positive,
    help="Seconds to wait for an answer (more than 0).",
)
JSON_OPTION = typer.Option("--json", help="One JSON object per line, for machines.")
TYPES_OPTION = typer.Option(
    "--types", metavar="PATTERNS", help="Event type patterns (llm.*, progress), comma-separated."
)
LEVELS_OPTION = typer.Option(
    "--levels", metavar="LEVELS", help="Levels (debug, info, warn, error), comma-separated."
)


def resolve_server(url: str | None, token: str | None, node: str | None) -> Target:
    """The server a client command talks to (exit 2 when the choice is wrong)."""
    from ._errors import SettingsError
    from ._nodes import resolve_target

    try:
        return resolve_target(url=url, token=token, node=node, environ=dict(os.environ))
    except SettingsError as exc:
        raise fail(exc.message, 2) from None


def comma_list(values: list[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` → ``["a", "b", "c"]``; nothing given → None."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
