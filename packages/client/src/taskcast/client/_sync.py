"""The synchronous subscriber (:class:`TaskcastClient`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any, Literal

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

__all__ = ["Subscription", "TaskcastClient"]

logger = logging.getLogger(__name__)


class TaskcastClient:
    """Follows task streams from synchronous code.

    Same arguments as :class:`AsyncTaskcastClient`, with a sync ``refresh_token`` callable,
    an ``httpx.BaseTransport`` and an ``httpx.Client``. Use it as a context manager, or
    call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        token: str | None = None,
        refresh_token: Callable[[], str | None] | None = None,
        reconnect: ReconnectConfig | None = None,
        timeout: float | httpx.Timeout = 10.0,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.refresh_token = refresh_token
        self.reconnect = reconnect or ReconnectConfig()
        self.timeout = sse_timeout(timeout)
        self._owns_client = http_client is None
        self._http = http_client or httpx.Client(transport=transport)

    def __enter__(self) -> TaskcastClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (unless it was passed in)."""
        if self._owns_client:
            self._http.close()

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
    ) -> Subscription:
        """Follow one task: ``for item in client.subscribe(task_id): ...``.

        See :meth:`AsyncTaskcastClient.subscribe`; use ``with`` (or
        :meth:`Subscription.close`) to close the connection as soon as you stop early.
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
        return Subscription(self, task_id, options)

    def listen(
        self,
        task_id: str,
        *,
        on_event: Callable[[StreamEvent], Any],
        on_done: Callable[[str], Any] | None = None,
        on_error: Callable[[Exception], Any] | None = None,
        on_resync: Callable[[Resync], Any] | None = None,
        **filters: Any,
    ) -> str | None:
        """Follow a task with callbacks until it is done; see
        :meth:`AsyncTaskcastClient.listen`."""
        try:
            with self.subscribe(task_id, **filters) as subscription:
                for item in subscription:
                    if isinstance(item, Resync):
                        if on_resync is not None:
                            on_resync(item)
                    else:
                        on_event(item)
                reason = subscription.done_reason
        except Exception as exc:
            if on_error is None:
                raise
            on_error(exc)
            return None
        if on_done is not None and reason is not None:
            on_done(reason)
        return reason

    def _refreshed_token(self) -> str | None:
        if self.refresh_token is None:
            return None
        token = self.refresh_token()
        if token:
            self.token = token
        return token or None


class Subscription:
    """An iterator over one task's stream (see :meth:`TaskcastClient.subscribe`).

    Attributes:
        done_reason: The ``taskcast.done`` reason once the stream ended, else None.
    """

    def __init__(self, client: TaskcastClient, task_id: str, options: SubscribeOptions) -> None:
        self.client = client
        self.task_id = task_id
        self._state = StreamState(options)
        self._gen: Generator[StreamEvent | Resync, None, None] | None = None

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

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> StreamEvent | Resync:
        if self._gen is None:
            self._gen = self._run()
        return next(self._gen)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop: close the HTTP response now. Safe to call more than once."""
        if self._gen is not None:
            self._gen.close()

    def _run(self) -> Generator[StreamEvent | Resync, None, None]:
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
                with client._http.stream(
                    "GET", url, params=params, headers=headers, timeout=client.timeout
                ) as response:
                    if response.status_code == 401 and not refreshed:
                        refreshed = True
                        if client._refreshed_token() is not None:
                            logger.info("Token refreshed for task %s, reconnecting", self.task_id)
                            continue
                    if not response.is_success:
                        response.read()
                        raise error_from_response(response)
                    refreshed = False
                    for sse in EventSource(response).iter_sse():
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
            time.sleep(delay)
