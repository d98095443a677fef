"""Client commands: ``taskcast logs``, ``tail`` and ``tasks list/inspect/create/cancel``.

Each takes a resolved :class:`~taskcast.cli._nodes.Target` and an
:class:`~taskcast.cli._output.Output` and returns the exit status: 0 on success, 1 when the
server cannot be reached or refuses (one ``FAIL`` line on stderr).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from rich.text import Text

from ._output import Output, clock, format_event, short_id, status_style

__all__ = [
    "RECONNECT_SECONDS",
    "TASK_NOT_COMPLETED",
    "logs",
    "tail",
    "tasks_cancel",
    "tasks_create",
    "tasks_inspect",
    "tasks_list",
]

logger = logging.getLogger("taskcast.cli")

RECONNECT_SECONDS = 15.0
"""How long ``logs`` and ``tail`` keep reconnecting to a server that went away."""

TASK_NOT_COMPLETED = 3
"""Exit status of ``logs`` for a task that ended failed, timeout, cancelled or deleted."""


class _Failed(Exception):
    """A request failed; the message is the FAIL line's text."""


def _reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused" if "refused" in str(exc).lower() else "cannot connect"
    return str(exc) or type(exc).__name__


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return ""


class _Api:
    """Plain JSON requests: the commands print the server's own JSON in ``--json`` mode."""

    def __init__(
        self, url: str, token: str | None, timeout: float, transport: httpx.BaseTransport | None
    ) -> None:
        self.url = url
        self._http = httpx.Client(
            base_url=url, headers=_headers(token), timeout=timeout, transport=transport
        )

    def __enter__(self) -> _Api:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _Failed(f"cannot reach {self.url}: {_reason(exc)}") from None
        if not response.is_success:
            message = _message(response)
            raise _Failed(
                f"{self.url} answered HTTP {response.status_code}"
                + (f": {message}" if message else "")
            )
        return response.json()


def _run(out: Output, body: Callable[[], None]) -> int:
    try:
        body()
    except _Failed as exc:
        out.error(f"FAIL \u2014 {exc}")
        return 1
    return 0


# -- tasks -------------------------------------------------------------------------------


def _task_line(task: dict[str, Any], id_width: int = 26, type_width: int = 20) -> Text:
    status = str(task.get("status", "?"))
    line = Text()
    line.append(f"{task.get('id', '?')!s:<{id_width}}", style="bold")
    line.append("  ")
    line.append(f"{status:<9}", style=status_style(status))
    line.append("  ")
    line.append(f"{task.get('type') or '-':<{type_width}}")
    line.append("  ")
    line.append(clock(int(task.get("createdAt", 0))), style="dim")
    return line


def tasks_list(
    url: str,
    *,
    token: str | None = None,
    status: Sequence[str] | None = None,
    type: Sequence[str] | None = None,
    limit: int = 20,
    out: Output,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """The ``limit`` most recently created tasks, oldest first (``GET /tasks``, all pages)."""

    def body() -> None:
        # Pages of the server's default size: any `limit` could exceed a server's configured
        # maximum (400), and every page is followed anyway.
        params: dict[str, Any] = {}
        if status:
            params["status"] = ",".join(status)
        if type:
            params["type"] = ",".join(type)
        # The server lists oldest first; keep only the last `limit` while paging through.
        newest: deque[dict[str, Any]] = deque(maxlen=limit)
        with _Api(url, token, timeout, transport) as api:
            while True:
                page = api.call("GET", "/tasks", params=params)
                newest.extend(page.get("tasks", []))
                cursor = page.get("nextCursor")
                if not cursor:
                    break
                params["cursor"] = cursor
        # Columns as wide as their widest value: ids and types of any length line up.
        id_width = max((len(str(t.get("id", "?"))) for t in newest), default=0)
        type_width = max((len(str(t.get("type") or "-")) for t in newest), default=0)
        for task in newest:
            out.json(task)
            out.line(_task_line(task, id_width, type_width))
        if not newest:
            out.line(Text("no tasks", style="dim"))

    return _run(out, body)


def _detail(task: dict[str, Any]) -> list[Text]:
    status = str(task.get("status", "?"))
    rows: list[tuple[str, Text | str]] = [
        ("id", str(task.get("id"))),
        ("status", Text(status, style=status_style(status))),
        ("type", str(task.get("type") or "-")),
        ("created", clock(int(task.get("createdAt", 0)))),
        ("updated", clock(int(task.get("updatedAt", 0)))),
    ]
    if task.get("completedAt"):
        rows.append(("completed", clock(int(task["completedAt"]))))
    for key in ("params", "result", "error", "metadata", "ttl", "tags", "reason"):
        if task.get(key) is not None:
            rows.append((key, json.dumps(task[key], ensure_ascii=False, separators=(",", ":"))))
    if task.get("subscriberCount") is not None:
        rows.append(("subscribers", str(task["subscriberCount"])))
    lines = []
    for name, value in rows:
        line = Text(f"{name + ':':<13}", style="bold")
        line.append(value)
        lines.append(line)
    return lines


class _Event:
    """A history event with the attributes :func:`format_event` reads."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.timestamp = int(data.get("timestamp", 0))
        self.type = str(data.get("type", "?"))
        self.level = str(data.get("level", "info"))
        self.data = data.get("data")


def tasks_inspect(
    url: str,
    task_id: str,
    *,
    token: str | None = None,
    events: int = 5,
    out: Output,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """The task and its last ``events`` events (accumulated text series count as one)."""

    def body() -> None:
        with _Api(url, token, timeout, transport) as api:
            task = api.call("GET", f"/tasks/{_quote(task_id)}")
            # Collapsed: a streamed text is one snapshot event instead of thousands of deltas.
            history = api.call(
                "GET",
                f"/tasks/{_quote(task_id)}/events/history",
                params={"seriesFormat": "accumulated"},
            )
        last = history[-events:] if events > 0 else []
        out.json({"task": task, "events": last, "eventCount": len(history)})
        for line in _detail(task):
            out.line(line)
        out.line(Text(f"events:      last {len(last)} of {len(history)}", style="bold"))
        for event in last:
            out.line(Text("  ").append_text(format_event(_Event(event))))

    return _run(out, body)


def _quote(task_id: str) -> str:
    from urllib.parse import quote

    return quote(task_id, safe="")


def tasks_create(
    url: str,
    *,
    token: str | None = None,
    type: str | None = None,
    params: dict[str, Any] | None = None,
    ttl: int | None = None,
    task_id: str | None = None,
    out: Output,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """``POST /tasks``; prints the new task's id (or the task as JSON)."""

    def body() -> None:
        payload: dict[str, Any] = {}
        for key, value in (("id", task_id), ("type", type), ("params", params), ("ttl", ttl)):
            if value is not None:
                payload[key] = value
        with _Api(url, token, timeout, transport) as api:
            task = api.call("POST", "/tasks", json=payload)
        out.json(task)
        out.line(str(task["id"]))

    return _run(out, body)


def tasks_cancel(
    url: str,
    task_id: str,
    *,
    token: str | None = None,
    out: Output,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """``PATCH /tasks/{id}/status`` to ``cancelled`` (409 when already finished)."""

    def body() -> None:
        with _Api(url, token, timeout, transport) as api:
            task = api.call(
                "PATCH", f"/tasks/{_quote(task_id)}/status", json={"status": "cancelled"}
            )
        out.json(task)
        out.line(Text("cancelled ", style=status_style("cancelled")).append(str(task["id"])))

    return _run(out, body)


# -- streams -----------------------------------------------------------------------------


def _wire(event: Any) -> dict[str, Any]:
    """A stream event as the task event JSON of the REST API (plus ``filteredIndex``)."""
    out: dict[str, Any] = {
        "id": event.id,
        "taskId": event.task_id,
        "index": event.index,
        "timestamp": event.timestamp,
        "type": event.type,
        "level": event.level,
        "data": event.data,
    }
    if event.filtered_index is not None:
        out["filteredIndex"] = event.filtered_index
    for key, value in (
        ("seriesId", event.series_id),
        ("seriesMode", event.series_mode),
        ("seriesAccField", event.series_acc_field),
    ):
        if value is not None:
            out[key] = value
    if event.series_snapshot:
        out["seriesSnapshot"] = True
    return out


def logs(
    url: str,
    task_id: str,
    *,
    token: str | None = None,
    types: list[str] | None = None,
    levels: list[str] | None = None,
    out: Output,
    transport: httpx.BaseTransport | None = None,
    reconnect: Any = None,
) -> int:
    """Follow one task's stream (history, then live) until it ends; one line per event.

    Ends with ``[DONE] <reason>`` (JSON: ``{"done": "<reason>"}``) and status 0 when the
    task completed, :data:`TASK_NOT_COMPLETED` when it failed, timed out, was cancelled or
    was deleted (1 is reserved for "could not follow it"). A dropped
    connection or a restarted server is ridden out: the client reconnects with the last
    event id and the server replays only what was missed. ``[RESYNC]`` means the server no
    longer held that cursor and replayed what it retains. A task replaced by an archive import
    (``import --overwrite``) is followed to its new history, with a note on stderr.
    """
    from taskcast.client import (
        NotFoundError,
        ReconnectConfig,
        Resync,
        StreamInterruptedError,
        TaskcastClient,
        TaskcastHTTPError,
    )

    # A server restart is ridden out; a server that stays away for ~15 s is reported. A time
    # budget, not a count of attempts: a short `retry:` hint made 5 attempts last only ~3 s.
    reconnect = reconnect or ReconnectConfig(max_elapsed=RECONNECT_SECONDS, max_delay=5.0)
    client = TaskcastClient(url, token=token, transport=transport, reconnect=reconnect)
    try:
        with client.subscribe(task_id, types=types, levels=levels) as subscription:
            for item in subscription:
                if isinstance(item, Resync) and item.reason == "replaced":
                    # The client reconnected without a cursor: the new history follows.
                    out.json({"resync": item.reason})
                    out.note(
                        f"Task {task_id} was replaced (archive import); following its new history"
                    )
                elif isinstance(item, Resync):
                    out.json({"resync": item.reason})
                    out.line(
                        Text(f"[RESYNC] {item.reason}: replaying what the server retains", "yellow")
                    )
                else:
                    out.json(_wire(item))
                    out.line(format_event(item))
            done = subscription.done_reason
            out.json({"done": done})
            out.line(Text(f"[DONE] {done}", style=status_style(done or "") or "bold"))
    except NotFoundError:
        out.error(f"FAIL \u2014 no task {task_id} at {url}")
        return 1
    except TaskcastHTTPError as exc:
        out.error(f"FAIL \u2014 {url} answered HTTP {exc.status_code}: {exc.message}")
        return 1
    except StreamInterruptedError as exc:
        cause = exc.__cause__
        reason = _reason(cause) if isinstance(cause, httpx.HTTPError) else str(exc)
        out.error(f"FAIL \u2014 cannot reach {url}: {reason}")
        return 1
    finally:
        client.close()
    return 0 if done == "completed" else TASK_NOT_COMPLETED


def tail(
    url: str,
    *,
    token: str | None = None,
    types: list[str] | None = None,
    levels: list[str] | None = None,
    count: int | None = None,
    out: Output,
    transport: httpx.BaseTransport | None = None,
    give_up_after: float = RECONNECT_SECONDS,
    retry_delay: float = 1.0,
    on_open: Callable[[], None] | None = None,
) -> int:
    """Follow every task's live events (``GET /events``) until interrupted.

    The global stream has no history and no cursor: after a dropped connection it reopens
    and continues with what happens from then on (a ``[RECONNECTED]`` line says so).
    ``count`` stops after that many events (exit 0).
    """
    from httpx_sse import EventSource, SSEError

    params: dict[str, str] = {}
    if types:
        params["types"] = ",".join(types)
    if levels:
        params["levels"] = ",".join(levels)
    seen = 0
    failures = 0
    failing_since = 0.0
    timeout = httpx.Timeout(10.0, read=None)
    with httpx.Client(transport=transport, timeout=timeout) as http:
        while True:
            try:
                with http.stream(
                    "GET",
                    f"{url}/events",
                    params=params,
                    headers={"Accept": "text/event-stream", **_headers(token)},
                ) as response:
                    if not response.is_success:
                        response.read()
                        out.error(
                            f"FAIL \u2014 {url} answered HTTP {response.status_code}: "
                            f"{_message(response)}"
                        )
                        return 1
                    if failures:
                        out.line(Text("[RECONNECTED] events in between are not shown", "yellow"))
                    failures = 0
                    opened = False
                    for sse in EventSource(response).iter_sse():
                        # The server subscribes before its first frame (the retry: hint):
                        # from here on, nothing published is missed.
                        if not opened and on_open is not None:
                            on_open()
                        opened = True
                        if sse.event != "taskcast.event":
                            continue
                        try:
                            envelope = json.loads(sse.data)
                        except ValueError:
                            continue
                        event = _Envelope(envelope)
                        out.json(_rest_shape(envelope))
                        out.line(format_event(event, prefix=short_id(event.task_id)))
                        seen += 1
                        if count is not None and seen >= count:
                            return 0
            except (httpx.TransportError, SSEError) as exc:
                failures += 1
                if failures == 1:
                    failing_since = time.monotonic()
                # A time budget, as `logs`: a count of attempts runs out in seconds.
                if time.monotonic() - failing_since >= give_up_after:
                    reason = _reason(exc) if isinstance(exc, httpx.HTTPError) else str(exc)
                    out.error(f"FAIL \u2014 cannot reach {url}: {reason}")
                    return 1
                logger.info("global stream failed (%r); reconnecting", exc)
            else:
                # The server ended the stream (a graceful restart): reopen it.
                failures += 1
                if failures == 1:
                    failing_since = time.monotonic()
            time.sleep(min(retry_delay * failures, 5.0))


def _rest_shape(envelope: dict[str, Any]) -> dict[str, Any]:
    """A global-stream envelope as the task event JSON of the REST API, as ``logs --json``."""
    out: dict[str, Any] = {
        "id": envelope.get("eventId"),
        "taskId": envelope.get("taskId"),
        "index": envelope.get("rawIndex"),
        "timestamp": envelope.get("timestamp"),
        "type": envelope.get("type"),
        "level": envelope.get("level"),
        "data": envelope.get("data"),
        "filteredIndex": envelope.get("filteredIndex"),
    }
    for key in ("seriesId", "seriesMode", "seriesAccField", "seriesSnapshot"):
        if key in envelope:
            out[key] = envelope[key]
    return out


class _Envelope:
    """A global-stream envelope with the attributes :func:`format_event` reads."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.task_id = str(data.get("taskId", "?"))
        self.timestamp = int(data.get("timestamp", 0))
        self.type = str(data.get("type", "?"))
        self.level = str(data.get("level", "info"))
        self.data = data.get("data")
