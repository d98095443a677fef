"""``taskcast export`` and ``taskcast import``: task archives as JSON Lines files.

One line per task, each a ``taskcast.taskArchive`` document (``GET /tasks/{id}/archive``), so
a file of any size is written and read one task at a time: memory stays flat however many
tasks it holds. On a terminal a progress bar runs on stderr; the summary follows it.
"""

# No ``from __future__ import annotations``: typer reads the commands' annotations, which
# name options of ``_main`` that are local to :func:`register`.
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from taskcast.core import InvalidInputError, parse_task_archive

from ._output import Output
from ._usage import ArgumentsCommand

__all__ = ["ExportSummary", "ImportSummary", "export_archives", "import_archives", "register"]


class _Stop(Exception):
    """The server cannot be reached (or refuses the caller): stop, reporting why."""


@dataclass(slots=True)
class ExportSummary:
    exported: int = 0
    events: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(task id, reason) of each task that could not be exported."""


@dataclass(slots=True)
class ImportSummary:
    imported: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    """(line, task id, reason) of tasks left alone because they exist."""
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    """(line, task id or ``?``, reason) of lines that could not be imported."""


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f"HTTP {response.status_code}: {body['error']}"
    return f"HTTP {response.status_code}"


def _progress(enabled: bool, what: str, total: int | None) -> Progress | None:
    if not enabled:
        return None
    progress = Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    progress.add_task(what, total=total)
    return progress


def _task_ids(
    http: httpx.Client,
    ids: Sequence[str],
    status: Sequence[str] | None,
    types: Sequence[str] | None,
) -> Iterator[str]:
    """The named tasks, else every task matching the filters, page by page (lazily)."""
    if ids:
        yield from ids
        return
    params: dict[str, str] = {}
    if status:
        params["status"] = ",".join(status)
    if types:
        params["type"] = ",".join(types)
    while True:
        try:
            response = http.get("/tasks", params=params)
        except httpx.HTTPError as exc:
            raise _Stop(f"cannot reach {http.base_url}: {exc}") from None
        if not response.is_success:
            raise _Stop(f"listing tasks failed: {_message(response)}")
        page = response.json()
        for task in page.get("tasks", []):
            yield str(task["id"])
        cursor = page.get("nextCursor")
        if not cursor:
            return
        params["cursor"] = cursor


def export_archives(
    url: str,
    destination: IO[str],
    *,
    token: str | None = None,
    ids: Sequence[str] = (),
    status: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
    progress: bool = False,
    timeout: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> ExportSummary:
    """Write one archive per line to ``destination``; a task that fails is reported, not
    fatal (it may have been deleted meanwhile). Raises :class:`_Stop` if the server cannot
    be reached."""
    summary = ExportSummary()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    bar = _progress(progress, "exporting", len(ids) if ids else None)
    with (
        httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport) as http,
        bar or contextlib.nullcontext(),
    ):
        for task_id in _task_ids(http, ids, status, types):
            try:
                response = http.get(f"/tasks/{quote(task_id, safe='')}/archive")
            except httpx.HTTPError as exc:
                raise _Stop(f"cannot reach {url}: {exc}") from None
            if response.status_code in (401, 403):
                raise _Stop(f"{task_id}: {_message(response)}")
            if not response.is_success:
                summary.failed.append((task_id, _message(response)))
            else:
                # The server's bytes as they are: no decode and re-encode per task.
                text = response.text
                destination.write(text.replace("\n", "") + "\n")
                summary.exported += 1
                events = json.loads(text).get("events")
                summary.events += len(events) if isinstance(events, list) else 0
            if bar is not None:
                bar.advance(bar.task_ids[0])
        destination.flush()
    return summary


def _lines(source: IO[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(source, start=1):
        if line.strip():
            yield number, line


def import_archives(
    url: str,
    source: IO[str],
    *,
    token: str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    progress_total: int | None = None,
    progress: bool = False,
    timeout: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> ImportSummary:
    """Import each line of ``source``; ``dry_run`` validates locally and sends nothing.

    A task that exists is *skipped* (unless ``overwrite``); an invalid line or one the
    server refuses is *failed*, with its reason; the rest of the file goes on. Raises
    :class:`_Stop` if the server cannot be reached or refuses the caller.
    """
    summary = ImportSummary()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    bar = _progress(progress, "importing", progress_total)
    with (
        httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport) as http,
        bar or contextlib.nullcontext(),
    ):
        for number, line in _lines(source):
            if bar is not None:
                bar.update(bar.task_ids[0], advance=len(line.encode()))
            try:
                archive = json.loads(line)
            except ValueError as exc:
                summary.failed.append((number, "?", f"not JSON: {exc}"))
                continue
            task = archive.get("task") if isinstance(archive, dict) else None
            task_id = str(task.get("id", "?")) if isinstance(task, dict) else "?"
            if dry_run:
                try:
                    parse_task_archive(archive)
                except InvalidInputError as exc:
                    summary.failed.append((number, task_id, exc.message))
                else:
                    summary.imported += 1
                continue
            body: dict[str, Any] = {"archive": archive}
            if overwrite:
                body["overwrite"] = True
            try:
                response = http.post("/tasks/import", json=body)
            except httpx.HTTPError as exc:
                raise _Stop(f"cannot reach {url}: {exc}") from None
            if response.is_success:
                summary.imported += 1
            elif response.status_code == 409:
                summary.skipped.append((number, task_id, "exists (use --overwrite to replace)"))
            elif response.status_code in (401, 403):
                raise _Stop(f"line {number} ({task_id}): {_message(response)}")
            else:
                summary.failed.append((number, task_id, _message(response)))
    return summary


def _open_output(path: str | None) -> contextlib.AbstractContextManager[IO[str]]:
    if path is None or path == "-":
        return contextlib.nullcontext(sys.stdout)
    return open(path, "w", encoding="utf-8")  # the caller's `with` closes it


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``import`` to the ``taskcast`` command line."""
    from . import _main as cli

    @app.command("export", cls=ArgumentsCommand)
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
            typer.Option(
                "--output", "-o", metavar="FILE", help="JSON Lines file (default: stdout)."
            ),
        ] = None,
        url: Annotated[str | None, cli._URL_OPTION] = None,
        token: Annotated[str | None, cli._TOKEN_OPTION] = None,
        node: Annotated[str | None, cli._NODE_OPTION] = None,
    ) -> None:
        """Export tasks as task archives, one JSON line each."""
        ids = task_ids or []
        statuses, types = cli._comma_list(status), cli._comma_list(type)
        if not ids and not statuses and not types and not every:
            raise cli.fail("name tasks, or select them with --status / --type, or use --all", 2)
        target = cli._target(url, token, node)
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
            raise cli.fail(f"cannot write {output}: {exc.strerror or exc}", 1) from None
        for task_id, reason in summary.failed:
            out.error(f"failed {task_id}: {reason}")
        where = output if output not in (None, "-") else "stdout"
        print(
            f"exported {summary.exported} task(s), {summary.events} event(s) to {where}"
            + (f"; {len(summary.failed)} failed" if summary.failed else ""),
            file=sys.stderr,
        )
        raise typer.Exit(1 if summary.failed else 0)

    @app.command("import", cls=ArgumentsCommand)
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
        url: Annotated[str | None, cli._URL_OPTION] = None,
        token: Annotated[str | None, cli._TOKEN_OPTION] = None,
        node: Annotated[str | None, cli._NODE_OPTION] = None,
    ) -> None:
        """Import task archives from a JSON Lines file."""
        target = cli._target(url, token, node)
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
            raise cli.fail(f"cannot read {file}: {exc.strerror or exc}", 2) from None
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
