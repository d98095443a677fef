"""Webhook configuration, delivery records and the in-memory outbox.

A webhook is ``{url, filter?, secret?, wrap?, retry?}`` (reference §1.3). Each matching
event becomes one :class:`WebhookDelivery` in a :class:`~taskcast.core.WebhookOutbox`, from
which a dispatcher (``taskcast.server``) claims due deliveries under a lease, sends them and
records the outcome. Everything here is transport-free: core never speaks HTTP.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from ._errors import InvalidInputError
from ._filters import EventFilter
from ._models import LEVELS
from ._redact import redact_url

__all__ = [
    "DeliveryStatus",
    "LeaseSettlingOutbox",
    "MemoryWebhookOutbox",
    "WebhookConfig",
    "WebhookDelivery",
    "WebhookRetry",
    "parse_webhooks",
]

Backoff = Literal["fixed", "linear", "exponential"]
DeliveryStatus = Literal["pending", "delivered", "failed"]

_BACKOFFS: Final = ("fixed", "linear", "exponential")
MAX_WEBHOOKS_PER_TASK: Final = 20
MAX_RETRIES: Final = 20
MAX_TIMEOUT_MS: Final = 60_000
MAX_DELAY_MS: Final = 24 * 3600 * 1000
MAX_URL_LENGTH: Final = 2048


@dataclass(slots=True, frozen=True, kw_only=True)
class WebhookRetry:
    """Retry policy of a webhook (defaults are the original's, reference §9).

    ``retries + 1`` attempts in all. Before attempt *n* (n ≥ 1) the dispatcher waits
    ``fixed``: ``initial_delay_ms``; ``linear``: ``initial_delay_ms * n``; ``exponential``:
    ``initial_delay_ms * 2**(n-1)`` — every one capped at ``max_delay_ms``, then shortened by
    up to ``jitter`` (a fraction) at random so failed deliveries do not retry in lockstep.
    """

    retries: int = 3
    backoff: Backoff = "exponential"
    initial_delay_ms: int = 1000
    max_delay_ms: int = 30_000
    timeout_ms: int = 5000
    """Each attempt is abandoned after this long."""
    jitter: float = 0.1

    def __post_init__(self) -> None:
        _check_int("retry.retries", self.retries, 0, MAX_RETRIES)
        if self.backoff not in _BACKOFFS:
            raise InvalidInputError(f"Invalid webhook retry.backoff: {self.backoff!r}")
        _check_int("retry.initialDelayMs", self.initial_delay_ms, 0, MAX_DELAY_MS)
        _check_int("retry.maxDelayMs", self.max_delay_ms, 0, MAX_DELAY_MS)
        _check_int("retry.timeoutMs", self.timeout_ms, 1, MAX_TIMEOUT_MS)
        if (
            isinstance(self.jitter, bool)
            or not isinstance(self.jitter, int | float)
            or not 0 <= self.jitter <= 1
        ):
            raise InvalidInputError("Invalid webhook retry.jitter: must be between 0 and 1")

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def delay_ms(self, attempt: int, *, rand: float | None = None) -> int:
        """Wait before attempt number ``attempt`` (1 = the first retry), jitter applied."""
        if self.backoff == "fixed":
            base = self.initial_delay_ms
        elif self.backoff == "linear":
            base = self.initial_delay_ms * attempt
        else:
            base = self.initial_delay_ms * 2 ** min(attempt - 1, 62)
        base = min(base, self.max_delay_ms)
        r = random.random() if rand is None else rand
        return int(base * (1 - self.jitter * r))

    def merged(self, raw: Mapping[str, Any]) -> WebhookRetry:
        """This policy with the camelCase keys of ``raw`` laid over it (shallow merge)."""
        changes: dict[str, Any] = {}
        for key, name in _RETRY_KEYS.items():
            if key in raw:
                changes[name] = raw[key]
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, name) for key, name in _RETRY_KEYS.items()}


_RETRY_KEYS: Final = {
    "retries": "retries",
    "backoff": "backoff",
    "initialDelayMs": "initial_delay_ms",
    "maxDelayMs": "max_delay_ms",
    "timeoutMs": "timeout_ms",
    "jitter": "jitter",
}


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"Invalid webhook {name}: must be an integer in [{low}, {high}]")


def _check_url(url: object) -> str:
    if not isinstance(url, str) or not url:
        raise InvalidInputError("Invalid webhook url: must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInputError(f"Invalid webhook url: longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise InvalidInputError("Invalid webhook url: contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInputError(f"Invalid webhook url: {redact_url(url)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Error messages reach answers and log lines: the URL is shown by the redaction rule.
        raise InvalidInputError(
            f"Invalid webhook url (http or https with a host): {redact_url(url)}"
        )
    if port == 0:
        raise InvalidInputError(f"Invalid webhook url: {redact_url(url)}")
    return url


def _parse_filter(raw: object) -> EventFilter:
    if not isinstance(raw, Mapping):
        raise InvalidInputError("Invalid webhook filter: must be an object")
    types = raw.get("types")
    if types is not None and (
        not isinstance(types, list) or not all(isinstance(t, str) for t in types)
    ):
        raise InvalidInputError("Invalid webhook filter.types: must be a list of strings")
    levels = raw.get("levels")
    if levels is not None and (
        not isinstance(levels, list) or not all(level in LEVELS for level in levels)
    ):
        raise InvalidInputError(f"Invalid webhook filter.levels: must be a list of {LEVELS}")
    include_status = raw.get("includeStatus", True)
    if not isinstance(include_status, bool):
        raise InvalidInputError("Invalid webhook filter.includeStatus: must be a boolean")
    return EventFilter(
        types=None if types is None else tuple(types),
        levels=None if levels is None else tuple(levels),
        include_status=include_status,
    )


@dataclass(slots=True, frozen=True, kw_only=True)
class WebhookConfig:
    """One webhook target: where to POST, which events, how to sign and retry.

    ``retry`` ``None`` means the dispatcher's default policy; ``retry_overrides`` holds the
    keys a per-task webhook set (laid over that default when the delivery is created).
    """

    url: str
    filter: EventFilter | None = None
    secret: str | None = None
    wrap: bool = False
    retry: WebhookRetry | None = None
    retry_overrides: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_url(self.url)
        if self.secret is not None and (not isinstance(self.secret, str) or not self.secret):
            raise InvalidInputError("Invalid webhook secret: must be a non-empty string")
        if not isinstance(self.wrap, bool):
            raise InvalidInputError("Invalid webhook wrap: must be a boolean")

    @classmethod
    def from_dict(cls, raw: object) -> WebhookConfig:
        """Parse the wire form ``{url, filter?, secret?, wrap?, retry?}``.

        Raises:
            InvalidInputError: a field has the wrong type or value (400 at the API).
        """
        if not isinstance(raw, Mapping):
            raise InvalidInputError("Invalid webhook: each entry must be an object")
        filter_raw = raw.get("filter")
        retry_raw = raw.get("retry")
        overrides: Mapping[str, Any] | None = None
        if retry_raw is not None:
            if not isinstance(retry_raw, Mapping):
                raise InvalidInputError("Invalid webhook retry: must be an object")
            WebhookRetry().merged(retry_raw)  # validates the values
            overrides = {k: retry_raw[k] for k in _RETRY_KEYS if k in retry_raw}
        wrap = raw.get("wrap", False)
        return cls(
            url=_check_url(raw.get("url")),
            filter=None if filter_raw is None else _parse_filter(filter_raw),
            secret=raw.get("secret"),
            wrap=False if wrap is None else wrap,
            retry_overrides=overrides,
        )

    def policy(self, default: WebhookRetry) -> WebhookRetry:
        """The effective retry policy given the dispatcher's default."""
        base = self.retry or default
        return base if not self.retry_overrides else base.merged(self.retry_overrides)

    def matches(self, event: Any) -> bool:
        return self.filter is None or self.filter.matches(event)


def parse_webhooks(raw: object) -> list[WebhookConfig]:
    """Parse a task's ``webhooks`` array (``None`` → empty).

    Raises:
        InvalidInputError: not a list, too many entries, or an invalid entry.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInputError("Invalid webhooks: must be an array")
    if len(raw) > MAX_WEBHOOKS_PER_TASK:
        raise InvalidInputError(f"Too many webhooks (max {MAX_WEBHOOKS_PER_TASK})")
    return [WebhookConfig.from_dict(item) for item in raw]


@dataclass(slots=True, frozen=True, kw_only=True)
class WebhookDelivery:
    """One event on its way to one webhook, with its delivery state.

    ``body`` is the exact JSON that is POSTed (and signed); ``lease`` is the token of the
    current claim (empty when unclaimed): only its holder may record an outcome.
    """

    id: str
    task_id: str
    event_id: str
    event_type: str
    url: str
    body: str
    secret: str | None = None
    retry: WebhookRetry = WebhookRetry()
    status: DeliveryStatus = "pending"
    attempts: int = 0
    created_at: int
    next_attempt_at: int
    last_attempt_at: int | None = None
    completed_at: int | None = None
    last_error: str | None = None
    response_status: int | None = None
    lease: str = ""
    global_hook: bool = False
    """True for a webhook from the server configuration rather than the task."""

    @property
    def max_attempts(self) -> int:
        return self.retry.attempts

    def to_dict(self) -> dict[str, Any]:
        """Storage form (camelCase, absent optionals omitted; includes the secret)."""
        out: dict[str, Any] = {
            "id": self.id,
            "taskId": self.task_id,
            "eventId": self.event_id,
            "eventType": self.event_type,
            "url": self.url,
            "body": self.body,
            "retry": self.retry.to_dict(),
            "status": self.status,
            "attempts": self.attempts,
            "createdAt": self.created_at,
            "nextAttemptAt": self.next_attempt_at,
            "lease": self.lease,
            "global": self.global_hook,
        }
        for key, value in (
            ("secret", self.secret),
            ("lastAttemptAt", self.last_attempt_at),
            ("completedAt", self.completed_at),
            ("lastError", self.last_error),
            ("responseStatus", self.response_status),
        ):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WebhookDelivery:
        retry_raw = data.get("retry") or {}
        return cls(
            id=data["id"],
            task_id=data["taskId"],
            event_id=data["eventId"],
            event_type=data["eventType"],
            url=data["url"],
            body=data["body"],
            secret=data.get("secret"),
            retry=WebhookRetry().merged(retry_raw),
            status=data.get("status", "pending"),
            attempts=data.get("attempts", 0),
            created_at=data["createdAt"],
            next_attempt_at=data["nextAttemptAt"],
            last_attempt_at=data.get("lastAttemptAt"),
            completed_at=data.get("completedAt"),
            last_error=data.get("lastError"),
            response_status=data.get("responseStatus"),
            lease=data.get("lease", ""),
            global_hook=bool(data.get("global", False)),
        )

    def public_dict(self) -> dict[str, Any]:
        """The API form: no secret, body or lease; the URL redacted (:func:`redact_url`)."""
        out: dict[str, Any] = {
            "id": self.id,
            "taskId": self.task_id,
            "eventId": self.event_id,
            "eventType": self.event_type,
            "url": redact_url(self.url),
            "global": self.global_hook,
            "status": self.status,
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
            "createdAt": self.created_at,
        }
        if self.status == "pending":
            out["nextAttemptAt"] = self.next_attempt_at
        for key, value in (
            ("lastAttemptAt", self.last_attempt_at),
            ("completedAt", self.completed_at),
            ("lastError", self.last_error),
            ("responseStatus", self.response_status),
        ):
            if value is not None:
                out[key] = value
        return out


def new_lease() -> str:
    return secrets.token_hex(12)


class LeaseSettlingOutbox(ABC):
    """The settle operations of a :class:`WebhookOutbox`, written once.

    An outbox provides ``_settle`` (apply ``changes`` to a delivery if ``lease`` still holds
    it, clearing the lease); ``complete``, ``retry_at``, ``fail`` and ``release`` are the same
    for every backend.
    """

    @abstractmethod
    async def _settle(self, delivery_id: str, lease: str, now: int, **changes: Any) -> bool: ...

    async def complete(
        self, delivery_id: str, lease: str, *, now: int, attempts: int, response_status: int | None
    ) -> bool:
        return await self._settle(
            delivery_id,
            lease,
            now,
            status="delivered",
            attempts=attempts,
            last_attempt_at=now,
            completed_at=now,
            response_status=response_status,
            last_error=None,
        )

    async def retry_at(
        self,
        delivery_id: str,
        lease: str,
        *,
        now: int,
        next_attempt_at: int,
        attempts: int,
        error: str,
        response_status: int | None,
    ) -> bool:
        return await self._settle(
            delivery_id,
            lease,
            now,
            attempts=attempts,
            next_attempt_at=next_attempt_at,
            last_attempt_at=now,
            last_error=error,
            response_status=response_status,
        )

    async def fail(
        self,
        delivery_id: str,
        lease: str,
        *,
        now: int,
        attempts: int,
        error: str,
        response_status: int | None,
    ) -> bool:
        return await self._settle(
            delivery_id,
            lease,
            now,
            status="failed",
            attempts=attempts,
            last_attempt_at=now,
            completed_at=now,
            last_error=error,
            response_status=response_status,
        )

    async def release(self, delivery_id: str, lease: str, *, now: int) -> bool:
        return await self._settle(delivery_id, lease, now, next_attempt_at=now)


class MemoryWebhookOutbox(LeaseSettlingOutbox):
    """:class:`~taskcast.core.WebhookOutbox` in this process's memory (not durable).

    For tests and the memory backend: deliveries are lost with the process.
    """

    name = "memory"

    def __init__(self) -> None:
        self._items: dict[str, WebhookDelivery] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def enqueue(self, deliveries: Sequence[WebhookDelivery]) -> None:
        async with self._lock:
            for delivery in deliveries:
                self._items.setdefault(delivery.id, replace(delivery, lease=""))

    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[WebhookDelivery]:
        async with self._lock:
            due = sorted(
                (
                    d
                    for d in self._items.values()
                    if d.status == "pending" and d.next_attempt_at <= now
                ),
                key=lambda d: (d.next_attempt_at, d.id),
            )[:limit]
            claimed = []
            for delivery in due:
                item = replace(delivery, lease=new_lease(), next_attempt_at=now + lease_ms)
                self._items[item.id] = item
                claimed.append(item)
            return claimed

    async def _settle(self, delivery_id: str, lease: str, now: int, **changes: Any) -> bool:
        async with self._lock:
            current = self._items.get(delivery_id)
            if current is None or not lease or current.lease != lease:
                return False
            self._items[delivery_id] = replace(current, lease="", **changes)
            return True

    async def list_for_task(self, task_id: str, limit: int) -> list[WebhookDelivery]:
        async with self._lock:
            items = [d for d in self._items.values() if d.task_id == task_id]
        items.sort(key=lambda d: (d.created_at, d.id), reverse=True)
        return items[:limit]

    async def purge(self, finished_before: int) -> int:
        async with self._lock:
            old = [
                d.id
                for d in self._items.values()
                if d.status != "pending"
                and d.completed_at is not None
                and d.completed_at < finished_before
            ]
            for delivery_id in old:
                del self._items[delivery_id]
            return len(old)
