"""``taskcast node add|use|remove|list``: the saved servers of the client commands."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from ._options import fail
from ._usage import ArgumentsCommand

if TYPE_CHECKING:
    from ._nodes import NodeStore

__all__ = ["node_app"]


node_app = typer.Typer(
    name="node",
    help="Named servers for the client commands (~/.taskcast/nodes.json).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _store() -> NodeStore:
    from ._nodes import NodeStore

    return NodeStore.default(dict(os.environ))


@node_app.command("add", cls=ArgumentsCommand)
def node_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A name for the server.")],
    url: Annotated[str, typer.Option("--url", metavar="URL", help="The server's URL.")],
    token: Annotated[
        str | None, typer.Option("--token", metavar="TOKEN", help="Its token.")
    ] = None,
    token_type: Annotated[
        str,
        typer.Option(
            "--token-type",
            metavar="jwt|admin",
            help="jwt: sent as is; admin: the server's admin token, exchanged for a JWT "
            "(POST /admin/token) before each command.",
        ),
    ] = "jwt",
) -> None:
    """Save a server (the first one saved becomes the current one)."""
    from ._errors import SettingsError

    if token_type not in ("jwt", "admin"):
        raise fail(f"--token-type must be jwt or admin, got {token_type!r}", 2)
    try:
        node = _store().add(name, url, token=token, token_type=token_type)  # type: ignore[arg-type]
    except SettingsError as exc:
        raise fail(exc.message, 2) from None
    typer.echo(f"added node {node.name} → {node.url}")


@node_app.command("use", cls=ArgumentsCommand)
def node_use(name: Annotated[str, typer.Argument(metavar="NAME", help="A saved server.")]) -> None:
    """Make a saved server the default of the client commands."""
    from ._errors import SettingsError

    try:
        node = _store().use(name)
    except SettingsError as exc:
        raise fail(exc.message, 2) from None
    typer.echo(f"using node {node.name} → {node.url}")


@node_app.command("remove", cls=ArgumentsCommand)
def node_remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A saved server.")],
) -> None:
    """Forget a saved server."""
    from ._errors import SettingsError

    try:
        _store().remove(name)
    except SettingsError as exc:
        raise fail(exc.message, 2) from None
    typer.echo(f"removed node {name}")


@node_app.command("list")
def node_list() -> None:
    """The saved servers; * marks the current one."""
    from ._errors import SettingsError
    from ._nodes import DEFAULT_NODE, DEFAULT_URL

    store = _store()
    try:
        nodes = store.nodes()
        current = store.current()
    except SettingsError as exc:
        raise fail(exc.message, 2) from None
    if current is None:
        typer.echo(f"* {DEFAULT_NODE:<12} {DEFAULT_URL}  (built-in)")
    for name, saved in sorted(nodes.items()):
        mark = "*" if current is not None and current.name == name else " "
        auth = f"  [{saved.token_type} token]" if saved.token else ""
        typer.echo(f"{mark} {name:<12} {saved.url}{auth}")
