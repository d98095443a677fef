"""``taskcast export`` and ``taskcast import``: task archives as JSON Lines files.

One line per task, each a ``taskcast.taskArchive`` document (``GET /tasks/{id}/archive``), so
a file of any size is written and read one task at a time: memory stays flat however many
tasks it holds. On a terminal a progress bar runs on stderr; the summary follows it. The
commands' options are declared in ``_archive_cli``, which imports this module when one runs.
"""

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from taskcast.core import InvalidInputError, parse_task_archive

__all__ = ["ExportSummary", "ImportSummary", "export_archives", "import_archives"]


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
