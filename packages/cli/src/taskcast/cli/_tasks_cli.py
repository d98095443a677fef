"""``taskcast tasks list|inspect|create|cancel``: their options.

What they do (httpx, rich) is in ``_client_cmds``, imported when one runs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._options import (
    JSON_OPTION,
    NODE_OPTION,
    TOKEN_OPTION,
    URL_OPTION,
    at_least,
    comma_list,
    fail,
    resolve_server,
)
from ._usage import ArgumentsCommand

if TYPE_CHECKING:
    from ._output import Output

__all__ = ["tasks_app"]


def _output(*, json_mode: bool) -> Output:
    from ._output import Output

    return Output(json_mode=json_mode)


tasks_app = typer.Typer(
    name="tasks",
    help="List, inspect, create and cancel tasks.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@tasks_app.command("list")
def tasks_list(
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            metavar="STATUSES",
            help="Only these statuses (comma-separated or repeated).",
        ),
    ] = None,
    type: Annotated[
        list[str] | None,
        typer.Option(
            "--type", metavar="PATTERNS", help="Only these types; patterns such as llm.* work."
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", callback=at_least(1), metavar="N", help="Show the N newest tasks."),
    ] = 20,
    url: Annotated[str | None, URL_OPTION] = None,
    token: Annotated[str | None, TOKEN_OPTION] = None,
    node: Annotated[str | None, NODE_OPTION] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List the most recently created tasks (oldest of them first)."""
    from ._client_cmds import tasks_list as run

    target = resolve_server(url, token, node)
    code = run(
        target.url,
        token=target.token,
        status=comma_list(status),
        type=comma_list(type),
        limit=limit,
        out=_output(json_mode=as_json),
    )
    raise typer.Exit(code)


@tasks_app.command("inspect", cls=ArgumentsCommand)
def tasks_inspect(
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task.")],
    events: Annotated[
        int,
        typer.Option(
            "--events",
            "-e",
            callback=at_least(0),
            metavar="N",
            help="How many of the last events to show.",
        ),
    ] = 5,
    url: Annotated[str | None, URL_OPTION] = None,
    token: Annotated[str | None, TOKEN_OPTION] = None,
    node: Annotated[str | None, NODE_OPTION] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Show a task and its last events."""
    from ._client_cmds import tasks_inspect as run

    target = resolve_server(url, token, node)
    code = run(
        target.url, task_id, token=target.token, events=events, out=_output(json_mode=as_json)
    )
    raise typer.Exit(code)


@tasks_app.command("create")
def tasks_create(
    type: Annotated[
        str | None, typer.Option("--type", metavar="TYPE", help="The task type.")
    ] = None,
    params: Annotated[
        str | None, typer.Option("--params", metavar="JSON", help="Parameters, a JSON object.")
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option("--ttl", callback=at_least(1), metavar="SECONDS", help="Time to live."),
    ] = None,
    task_id: Annotated[
        str | None,
        typer.Option("--id", metavar="ID", help="Choose the id (default: a new ULID)."),
    ] = None,
    url: Annotated[str | None, URL_OPTION] = None,
    token: Annotated[str | None, TOKEN_OPTION] = None,
    node: Annotated[str | None, NODE_OPTION] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Create a task and print its id."""
    from ._client_cmds import tasks_create as run

    parsed: dict[str, Any] | None = None
    if params is not None:
        try:
            parsed = json.loads(params)
        except ValueError as exc:
            raise fail(f"--params is not JSON: {exc}", 2) from None
        if not isinstance(parsed, dict):
            raise fail("--params must be a JSON object", 2)
    target = resolve_server(url, token, node)
    code = run(
        target.url,
        token=target.token,
        type=type,
        params=parsed,
        ttl=ttl,
        task_id=task_id,
        out=_output(json_mode=as_json),
    )
    raise typer.Exit(code)


@tasks_app.command("cancel", cls=ArgumentsCommand)
def tasks_cancel(
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task.")],
    url: Annotated[str | None, URL_OPTION] = None,
    token: Annotated[str | None, TOKEN_OPTION] = None,
    node: Annotated[str | None, NODE_OPTION] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Cancel a task (its subscribers receive the end of the stream)."""
    from ._client_cmds import tasks_cancel as run

    target = resolve_server(url, token, node)
    raise typer.Exit(run(target.url, task_id, token=target.token, out=_output(json_mode=as_json)))
