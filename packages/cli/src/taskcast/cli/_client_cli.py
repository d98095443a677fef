"""The client commands ``ping``, ``doctor``, ``logs`` and ``tail``: their options.

What they do (httpx, rich) is in ``_remote`` and ``_client_cmds``, imported when one runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ._options import (
    JSON_OPTION,
    LEVELS_OPTION,
    NODE_OPTION,
    TIMEOUT_OPTION,
    TOKEN_OPTION,
    TYPES_OPTION,
    URL_OPTION,
    at_least,
    comma_list,
    resolve_server,
)

if TYPE_CHECKING:
    from ._output import Output

__all__ = ["doctor", "logs", "ping", "tail"]


def _output(*, json_mode: bool) -> Output:
    from ._output import Output

    return Output(json_mode=json_mode)


def ping(
    url: Annotated[str | None, URL_OPTION] = None,
    token: Annotated[str | None, TOKEN_OPTION] = None,
    node: Annotated[str | None, NODE_OPTION] = None,
    timeout: Annotated[float, TIMEOUT_OPTION] = 5.0,
) -> None:
    """Check that a server answers (GET /health)."""
    from ._remote import ping as run_ping

    target = resolve_server(url, token, node)
    raise typer.Exit(run_ping(target.url, token=target.token, timeout=timeout, echo=typer.echo))


def doctor(
    url: Annotated[str | None, URL_OPTION] = None,
    token: Annotated[str | None, TOKEN_OPTION] = None,
    node: Annotated[str | None, NODE_OPTION] = None,
    timeout: Annotated[float, TIMEOUT_OPTION] = 5.0,
) -> None:
    """Report a server's auth and storage health (/health/detail)."""
    from ._remote import doctor as run_doctor

    target = resolve_server(url, token, node)
    raise typer.Exit(run_doctor(target.url, token=target.token, timeout=timeout, echo=typer.echo))


def logs(
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task to follow.")],
    url: Annotated[str | None, URL_OPTION] = None,
    token: Annotated[str | None, TOKEN_OPTION] = None,
    node: Annotated[str | None, NODE_OPTION] = None,
    types: Annotated[list[str] | None, TYPES_OPTION] = None,
    levels: Annotated[list[str] | None, LEVELS_OPTION] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Follow a task's events live until it ends.

    Exit status: 0 when the task completed, 3 when it failed, timed out, was cancelled or
    deleted, 1 when the server could not be reached for 15 s or refused. A dropped
    connection or a restarted server is resumed from the last event seen.
    """
    from ._client_cmds import logs as run_logs

    target = resolve_server(url, token, node)
    code = run_logs(
        target.url,
        task_id,
        token=target.token,
        types=comma_list(types),
        levels=comma_list(levels),
        out=_output(json_mode=as_json),
    )
    raise typer.Exit(code)


def tail(
    url: Annotated[str | None, URL_OPTION] = None,
    token: Annotated[str | None, TOKEN_OPTION] = None,
    node: Annotated[str | None, NODE_OPTION] = None,
    types: Annotated[list[str] | None, TYPES_OPTION] = None,
    levels: Annotated[list[str] | None, LEVELS_OPTION] = None,
    count: Annotated[
        int | None,
        typer.Option(
            "--count",
            "-n",
            callback=at_least(1),
            metavar="N",
            help="Stop after this many events.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Follow the live events of every task (GET /events).

    Runs until interrupted (Ctrl+C, exit 0) or --count events were printed.

    Each line starts with a short form of the task id. Only events published after the
    stream opens are shown (the global stream has no history).
    """
    from ._client_cmds import tail as run_tail

    target = resolve_server(url, token, node)
    try:
        code = run_tail(
            target.url,
            token=target.token,
            types=comma_list(types),
            levels=comma_list(levels),
            count=count,
            out=_output(json_mode=as_json),
        )
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
