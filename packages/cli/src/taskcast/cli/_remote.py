"""``taskcast ping`` and ``taskcast doctor``: is a server up, and how healthy is it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ._nodes import DEFAULT_URL

__all__ = ["DEFAULT_URL", "Check", "doctor", "ping"]


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


def diagnose(
    url: str, data: dict[str, Any], *, token: str | None, token_answer: int | None = None
) -> list[Check]:
    """The checks for a ``/health/detail`` body.

    ``token_answer`` is the HTTP status an authenticated route gave the token (None: not
    asked): ``/health/detail`` is public, so it says nothing about the token.
    """
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
    elif mode != "none" and token_answer == 401:
        checks.append(Check(name="Auth", status="FAIL", detail=f"{mode} (the token was refused)"))
    elif mode != "none" and token_answer == 403:
        # Authenticated, but not allowed to list tasks: the token itself is good.
        detail = f"{mode} (token accepted; it may not list tasks)"
        checks.append(Check(name="Auth", status="OK", detail=detail))
    else:
        checks.append(Check(name="Auth", status="OK", detail=mode))
    checks.append(_adapter("broadcast", "Broadcast", data))
    checks.append(_adapter("shortTermStore", "ShortTerm", data))
    checks.append(_adapter("longTermStore", "LongTerm", data))
    return checks


def _auth_mode(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    auth = data.get("auth") if isinstance(data, dict) else None
    return str(auth.get("mode", "none")) if isinstance(auth, dict) else None


def doctor(
    url: str,
    *,
    token: str | None = None,
    timeout: float = 5.0,
    echo: Callable[[str], None],
    transport: httpx.BaseTransport | None = None,
) -> int:
    """``GET /health/detail`` and print one line per part; 1 if any part failed.

    A given token is tried on ``GET /tasks?limit=1`` when the server requires one.
    """
    token_answer: int | None = None
    try:
        with _client(url, token, timeout, transport) as client:
            response = client.get("/health/detail")
            if token and _auth_mode(response) not in (None, "none"):
                token_answer = client.get("/tasks", params={"limit": 1}).status_code
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
    checks = diagnose(url, data, token=token, token_answer=token_answer)
    for check in checks:
        echo(check.line())
    return 1 if any(c.status == "FAIL" for c in checks) else 0
