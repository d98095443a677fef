"""``taskcast export`` and ``taskcast import``: their options.

What they do (httpx, rich's progress bar, the archive format) is in ``_archive_cmds``,
imported when one of them runs.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import IO, Annotated

import typer

from ._options import NODE_OPTION, TOKEN_OPTION, URL_OPTION, comma_list, fail, resolve_server

__all__ = ["export_cmd", "import_cmd"]


def _open_output(path: str | None) -> contextlib.AbstractContextManager[IO[str]]:
    if path is None or path == "-":
        return contextlib.nullcontext(sys.stdout)
    return open(path, "w", encoding="utf-8")  # the caller's `with` closes it


def export_cmd(
    task_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="[TASK_ID]...", help="Tasks to export (else use a filter)."),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", metavar="STATUSES", help="Every task in these statuses."),
    ] = None,
    type: Annotated[
        list[str] | None,
        typer.Option("--type", metavar="TYPES", help="Every task of these types."),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every task in the server's short-term store.")
    ] = False,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", metavar="FILE", help="JSON Lines file (default: stdout)."),
    ] = None,
    url: Annotated[str | None, URL_OPTION] = None,
    token: Annotated[str | None, TOKEN_OPTION] = None,
    node: Annotated[str | None, NODE_OPTION] = None,
) -> None:
    """Export tasks as task archives, one JSON line each."""
    from ._archive_cmds import _Stop, export_archives
    from ._output import Output

    ids = task_ids or []
    statuses, types = comma_list(status), comma_list(type)
    if not ids and not statuses and not types and not every:
        raise fail("name tasks, or select them with --status / --type, or use --all", 2)
    target = resolve_server(url, token, node)
    out = Output()
    try:
        with _open_output(output) as destination:
            summary = export_archives(
                target.url,
                destination,
                token=target.token,
                ids=ids,
                status=statuses,
                types=types,
                progress=sys.stderr.isatty(),
            )
    except _Stop as exc:
        out.error(f"FAIL \u2014 {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror or exc}", 1) from None
    for task_id, reason in summary.failed:
        out.error(f"failed {task_id}: {reason}")
    where = output if output not in (None, "-") else "stdout"
    print(
        f"exported {summary.exported} task(s), {summary.events} event(s) to {where}"
        + (f"; {len(summary.failed)} failed" if summary.failed else ""),
        file=sys.stderr,
    )
    raise typer.Exit(1 if summary.failed else 0)


def import_cmd(
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE", help="JSON Lines file from `taskcast export` (- for stdin)."
        ),
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace tasks that exist.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Validate every line; send nothing to the server."),
    ] = False,
    url: Annotated[str | None, URL_OPTION] = None,
    token: Annotated[str | None, TOKEN_OPTION] = None,
    node: Annotated[str | None, NODE_OPTION] = None,
) -> None:
    """Import task archives from a JSON Lines file."""
    from ._archive_cmds import _Stop, import_archives
    from ._output import Output

    target = resolve_server(url, token, node)
    out = Output()
    total: int | None = None
    try:
        if file == "-":
            source_cm: contextlib.AbstractContextManager[IO[str]] = contextlib.nullcontext(
                sys.stdin
            )
        else:
            total = Path(file).stat().st_size
            source_cm = open(file, encoding="utf-8")  # noqa: SIM115
        with source_cm as source:
            summary = import_archives(
                target.url,
                source,
                token=target.token,
                overwrite=overwrite,
                dry_run=dry_run,
                progress_total=total,
                progress=sys.stderr.isatty(),
            )
    except _Stop as exc:
        out.error(f"FAIL \u2014 {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}", 2) from None
    for number, task_id, reason in summary.skipped:
        print(f"skipped line {number} ({task_id}): {reason}", file=sys.stderr)
    for number, task_id, reason in summary.failed:
        out.error(f"failed line {number} ({task_id}): {reason}")
    verb = "valid" if dry_run else "imported"
    print(
        f"{verb} {summary.imported}, skipped {len(summary.skipped)}, "
        f"failed {len(summary.failed)}" + (" (dry run: nothing sent)" if dry_run else ""),
        file=sys.stderr,
    )
    raise typer.Exit(1 if summary.failed else 0)
