"""The asynchronous client (:class:`AsyncTaskcastServerClient`); runs on asyncio or trio."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import httpx
from anyio.streams.memory import MemoryObjectSendStream

from . import _calls as calls
from ._batching import ChunkBuffer, StreamSpec
from ._calls import NO_BODY, Call, RetryConfig
from ._client import DEFAULT_BASE_URL, build_headers, parse_response
from ._errors import TaskcastHTTPError, TaskcastTransportError, error_from_response
from ._models import (
    ArchiveImportResult,
    BlockedRequest,
    EventInput,
    Health,
    Level,
    PublishStreamResult,
    SeriesMode,
    ServerInfo,
    Task,
    TaskError,
    TaskEvent,
    TaskPage,
    TaskStatus,
)
from ._run import exit_transition

__all__ = ["AsyncTaskRun", "AsyncTaskcastServerClient"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a cancelled run() block may spend telling the server the task was cancelled.
_CANCEL_GRACE = 5.0


class AsyncTaskcastServerClient:
    """Asynchronous client for a Taskcast server's REST API.

    Same arguments and methods as :class:`TaskcastServerClient`, as coroutines;
    ``transport`` is an ``httpx.AsyncBaseTransport`` and ``http_client`` an
    ``httpx.AsyncClient``. Use it as an async context manager, or call :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout = 10.0,
        retry: RetryConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        max_batch: int = 1000,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.retry = retry or RetryConfig()
        self.max_batch = max_batch
        self._owns_client = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncTaskcastServerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying connection pool (unless it was passed in)."""
        if self._owns_client:
            await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            more = attempt < self.retry.attempts
            try:
                response = await self._http.request(
                    call.method,
                    self.base_url + call.path,
                    params=call.params or None,
                    json=None if call.body is NO_BODY else call.body,
                    headers=build_headers(self.token),
                )
            except httpx.TransportError as exc:
                if more and call.retryable_error(exc):
                    delay = self.retry.delay(attempt)
                    logger.info(
                        "%s %s failed (%r), retrying in %.2fs", call.method, call.path, exc, delay
                    )
                    await anyio.sleep(delay)
                    continue
                raise TaskcastTransportError(f"{call.method} {call.path} failed: {exc!r}") from exc
            if response.is_success:
                return parse_response(call, response)
            if more and call.retryable_status(response.status_code, self.retry):
                delay = self.retry.delay(attempt, response)
                logger.info(
                    "%s %s answered %d, retrying in %.2fs",
                    call.method,
                    call.path,
                    response.status_code,
                    delay,
                )
                await anyio.sleep(delay)
                continue
            raise error_from_response(response)

    # -- tasks -----------------------------------------------------------------------------

    async def create_task(
        self,
        *,
        id: str | None = None,
        type: str | None = None,
        params: Mapping[str, Any] | None = None,
        result: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        ttl: int | None = None,
        tags: Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Task:
        """Create a task (``POST /tasks``); see :meth:`TaskcastServerClient.create_task`."""
        return await self._send(
            calls.create_task(
                id=id,
                type=type,
                params=params,
                result=result,
                metadata=metadata,
                ttl=ttl,
                tags=tags,
                extra=extra,
            )
        )

    async def get_task(self, task_id: str) -> Task:
        """Fetch a task (``GET /tasks/{id}``); raises :class:`NotFoundError`."""
        return await self._send(calls.get_task(task_id))

    async def list_tasks(
        self,
        *,
        status: str | Iterable[str] | None = None,
        type: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of tasks (``GET /tasks``); pass ``page.next_cursor`` as ``cursor``."""
        return await self._send(
            calls.list_tasks(status=status, type=type, limit=limit, cursor=cursor)
        )

    async def iter_tasks(
        self,
        *,
        status: str | Iterable[str] | None = None,
        type: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Task]:
        """Every matching task, fetching page after page."""
        statuses = None if status is None or isinstance(status, str) else list(status)
        cursor: str | None = None
        while True:
            page = await self.list_tasks(
                status=status if statuses is None else statuses,
                type=type,
                limit=page_size,
                cursor=cursor,
            )
            for task in page.tasks:
                yield task
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def delete_task(self, task_id: str) -> None:
        """Delete a task and its events (``DELETE /tasks/{id}``)."""
        await self._send(calls.delete_task(task_id))

    async def transition_task(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        result: Mapping[str, Any] | None = None,
        error: TaskError | Mapping[str, Any] | str | None = None,
        reason: str | None = None,
        ttl: int | None = None,
        resume_after_ms: int | None = None,
        blocked_request: BlockedRequest | Mapping[str, Any] | None = None,
    ) -> Task:
        """Move a task to ``status`` (``PATCH /tasks/{id}/status``)."""
        return await self._send(
            calls.transition_task(
                task_id,
                status,
                result=result,
                error=error,
                reason=reason,
                ttl=ttl,
                resume_after_ms=resume_after_ms,
                blocked_request=blocked_request,
            )
        )

    async def resolve(self, task_id: str, data: Any = None) -> Task:
        """Answer a ``blocked`` task's request and resume it (``POST /tasks/{id}/resolve``)."""
        return await self._send(calls.resolve(task_id, data))

    async def get_request(self, task_id: str) -> BlockedRequest:
        """What a ``blocked`` task waits for (``GET /tasks/{id}/request``)."""
        return await self._send(calls.get_request(task_id))

    # -- archives --------------------------------------------------------------------------

    async def export_task_archive(self, task_id: str) -> dict[str, Any]:
        """The task and its compacted history as a ``taskcast.taskArchive`` document
        (``GET /tasks/{id}/archive``); JSON-serialisable as it is."""
        return await self._send(calls.export_task_archive(task_id))

    async def import_task_archive(
        self, archive: Mapping[str, Any], *, overwrite: bool = False
    ) -> ArchiveImportResult:
        """Store an archive (``POST /tasks/import``); see the sync client."""
        return await self._send(calls.import_task_archive(archive, overwrite=overwrite))

    # -- events ----------------------------------------------------------------------------

    async def publish_event(
        self,
        task_id: str,
        type: str,
        data: Any = None,
        *,
        level: Level = "info",
        series_id: str | None = None,
        series_mode: SeriesMode | None = None,
        series_acc_field: str | None = None,
        idempotency_key: str | None = None,
    ) -> TaskEvent:
        """Publish one event; see :meth:`TaskcastServerClient.publish_event`."""
        item = calls.event_input(
            type,
            data,
            level=level,
            series_id=series_id,
            series_mode=series_mode,
            series_acc_field=series_acc_field,
            idempotency_key=idempotency_key,
        )
        return await self._send(calls.publish_event(task_id, item))

    async def publish_events(
        self, task_id: str, events: Iterable[EventInput | Mapping[str, Any]]
    ) -> list[TaskEvent]:
        """Publish several events in order, ``max_batch`` per request."""
        out: list[TaskEvent] = []
        for call in calls.publish_events(task_id, events, self.max_batch):
            batch = await self._send(call)
            out.extend(batch)
        return out

    async def get_history(
        self,
        task_id: str,
        *,
        since_id: str | None = None,
        since_index: int | None = None,
        since_timestamp: int | None = None,
        limit: int | None = None,
        series_format: str | None = None,
        types: str | Iterable[str] | None = None,
        levels: str | Iterable[str] | None = None,
    ) -> list[TaskEvent]:
        """Stored events in index order (``GET /tasks/{id}/events/history``)."""
        return await self._send(
            calls.get_history(
                task_id,
                since_id=since_id,
                since_index=since_index,
                since_timestamp=since_timestamp,
                limit=limit,
                series_format=series_format,
                types=types,
                levels=levels,
            )
        )

    # -- server ----------------------------------------------------------------------------

    async def health(self) -> Health:
        """``GET /health``."""
        return await self._send(calls.health())

    async def server_info(self) -> ServerInfo:
        """``GET /``: name, version and API version."""
        return await self._send(calls.server_info())

    # -- worker helpers --------------------------------------------------------------------

    @asynccontextmanager
    async def run(
        self, task_id: str, *, result: Mapping[str, Any] | None = None
    ) -> AsyncIterator[AsyncTaskRun]:
        """Run a task; see :meth:`TaskcastServerClient.run`.

        A cancelled block marks the task ``cancelled`` (shielded, within a few seconds)
        and the cancellation propagates.
        """
        task = await self.transition_task(task_id, "running")
        run = AsyncTaskRun(self, task, result)
        try:
            yield run
        except BaseException as exc:
            if not run.finished:
                status, error = exit_transition(exc)
                # Shielded: the enclosing scope may be cancelled, which is why we are here.
                with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_GRACE):
                    try:
                        await self.transition_task(task_id, status, error=error)
                    except TaskcastHTTPError:
                        logger.warning("Could not mark task %s %s", task_id, status, exc_info=True)
            raise
        if not run.finished:
            await run.complete()

    async def publish_stream(
        self,
        task_id: str,
        chunks: AsyncIterable[str] | Iterable[str],
        *,
        series_id: str = "output",
        field: str = "delta",
        type: str = "llm.delta",
        level: Level = "info",
        max_batch_chars: int = 2048,
        max_interval: float = 0.05,
    ) -> PublishStreamResult:
        """Pipe text chunks into an ``accumulate`` series, coalescing small chunks.

        See :meth:`TaskcastServerClient.publish_stream`. ``chunks`` may be an async or a
        sync iterable; a sync one is read on a worker thread so it never blocks the loop.
        Publishing overlaps with reading: chunks that arrive while a request is in flight
        go out together in the next one.
        """
        spec = StreamSpec(
            series_id=series_id,
            field=field,
            type=type,
            level=level,
            max_chars=max_batch_chars,
            max_interval=max_interval,
        )
        buffer = ChunkBuffer(spec)
        send, receive = anyio.create_memory_object_stream[str](max_buffer_size=1024)
        reader_error: list[BaseException] = []
        failure: Exception | None = None
        events = requests = 0
        last: TaskEvent | None = None

        async def flush() -> None:
            nonlocal events, requests, last
            deltas = buffer.take()
            if len(deltas) == 1:
                last = await self._send(calls.publish_event(task_id, spec.event(deltas[0])))
                requests += 1
                events += 1
                return
            for call in calls.publish_events(
                task_id, [spec.event(d) for d in deltas], self.max_batch
            ):
                published = await self._send(call)
                requests += 1
                events += len(published)
                last = published[-1]

        async with anyio.create_task_group() as tg:
            tg.start_soon(_read_chunks, chunks, send, reader_error)
            try:
                async with receive:
                    while True:
                        wait = buffer.wait()
                        chunk: str | None = None
                        with anyio.move_on_after(math.inf if wait is None else wait):
                            try:
                                chunk = await receive.receive()
                            except anyio.EndOfStream:
                                break
                        if chunk is None:
                            await flush()
                            continue
                        buffer.add(chunk)
                        if buffer.full:
                            await flush()
                    if not buffer.empty:
                        await flush()
            except Exception as exc:
                failure = exc
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if reader_error:
            raise reader_error[0]
        return PublishStreamResult(
            text="".join(buffer.text),
            chunks=buffer.chunks,
            events=events,
            requests=requests,
            last_event=last,
        )


_END: Any = object()


def _next(iterator: Iterator[str]) -> Any:
    return next(iterator, _END)


async def _read_chunks(
    chunks: AsyncIterable[str] | Iterable[str],
    send: MemoryObjectSendStream[str],
    errors: list[BaseException],
) -> None:
    async with send:
        try:
            if isinstance(chunks, AsyncIterable):
                await _read_async(chunks.__aiter__(), send)
            elif isinstance(chunks, list | tuple):
                # Already in memory: no producer can block, so skip the thread hop per chunk.
                for chunk in chunks:
                    await send.send(chunk)
            else:
                iterator = iter(chunks)
                while (chunk := await anyio.to_thread.run_sync(_next, iterator)) is not _END:
                    await send.send(chunk)
        except Exception as exc:
            errors.append(exc)


async def _read_async(iterator: AsyncIterator[str], send: MemoryObjectSendStream[str]) -> None:
    try:
        async for chunk in iterator:
            await send.send(chunk)
    finally:
        # Abandoned early (a publish failed): close the producer now, as leaving an
        # ``async for`` does not, so its cleanup runs here rather than at garbage collection.
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


class AsyncTaskRun:
    """The task an :meth:`AsyncTaskcastServerClient.run` block is running."""

    def __init__(
        self, client: AsyncTaskcastServerClient, task: Task, result: Mapping[str, Any] | None
    ) -> None:
        self.client = client
        self.task = task
        self.task_id = task.id
        self.result: dict[str, Any] | None = None if result is None else dict(result)
        """Sent with the ``completed`` transition on normal exit; assign to change it."""
        self.finished = False

    async def publish(self, type: str, data: Any = None, **options: Any) -> TaskEvent:
        """Publish an event to this task (same options as ``publish_event``)."""
        return await self.client.publish_event(self.task_id, type, data, **options)

    async def publish_stream(
        self, chunks: AsyncIterable[str] | Iterable[str], **options: Any
    ) -> PublishStreamResult:
        """Stream text into this task (same options as ``publish_stream``)."""
        return await self.client.publish_stream(self.task_id, chunks, **options)

    async def complete(self, result: Mapping[str, Any] | None = None) -> Task:
        """Mark the task ``completed`` now (with ``result`` or ``self.result``)."""
        if result is not None:
            self.result = dict(result)
        self.finished = True
        self.task = await self.client.transition_task(self.task_id, "completed", result=self.result)
        return self.task

    async def fail(self, error: TaskError | Mapping[str, Any] | str) -> Task:
        """Mark the task ``failed`` now; the block then exits without another transition."""
        self.finished = True
        self.task = await self.client.transition_task(self.task_id, "failed", error=error)
        return self.task
