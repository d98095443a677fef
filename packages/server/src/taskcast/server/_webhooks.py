"""Webhook delivery: enqueue matching events durably, then POST them signed, with retries.

Flow (docs/api/webhooks.md):

1. The engine awaits its ``on_events_published`` hook before the publishing request is
   answered. :class:`WebhookDispatcher` registers that hook and writes one
   :class:`~taskcast.core.WebhookDelivery` per (event, matching webhook) into the
   :class:`~taskcast.core.WebhookOutbox` — so an acknowledged event's deliveries are stored.
2. A background loop claims due deliveries under a lease, POSTs each (per-attempt timeout),
   and records delivered / retry at *t* / failed. A crashed process's claims come back when
   their lease runs out; delivery is at-least-once (receivers dedupe by ``webhook-id``).
3. After the last attempt fails, the engine's ``on_webhook_failed`` hook is called.

Metrics hear about each attempt's outcome through :attr:`WebhookDispatcher.observer`
(unset unless metrics are on, so delivery pays nothing for them by default).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import httpx

from taskcast.core import (
    ConfigError,
    InvalidInputError,
    MemoryWebhookOutbox,
    StopSignal,
    TaskcastError,
    TaskcastHooks,
    TaskEngine,
    TaskEvent,
    UsageError,
    WebhookConfig,
    WebhookDelivery,
    WebhookOutbox,
    WebhookRetry,
    envelope_dict,
    new_id,
    now_ms,
    parse_webhooks,
    redact_url,
    stop_task,
)

__all__ = [
    "WebhookDeliveryError",
    "WebhookDispatcher",
    "WebhookObserver",
    "WebhookRefusedError",
    "WebhookSettings",
    "sign_headers",
]

logger = logging.getLogger(__name__)

_CACHE_SIZE: Final = 10_000


class WebhookDeliveryError(TaskcastError):
    """A delivery failed for good; passed to ``on_webhook_failed``."""

    def __init__(self, message: str, *, attempts: int, last_error: str) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error


class WebhookRefusedError(TaskcastError):
    """The webhook's host resolves to an address deliveries may not go to."""


class WebhookObserver(Protocol):
    """Told what delivery attempts come to (metrics). Called on the event loop; must not
    block."""

    def on_webhook_attempt(self, outcome: str, seconds: float) -> None:
        """An attempt's outcome was recorded: ``delivered`` (2xx), ``retried`` (failed,
        another attempt scheduled), ``failed`` (the last attempt failed, or the URL is
        unusable) or ``refused`` (the target resolves to a non-public address); the attempt
        took ``seconds``."""

    def on_webhook_outbox_error(self) -> None:
        """An outbox operation (claim, record an outcome, purge) failed."""


@dataclass(slots=True, frozen=True, kw_only=True)
class WebhookSettings:
    """How the server delivers webhooks (per-task ones and ``global_hooks``).

    ``global_hooks`` entries may be :class:`~taskcast.core.WebhookConfig` objects or their
    wire-form dicts (``{"url", "filter"?, "secret"?, "wrap"?, "retry"?}``).
    """

    global_hooks: Sequence[WebhookConfig | Mapping[str, Any]] = ()
    """Webhooks that receive the matching events of every task."""
    allow_private: bool = False
    """Allow targets on private, loopback, link-local and other non-global addresses."""
    default_retry: WebhookRetry = field(default_factory=WebhookRetry)
    """Policy for webhooks that set no ``retry`` (a webhook's keys are laid over it)."""
    poll_seconds: float = 0.5
    """How often the outbox is checked for due deliveries (also woken on local enqueue)."""
    lease_seconds: float = 60.0
    """How long a claimed delivery stays hidden from other claimers (bounds an attempt)."""
    max_in_flight: int = 32
    """Most deliveries sent at once by this process."""
    retention_seconds: float = 7 * 24 * 3600.0
    """Delivered and failed records older than this are purged (0 keeps them)."""
    stop_timeout_seconds: float = 5.0
    """Longest :meth:`WebhookDispatcher.stop` waits for its loop and the deliveries in flight
    (then for giving those back); whatever still runs after that is logged and left (a
    delivery not given back is claimed again when its lease runs out)."""
    user_agent: str = "Taskcast-Webhooks/1"

    def __post_init__(self) -> None:
        hooks: list[WebhookConfig] = []
        for hook in self.global_hooks:
            if isinstance(hook, WebhookConfig):
                hooks.append(hook)
                continue
            try:
                hooks.append(WebhookConfig.from_dict(hook))
            except InvalidInputError as exc:
                raise ConfigError(f"global webhook: {exc}") from None
        object.__setattr__(self, "global_hooks", tuple(hooks))
        if self.poll_seconds <= 0:
            raise ConfigError("webhooks poll_seconds must be positive")
        if self.lease_seconds < 2:
            raise ConfigError("webhooks lease_seconds must be at least 2")
        if self.max_in_flight < 1:
            raise ConfigError("webhooks max_in_flight must be positive")
        if self.retention_seconds < 0:
            raise ConfigError("webhooks retention_seconds must not be negative")
        if self.stop_timeout_seconds <= 0:
            raise ConfigError("webhooks stop_timeout_seconds must be positive")

    @property
    def hooks(self) -> tuple[WebhookConfig, ...]:
        return tuple(h for h in self.global_hooks if isinstance(h, WebhookConfig))


def _hmac_key(secret: str) -> bytes:
    # Standard Webhooks secrets are ``whsec_`` + base64 key bytes; any other secret is
    # used as its UTF-8 bytes (the X-Taskcast-Signature header always uses UTF-8 bytes).
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def sign_headers(
    body: bytes, *, delivery_id: str, event_type: str, secret: str | None, timestamp: int
) -> dict[str, str]:
    """The headers of one attempt: the original's ``X-Taskcast-*`` and Standard Webhooks.

    ``timestamp`` is the send time in Unix seconds. With a ``secret``:
    ``X-Taskcast-Signature: sha256=<hex HMAC-SHA256(secret, body)>`` (the original's,
    timestamp not signed) and ``webhook-signature: v1,<base64 HMAC-SHA256(key,
    "{id}.{timestamp}.{body}")>``.
    """
    ts = str(timestamp)
    headers = {
        "Content-Type": "application/json",
        "X-Taskcast-Event": event_type,
        "X-Taskcast-Timestamp": ts,
        "X-Taskcast-Delivery": delivery_id,
        "webhook-id": delivery_id,
        "webhook-timestamp": ts,
    }
    if secret:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Taskcast-Signature"] = f"sha256={digest}"
        signed = f"{delivery_id}.{ts}.".encode() + body
        mac = hmac.new(_hmac_key(secret), signed, hashlib.sha256).digest()
        headers["webhook-signature"] = "v1," + base64.b64encode(mac).decode()
    return headers


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve_public(host: str, port: int) -> str:
    """One address of ``host``, refusing hosts with any non-global address.

    Raises:
        WebhookRefusedError: the host resolves to a private/loopback/link-local/... address.
        OSError: the name does not resolve.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if not _is_public(address):
            raise WebhookRefusedError(
                f"Refused: {host} resolves to non-public address {address} "
                "(set allow_private to deliver to private networks)"
            )
    return addresses[0]


def _body(event: TaskEvent, wrap: bool) -> str:
    if wrap:
        payload = envelope_dict(event, event.index, event.data)
    else:
        payload = event.to_dict()
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class WebhookDispatcher:
    """Turns published events into outbox deliveries and sends them.

    Args:
        engine: Its hooks gain ``on_events_published`` / ``on_task_created`` handlers; its
            ``on_webhook_failed`` hooks hear about final failures.
        settings: Global hooks, SSRF switch, retry default, timings.
        outbox: Where deliveries wait; default: the short-term store's own outbox
            (``store.webhook_outbox()``, e.g. SQLite or Redis) or else in memory.
        transport: An httpx transport (tests).
    """

    def __init__(
        self,
        engine: TaskEngine,
        settings: WebhookSettings | None = None,
        *,
        outbox: WebhookOutbox | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings or WebhookSettings()
        if outbox is None:
            factory = getattr(engine.short_term, "webhook_outbox", None)
            outbox = factory() if callable(factory) else MemoryWebhookOutbox()
        self.outbox: WebhookOutbox = outbox
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = StopSignal()
        self._inflight: dict[asyncio.Task[None], WebhookDelivery] = {}
        self._wake = asyncio.Event()
        self._next_local_due: int | None = None
        self._running = False
        self._last_purge = 0
        self._hooks_cache: OrderedDict[str, tuple[WebhookConfig, ...]] = OrderedDict()
        # Settings are frozen: the global hooks are paired once, not on every publish.
        self._global_hooks = [(h, True) for h in self.settings.hooks]
        self.observer: WebhookObserver | None = None
        """Told each attempt's outcome (set by the app when metrics are on)."""
        engine.hooks.add(
            TaskcastHooks(on_events_published=self._on_published, on_task_created=self._on_created)
        )

    @property
    def running(self) -> bool:
        return self._running

    @property
    def in_flight(self) -> int:
        """Deliveries being attempted by this process."""
        return len(self._inflight)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the outbox and start sending (idempotent)."""
        if self._running:
            return
        await self.outbox.open()
        self._client = httpx.AsyncClient(
            transport=self._transport,
            follow_redirects=False,
            headers={"User-Agent": self.settings.user_agent},
        )
        self._wake = asyncio.Event()
        # One event per run: a loop left over from an earlier run still sees its own stop.
        self._stopping = StopSignal()
        self._running = True
        self._loop_task = asyncio.create_task(self._run(self._stopping), name="taskcast-webhooks")

    async def stop(self) -> None:
        """Stop sending; deliveries in flight are given back to the outbox unattempted.

        Bounded: the loop and the deliveries in flight get ``settings.stop_timeout_seconds``
        in all to end, and giving the cancelled deliveries back gets what remains of it (at
        least a second). Anything still running then is logged and left behind; a delivery
        not given back is claimed again once its lease runs out.
        """
        if not self._running:
            return
        self._running = False
        loop = asyncio.get_running_loop()
        limit = self.settings.stop_timeout_seconds
        deadline = loop.time() + limit
        loop_task, self._loop_task = self._loop_task, None
        if loop_task is not None:
            # The loop ends at its next check of the stop signal even if the cancellation
            # is lost on the way (see _run); the cancel only cuts short an outbox call.
            self._wake.set()
            await stop_task(
                loop_task,
                self._stopping,
                timeout=limit,
                what="webhook dispatcher loop",
                log=logger,
            )
        inflight = dict(self._inflight)
        for task in inflight:
            task.cancel()
        if inflight:
            await asyncio.wait(inflight, timeout=max(0.0, deadline - loop.time()))
        given_back = [delivery for task, delivery in inflight.items() if task.cancelled()]
        running = [delivery.id for task, delivery in inflight.items() if not task.done()]
        for task, delivery in inflight.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.error("webhook delivery %s failed", delivery.id, exc_info=task.exception())
        if running:
            logger.warning(
                "%d webhook deliveries still running after %.1f s, left to their leases: %s",
                len(running),
                limit,
                ", ".join(running),
            )
        if given_back:
            releasing = asyncio.create_task(self._release(given_back))
            await asyncio.wait({releasing}, timeout=max(1.0, deadline - loop.time()))
            if not releasing.done():
                releasing.cancel()
                logger.warning(
                    "giving webhook deliveries back did not finish in time; "
                    "the rest are claimed again when their leases run out"
                )
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await self.outbox.close()

    async def _release(self, deliveries: Sequence[WebhookDelivery]) -> None:
        for delivery in deliveries:
            try:
                await self.outbox.release(delivery.id, delivery.lease, now=now_ms())
            except Exception as exc:  # its lease runs out instead
                logger.warning("could not release webhook delivery %s: %s", delivery.id, exc)

    # -- enqueue ---------------------------------------------------------------------

    def _remember(self, task_id: str, hooks: tuple[WebhookConfig, ...]) -> None:
        self._hooks_cache[task_id] = hooks
        self._hooks_cache.move_to_end(task_id)
        while len(self._hooks_cache) > _CACHE_SIZE:
            self._hooks_cache.popitem(last=False)

    def _parse(self, task_id: str, raw: object) -> tuple[WebhookConfig, ...]:
        try:
            return tuple(parse_webhooks(raw))
        except UsageError as exc:
            # Stored before validation existed (or by another writer): skip, say why.
            logger.warning("task %s has invalid webhooks, ignored: %s", task_id, exc)
            return ()

    async def _on_created(self, task: Any) -> None:
        self._remember(task.id, self._parse(task.id, task.webhooks))

    async def _task_hooks(self, task_id: str) -> tuple[WebhookConfig, ...]:
        # A task's webhooks never change after creation, so the parsed list is cached.
        cached = self._hooks_cache.get(task_id)
        if cached is not None:
            self._hooks_cache.move_to_end(task_id)
            return cached
        task = await self.engine.get_task(task_id)
        hooks = () if task is None else self._parse(task_id, task.webhooks)
        self._remember(task_id, hooks)
        return hooks

    def deliveries_for(
        self, events: Sequence[TaskEvent], hooks: Sequence[tuple[WebhookConfig, bool]]
    ) -> list[WebhookDelivery]:
        """One delivery per (event, matching hook); ``hooks`` pairs carry "is global"."""
        now = now_ms()
        out = []
        for event in events:
            for hook, is_global in hooks:
                if not hook.matches(event):
                    continue
                out.append(
                    WebhookDelivery(
                        id=new_id(),
                        task_id=event.task_id,
                        event_id=event.id,
                        event_type=event.type,
                        url=hook.url,
                        body=_body(event, hook.wrap),
                        secret=hook.secret,
                        retry=hook.policy(self.settings.default_retry),
                        created_at=now,
                        next_attempt_at=now,
                        global_hook=is_global,
                    )
                )
        return out

    async def _on_published(self, task_id: str, events: Sequence[TaskEvent]) -> None:
        if not self._running:
            return
        own = await self._task_hooks(task_id)
        if not own and not self._global_hooks:
            return
        hooks = self._global_hooks + [(h, False) for h in own]
        deliveries = self.deliveries_for(events, hooks)
        if deliveries:
            await self.outbox.enqueue(deliveries)
            self._wake.set()

    # -- sending ---------------------------------------------------------------------

    async def _run(self, stopping: asyncio.Event) -> None:
        # The loop ends when ``stopping`` is set, not only when a CancelledError reaches it:
        # a cancellation can be lost on the way. On Python 3.11 asyncio.wait_for returns the
        # inner result when the cancel lands after the inner task finished but before
        # wait_for resumed (CPython gh-86296, fixed in 3.12), and redis-py wraps the socket
        # write of every command in wait_for, so a stop arriving during an outbox claim was
        # often lost; a loop that only cancellation could end then ran forever and held up
        # stop() and the server's shutdown.
        lease_ms = int(self.settings.lease_seconds * 1000)
        loop = asyncio.get_running_loop()
        while not stopping.is_set():
            self._wake.clear()
            free = self.settings.max_in_flight - len(self._inflight)
            full = False
            if free > 0:
                now = now_ms()
                if self._next_local_due is not None and self._next_local_due <= now:
                    self._next_local_due = None
                try:
                    batch = await self.outbox.claim_due(now, free, lease_ms)
                except Exception as exc:
                    logger.warning("webhook outbox claim failed: %s", exc)
                    self._outbox_error()
                    batch = []
                if stopping.is_set():
                    # Stopped during the claim and its cancellation lost: give the batch
                    # back unattempted, as stop() does with deliveries in flight.
                    await self._release(batch)
                    return
                for delivery in batch:
                    task = asyncio.create_task(self._deliver(delivery))
                    self._inflight[task] = delivery
                    task.add_done_callback(self._finished)
                full = len(batch) == free
                await self._maybe_purge(now)
            if full:
                await asyncio.sleep(0)
                continue
            timeout = self.settings.poll_seconds
            if self._next_local_due is not None:
                timeout = max(0.0, min(timeout, (self._next_local_due - now_ms()) / 1000))
            # A timer sets the wake event: no inner task, no wait_for (see above).
            timer = loop.call_later(timeout, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wake.set()

    async def _maybe_purge(self, now: int) -> None:
        retention = self.settings.retention_seconds
        if retention <= 0 or now - self._last_purge < 3_600_000:
            return
        self._last_purge = now
        try:
            purged = await self.outbox.purge(now - int(retention * 1000))
        except Exception as exc:
            logger.warning("webhook outbox purge failed: %s", exc)
            self._outbox_error()
            return
        if purged:
            logger.info("purged %d finished webhook deliveries", purged)

    async def _send(self, delivery: WebhookDelivery) -> int:
        client = self._client
        assert client is not None
        url = httpx.URL(delivery.url)
        body = delivery.body.encode()
        headers = sign_headers(
            body,
            delivery_id=delivery.id,
            event_type=delivery.event_type,
            secret=delivery.secret,
            timestamp=now_ms() // 1000,
        )
        extensions: dict[str, Any] = {}
        if not self.settings.allow_private:
            host = url.host
            port = url.port or (443 if url.scheme == "https" else 80)
            address = await resolve_public(host, port)
            # Connect to the address just checked, so a second DNS answer cannot point
            # the request somewhere else (DNS rebinding); TLS still verifies the name.
            headers["Host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = host
            url = url.copy_with(host=address)
        request = client.build_request(
            "POST", url, content=body, headers=headers, extensions=extensions
        )
        response = await client.send(request, stream=True)
        # The receiver's body is never read: a status code is all a delivery needs.
        await response.aclose()
        return response.status_code

    def _outbox_error(self) -> None:
        if self.observer is not None:
            self.observer.on_webhook_outbox_error()

    def _observe(self, outcome: str, seconds: float) -> None:
        if self.observer is not None:
            self.observer.on_webhook_attempt(outcome, seconds)

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        attempt = delivery.attempts + 1
        timeout = min(delivery.retry.timeout_ms / 1000, self.settings.lease_seconds - 1)
        status: int | None = None
        error: str | None = None
        final = refused = False
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                status = await self._send(delivery)
        except WebhookRefusedError as exc:
            error, final, refused = exc.message, True, True
        except httpx.InvalidURL as exc:
            error, final = f"Invalid URL: {exc}", True
        except TimeoutError:
            error = f"Timed out after {delivery.retry.timeout_ms} ms"
        except httpx.TimeoutException:
            error = f"Timed out after {delivery.retry.timeout_ms} ms"
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        except Exception as exc:
            # Anything else is unexpected: record it (and retry) rather than let the task
            # die with the lease held, which would only delay the same failure.
            logger.exception("unexpected error delivering webhook %s", delivery.id)
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        seconds = time.perf_counter() - started
        now = now_ms()
        try:
            if error is None and status is not None and 200 <= status < 300:
                await self.outbox.complete(
                    delivery.id,
                    delivery.lease,
                    now=now,
                    attempts=attempt,
                    response_status=status,
                )
                self._observe("delivered", seconds)
                return
            if error is None:
                error = f"HTTP {status}"
            if final or attempt >= delivery.max_attempts:
                recorded = await self.outbox.fail(
                    delivery.id,
                    delivery.lease,
                    now=now,
                    attempts=attempt,
                    error=error,
                    response_status=status,
                )
                self._observe("refused" if refused else "failed", seconds)
                if recorded:
                    await self._report_failure(delivery, attempt, error)
                return
            due = now + delivery.retry.delay_ms(attempt)
            await self.outbox.retry_at(
                delivery.id,
                delivery.lease,
                now=now,
                next_attempt_at=due,
                attempts=attempt,
                error=error,
                response_status=status,
            )
            self._observe("retried", seconds)
            if self._next_local_due is None or due < self._next_local_due:
                self._next_local_due = due
        except Exception as exc:
            # The outcome could not be recorded: the lease runs out and the delivery is
            # attempted again (at-least-once).
            logger.warning("could not record webhook delivery %s: %s", delivery.id, exc)
            self._outbox_error()

    async def _report_failure(self, delivery: WebhookDelivery, attempts: int, error: str) -> None:
        logger.warning(
            "webhook delivery %s to %s failed after %d attempts: %s",
            delivery.id,
            redact_url(delivery.url),
            attempts,
            error,
        )
        exc = WebhookDeliveryError(
            f"Webhook delivery failed after {attempts} attempts: {error}",
            attempts=attempts,
            last_error=error,
        )
        info = {
            "url": delivery.url,
            "taskId": delivery.task_id,
            "deliveryId": delivery.id,
            "eventId": delivery.event_id,
            "attempts": attempts,
        }
        await self.engine.hooks.fire("on_webhook_failed", info, exc)
