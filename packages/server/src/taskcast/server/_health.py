"""Service routes: ``/``, ``/health``, ``/health/ready`` and ``/health/detail``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from taskcast.core import StorageUnavailableError, TaskEngine

from ._body import json_response
from ._common import config_of, engine_of
from ._service_schemas import Health, HealthDetail, Readiness, ServiceInfo

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["service"])

API_VERSION = "v1"
PROBE_TIMEOUT = 2.0


async def _probe(ping: Callable[[], Awaitable[None]] | None) -> dict[str, Any]:
    """``{"state": "healthy"}`` or ``{"state": "unhealthy", "errorKind": ...}``."""
    if ping is None:
        return {"state": "healthy"}
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await ping()
    except TimeoutError:
        return {"state": "unhealthy", "errorKind": "timeout"}
    except StorageUnavailableError as exc:
        return {"state": "unhealthy", "errorKind": exc.kind}
    except Exception:
        # A probe reports every failure as "unavailable"; the cause goes to the log.
        logger.warning("health probe failed", exc_info=True)
        return {"state": "unhealthy", "errorKind": "unavailable"}
    return {"state": "healthy"}


async def _dependencies(request: Request) -> dict[str, dict[str, Any]]:
    engine = engine_of(request)
    probes: dict[str, Callable[[], Awaitable[None]] | None] = {
        "shortTermStore": engine.short_term.ping,
        "broadcast": getattr(engine.broadcast, "ping", None),
    }
    if engine.long_term is not None:
        probes["longTermStore"] = engine.long_term.ping
    results = await asyncio.gather(*(_probe(p) for p in probes.values()))
    return dict(zip(probes, results, strict=True))


def _detail(state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"configured": True, "state": state["state"]}
    if "errorKind" in state:
        out["lastErrorKind"] = state["errorKind"]
    return out


async def _archive(engine: TaskEngine) -> dict[str, Any]:
    """The archive writer's state, with the gap check's findings when it runs."""
    assert engine.archive is not None
    body = engine.archive.health()
    checker = engine.archive_checker
    if checker is not None:
        await checker.refresh(PROBE_TIMEOUT)
        gap = checker.health()
        body["gap"] = gap
        # Writes acknowledged and not archived past the grace period: a degradation too.
        body["degraded"] = body["degraded"] or gap["tasks"] > 0
    return body


def _root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get(
    "/",
    summary="Service information",
    responses={200: {"model": ServiceInfo, "description": "Name, version and links"}},
)
async def info(request: Request) -> Response:
    prefix = _root_path(request)
    return json_response(
        {
            "name": "taskcast",
            "version": config_of(request).version,
            "apiVersion": API_VERSION,
            "links": {
                "health": prefix + "/health",
                "healthReady": prefix + "/health/ready",
                "healthDetail": prefix + "/health/detail",
                "openapi": prefix + "/openapi.json",
                "docs": prefix + "/docs",
            },
        }
    )


@router.get(
    "/health",
    summary="Liveness",
    responses={200: {"model": Health, "description": "The process answers"}},
)
async def health(request: Request) -> Response:
    return json_response(
        {
            "ok": True,
            "name": "taskcast",
            "version": config_of(request).version,
            "apiVersion": API_VERSION,
        }
    )


@router.get(
    "/health/ready",
    summary="Readiness: 503 when the short-term store or the broadcast is unreachable",
    responses={
        200: {"model": Readiness, "description": "Ready"},
        503: {"model": Readiness, "description": "Not ready"},
    },
)
async def ready(request: Request) -> Response:
    deps = await _dependencies(request)
    ok = all(deps[name]["state"] == "healthy" for name in ("shortTermStore", "broadcast"))
    body: dict[str, Any] = {"ok": ok, "dependencies": deps}
    engine = engine_of(request)
    archive = engine.archive
    long_term = deps.get("longTermStore")
    # The archive is written behind the publisher: while it fails, writes queue up and are
    # retried, so serving continues (200) but reports the degradation and the backlog. So
    # do writes the archive refuses (failing tasks) and a gap a killed instance left, as of
    # the gap check's last count (readiness is polled often: it does not count afresh).
    if archive is not None and long_term is not None:
        checker = engine.archive_checker
        if (
            long_term["state"] != "healthy"
            or archive.health()["degraded"]
            or (checker is not None and checker.overdue > 0)
        ):
            body["degraded"] = True
            body["backlog"] = archive.backlog
    return json_response(body, 200 if ok else 503)


@router.get(
    "/health/detail",
    summary="Adapters, dependencies and uptime",
    responses={200: {"model": HealthDetail, "description": "The server's state"}},
)
async def detail(request: Request) -> Response:
    engine = engine_of(request)
    deps = await _dependencies(request)

    def adapter(name: str, provider: str) -> dict[str, str]:
        healthy = deps[name]["state"] == "healthy"
        return {"provider": provider, "status": "ok" if healthy else "error"}

    adapters = {
        "broadcast": adapter("broadcast", engine.broadcast.name),
        "shortTermStore": adapter("shortTermStore", engine.short_term.name),
    }
    if engine.long_term is not None:
        adapters["longTermStore"] = adapter("longTermStore", engine.long_term.name)
    started: float = request.app.state.started_at
    return json_response(
        {
            "ok": all(d["state"] == "healthy" for d in deps.values()),
            "name": "taskcast",
            "version": config_of(request).version,
            "apiVersion": API_VERSION,
            "uptime": int(time.monotonic() - started),
            "auth": {"mode": request.app.state.authenticator.mode},
            "adapters": adapters,
            "dependencies": {name: _detail(state) for name, state in deps.items()},
            "subscribers": engine.hub.total,
            **({} if engine.archive is None else {"archive": await _archive(engine)}),
        }
    )
