"""Commands that talk to a running server: ``taskcast ping`` and ``taskcast doctor``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

__all__ = ["Check", "doctor", "format_event", "logs", "ping"]

DEFAULT_URL = "http://127.0.0.1:3721"


def _client(
    url: str, token: str | None, timeout: float, transport: httpx.BaseTransport | None
) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
    )


def _reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused" if "refused" in str(exc).lower() else "cannot connect"
    return str(exc) or type(exc).__name__


def ping(
    url: str,
    *,
    token: str | None = None,
    timeout: float = 5.0,
    echo: Callable[[str], None],
    transport: httpx.BaseTransport | None = None,
) -> int:
    """``GET /health``: print ``OK — taskcast at <url> (<ms>ms)`` and return 0, or FAIL and 1."""
    started = time.perf_counter()
    try:
        with _client(url, token, timeout, transport) as client:
            response = client.get("/health")
    except httpx.HTTPError as exc:
        echo(f"FAIL \u2014 cannot reach {url}: {_reason(exc)}")
        return 1
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        echo(f"FAIL \u2014 {url} answered HTTP {response.status_code}")
        return 1
    echo(f"OK \u2014 taskcast at {url} ({elapsed:.0f}ms)")
    return 0


@dataclass(slots=True, frozen=True, kw_only=True)
class Check:
    """One line of ``taskcast doctor``."""

    name: str
    status: str
    """``OK``, ``WARN``, ``FAIL`` or ``SKIP``."""
    detail: str

    def line(self) -> str:
        return f"{self.name + ':':<11}{self.status:<5}{self.detail}"


def _adapter(name: str, label: str, data: dict[str, Any]) -> Check:
    adapters = data.get("adapters") or {}
    entry = adapters.get(name)
    if not isinstance(entry, dict):
        return Check(name=label, status="SKIP", detail="not configured")
    provider = str(entry.get("provider", "?"))
    if entry.get("status") == "ok":
        return Check(name=label, status="OK", detail=provider)
    kind = (data.get("dependencies") or {}).get(name, {}).get("lastErrorKind")
    return Check(name=label, status="FAIL", detail=f"{provider} ({kind or 'error'})")


def diagnose(url: str, data: dict[str, Any], *, token: str | None) -> list[Check]:
    """The checks for a ``/health/detail`` body."""
    uptime = data.get("uptime")
    server = f"taskcast {data.get('version', '?')} at {url}"
    if isinstance(uptime, int):
        server += f" (up {uptime}s)"
    checks = [Check(name="Server", status="OK", detail=server)]
    mode = str((data.get("auth") or {}).get("mode", "none"))
    if mode != "none" and not token:
        checks.append(
            Check(name="Auth", status="WARN", detail=f"{mode} (no token given: use --token)")
        )
    else:
        checks.append(Check(name="Auth", status="OK", detail=mode))
    checks.append(_adapter("broadcast", "Broadcast", data))
    checks.append(_adapter("shortTermStore", "ShortTerm", data))
    checks.append(_adapter("longTermStore", "LongTerm", data))
    return checks


def doctor(
    url: str,
    *,
    token: str | None = None,
    timeout: float = 5.0,
    echo: Callable[[str], None],
    transport: httpx.BaseTransport | None = None,
) -> int:
    """``GET /health/detail`` and print one line per part; 1 if any part failed."""
    try:
        with _client(url, token, timeout, transport) as client:
            response = client.get("/health/detail")
    except httpx.HTTPError as exc:
        echo(
            Check(name="Server", status="FAIL", detail=f"cannot reach {url}: {_reason(exc)}").line()
        )
        return 1
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code != 200 or not isinstance(data, dict):
        echo(
            Check(
                name="Server", status="FAIL", detail=f"{url} answered HTTP {response.status_code}"
            ).line()
        )
        return 1
    checks = diagnose(url, data, token=token)
    for check in checks:
        echo(check.line())
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def format_event(event: Any) -> str:
    """``[HH:MM:SS] <type> <level> <data as JSON>``, the original's ``taskcast logs`` line."""
    clock = datetime.fromtimestamp(event.timestamp / 1000).strftime("%H:%M:%S")
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    return f"[{clock}] {event.type:<16} {event.level:<5} {data}"


def logs(
    url: str,
    task_id: str,
    *,
    token: str | None = None,
    types: list[str] | None = None,
    levels: list[str] | None = None,
    echo: Callable[[str], None],
    transport: httpx.BaseTransport | None = None,
    reconnect: Any = None,
) -> int:
    """Follow one task's stream (history, then live) until it ends; print one line per event.

    Reconnects and resumes by itself if the server restarts, as any Taskcast client does.
    """
    from taskcast.client import (
        NotFoundError,
        ReconnectConfig,
        Resync,
        StreamInterruptedError,
        TaskcastClient,
        TaskcastHTTPError,
    )

    # A server restart is ridden out; a server that stays away for ~15 s is reported.
    reconnect = reconnect or ReconnectConfig(max_attempts=5, max_delay=5.0)
    client = TaskcastClient(url, token=token, transport=transport, reconnect=reconnect)
    try:
        with client.subscribe(task_id, types=types, levels=levels) as subscription:
            for item in subscription:
                if isinstance(item, Resync):
                    echo(f"[RESYNC] {item.reason}: replaying what the server retains")
                else:
                    echo(format_event(item))
            echo(f"[DONE] {subscription.done_reason}")
    except NotFoundError:
        echo(f"FAIL \u2014 no task {task_id} at {url}")
        return 1
    except TaskcastHTTPError as exc:
        echo(f"FAIL \u2014 {url} answered HTTP {exc.status_code}: {exc.message}")
        return 1
    except StreamInterruptedError as exc:
        cause = exc.__cause__
        reason = _reason(cause) if isinstance(cause, httpx.HTTPError) else str(exc)
        echo(f"FAIL \u2014 cannot reach {url}: {reason}")
        return 1
    finally:
        client.close()
    return 0
