"""The asynchronous subscriber (:class:`AsyncTaskcastClient`); runs on asyncio or trio."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any, Literal

import anyio
import httpx
from httpx_sse import EventSource, SSEError

from ._errors import (
    StreamInterruptedError,
    TaskcastClientError,
    TaskcastHTTPError,
    error_from_response,
)
from ._models import ReconnectConfig, Resync, StreamEvent, SubscribeOptions
from ._state import (
    DEFAULT_BASE_URL,
    DONE,
    StreamState,
    make_options,
    sse_timeout,
    task_events_url,
)

__all__ = ["AsyncSubscription", "AsyncTaskcastClient"]

logger = logging.getLogger(__name__)

AsyncTokenRefresher = Callable[[], "str | Awaitable[str | None] | None"]


class AsyncTaskcastClient:
    """Follows task streams from async code.

    Args:
        base_url: The server's root URL.
        token: Sent as ``Authorization: Bearer <token>``.
        refresh_token: Called (sync or async) when the server answers 401; return a new
            token to retry with it at once, or None to give up with :class:`UnauthorizedError`.
        reconnect: How dropped streams are re-established.
        timeout: Seconds (or an ``httpx.Timeout``) to connect, write and wait for a pool slot.
            Reads have no timeout unless an ``httpx.Timeout`` sets one: idle streams are normal.
        transport: An httpx async transport (e.g. ``httpx.MockTransport``).
        http_client: A ready ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        token: str | None = None,
        refresh_token: AsyncTokenRefresher | None = None,
        reconnect: ReconnectConfig | None = None,
        timeout: float | httpx.Timeout = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.refresh_token = refresh_token
        self.reconnect = reconnect or ReconnectConfig()
        self.timeout = sse_timeout(timeout)
        self._owns_client = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport)

    async def __aenter__(self) -> AsyncTaskcastClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (unless it was passed in)."""
        if self._owns_client:
            await self._http.aclose()

    def subscribe(
        self,
        task_id: str,
        *,
        types: Iterable[str] | None = None,
        levels: Iterable[str] | None = None,
        include_status: bool = True,
        wrap: bool = True,
        series_format: Literal["delta", "accumulated"] | None = None,
        since_id: str | None = None,
        since_index: int | None = None,
        since_timestamp: int | None = None,
    ) -> AsyncSubscription:
        """Follow one task: ``async for item in client.subscribe(task_id): ...``.

        Yields :class:`StreamEvent` items in index order, each exactly once, and a
        :class:`Resync` when the server could not resume from the cursor; ends when the
        server sends ``taskcast.done`` (see ``done_reason``). Reconnects by itself. When an
        archive import overwrites the task (``taskcast.done`` with reason ``replaced``) it
        does not end: it yields ``Resync(reason="replaced")`` and then the new history from
        its start (``since_*`` no longer apply).
        Use ``async with`` (or :meth:`AsyncSubscription.aclose`) to close the connection as
        soon as you stop early.
        """
        options = make_options(
            types=types,
            levels=levels,
            include_status=include_status,
            wrap=wrap,
            series_format=series_format,
            since_id=since_id,
            since_index=since_index,
            since_timestamp=since_timestamp,
        )
        return AsyncSubscription(self, task_id, options)

    async def listen(
        self,
        task_id: str,
        *,
        on_event: Callable[[StreamEvent], Any],
        on_done: Callable[[str], Any] | None = None,
        on_error: Callable[[Exception], Any] | None = None,
        on_resync: Callable[[Resync], Any] | None = None,
        **filters: Any,
    ) -> str | None:
        """Follow a task with callbacks (each may be sync or async) until it is done.

        Returns the done reason. With ``on_error`` a failure is handed to it and ``None``
        returned; without, it is raised. ``filters`` are :meth:`subscribe`'s keywords.
        """
        try:
            async with self.subscribe(task_id, **filters) as subscription:
                async for item in subscription:
                    if isinstance(item, Resync):
                        if on_resync is not None:
                            await _call(on_resync, item)
                    else:
                        await _call(on_event, item)
                reason = subscription.done_reason
        except Exception as exc:
            if on_error is None:
                raise
            await _call(on_error, exc)
            return None
        if on_done is not None and reason is not None:
            await _call(on_done, reason)
        return reason

    async def _refreshed_token(self) -> str | None:
        if self.refresh_token is None:
            return None
        token = self.refresh_token()
        if inspect.isawaitable(token):
            token = await token
        if token:
            self.token = token
        return token or None


async def _call(callback: Callable[..., Any], *args: Any) -> None:
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


class AsyncSubscription:
    """An async iterator over one task's stream (see :meth:`AsyncTaskcastClient.subscribe`).

    Attributes:
        done_reason: The ``taskcast.done`` reason once the stream ended (``completed``,
            ``failed``, ``timeout``, ``cancelled`` or ``deleted``), else None. Never
            ``replaced``: that is followed (a :class:`Resync`), not an end.
    """

    def __init__(
        self, client: AsyncTaskcastClient, task_id: str, options: SubscribeOptions
    ) -> None:
        self.client = client
        self.task_id = task_id
        self._state = StreamState(options)
        self._gen: AsyncGenerator[StreamEvent | Resync, None] | None = None

    @property
    def done_reason(self) -> str | None:
        return self._state.done_reason

    @property
    def last_event_id(self) -> str | None:
        """Id of the last delivered event: the resume cursor."""
        return self._state.last_event_id

    @property
    def connections(self) -> int:
        """Connection attempts so far (1 + reconnects)."""
        return self._state.connections

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> StreamEvent | Resync:
        if self._gen is None:
            self._gen = self._run()
        return await self._gen.__anext__()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: close the HTTP response now. Safe to call more than once."""
        if self._gen is not None:
            await self._gen.aclose()

    async def _run(self) -> AsyncGenerator[StreamEvent | Resync, None]:
        client, state = self.client, self._state
        url = task_events_url(client.base_url, self.task_id)
        failures = 0
        failing_since = 0.0
        refreshed = False
        while True:
            params, headers = state.begin(client.token)
            failure: Exception | None = None
            restart = False
            try:
                async with client._http.stream(
                    "GET", url, params=params, headers=headers, timeout=client.timeout
                ) as response:
                    if response.status_code == 401 and not refreshed:
                        refreshed = True
                        if await client._refreshed_token() is not None:
                            logger.info("Token refreshed for task %s, reconnecting", self.task_id)
                            continue
                    if not response.is_success:
                        await response.aread()
                        raise error_from_response(response)
                    refreshed = False
                    async for sse in EventSource(response).aiter_sse():
                        item = state.handle(sse)
                        if item is None:
                            continue
                        if item is DONE:
                            return
                        failures = 0
                        yield item
                        if state.restart:
                            # The task was replaced (archive import): follow its new history
                            # now, without a cursor; this is not a failure, so no delay.
                            restart = True
                            break
            except SSEError as exc:
                raise TaskcastClientError(f"Not an SSE stream: {exc}") from exc
            except httpx.TransportError as exc:
                failure = exc
            except TaskcastHTTPError as exc:
                if not exc.retryable:
                    raise
                failure = exc
            if restart:
                logger.info("Task %s was replaced; following its new history", self.task_id)
                continue
            failures += 1
            if failures == 1:
                failing_since = time.monotonic()
            if client.reconnect.gives_up(failures, time.monotonic() - failing_since):
                raise StreamInterruptedError(
                    f"Stream of task {self.task_id} interrupted: "
                    f"{failure or 'closed without taskcast.done'}"
                ) from failure
            delay = client.reconnect.delay(failures, state.retry_ms)
            logger.info(
                "Stream of task %s %s; reconnecting in %.2fs",
                self.task_id,
                f"failed ({failure!r})" if failure else "closed without taskcast.done",
                delay,
            )
            await anyio.sleep(delay)
