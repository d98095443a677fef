"""The synchronous client (:class:`TaskcastServerClient`)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from . import _calls as calls
from ._batching import ChunkBuffer, StreamSpec
from ._calls import NO_BODY, Call, RetryConfig
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

__all__ = ["DEFAULT_BASE_URL", "TaskRun", "TaskcastServerClient", "build_headers"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:3721"
_END: Any = object()


def build_headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def parse_response(call: Call[T], response: httpx.Response) -> T:
    try:
        return call.parse(response)
    except (ValueError, KeyError, TypeError) as exc:
        raise TaskcastHTTPError(
            f"Unexpected response body for {call.method} {call.path}: {exc!r}",
            status_code=response.status_code,
            body=response.text,
        ) from exc


class TaskcastServerClient:
    """Synchronous client for a Taskcast server's REST API.

    Args:
        base_url: The server's root URL.
        token: Sent as ``Authorization: Bearer <token>``; may be changed later via ``token``.
        timeout: Seconds (or an ``httpx.Timeout``) for each request.
        retry: When calls are resent; see :class:`RetryConfig`.
        transport: An httpx transport, e.g. ``httpx.MockTransport`` in tests.
        http_client: A ready ``httpx.Client`` to use instead of creating one (not closed by
            :meth:`close`).
        max_batch: Most events per publish request; longer lists are split.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout = 10.0,
        retry: RetryConfig | None = None,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
        max_batch: int = 1000,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.retry = retry or RetryConfig()
        self.max_batch = max_batch
        self._owns_client = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout, transport=transport)

    def __enter__(self) -> TaskcastServerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying connection pool (unless it was passed in)."""
        if self._owns_client:
            self._http.close()

    def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            more = attempt < self.retry.attempts
            try:
                response = self._http.request(
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
                    time.sleep(delay)
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
                time.sleep(delay)
                continue
            raise error_from_response(response)

    # -- tasks -----------------------------------------------------------------------------

    def create_task(
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
        """Create a task (``POST /tasks``); it starts ``pending``.

        ``extra`` carries any other wire field as-is (``webhooks``, ``cleanup``,
        ``authConfig``, ``assignMode``, ``cost``, ``disconnectPolicy``).
        """
        return self._send(
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

    def get_task(self, task_id: str) -> Task:
        """Fetch a task (``GET /tasks/{id}``); raises :class:`NotFoundError`."""
        return self._send(calls.get_task(task_id))

    def list_tasks(
        self,
        *,
        status: str | Iterable[str] | None = None,
        type: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of tasks (``GET /tasks``); pass ``page.next_cursor`` as ``cursor``."""
        return self._send(calls.list_tasks(status=status, type=type, limit=limit, cursor=cursor))

    def iter_tasks(
        self,
        *,
        status: str | Iterable[str] | None = None,
        type: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Task]:
        """Every matching task, fetching page after page."""
        statuses = None if status is None or isinstance(status, str) else list(status)
        cursor: str | None = None
        while True:
            page = self.list_tasks(
                status=status if statuses is None else statuses,
                type=type,
                limit=page_size,
                cursor=cursor,
            )
            yield from page.tasks
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def delete_task(self, task_id: str) -> None:
        """Delete a task and its events (``DELETE /tasks/{id}``)."""
        self._send(calls.delete_task(task_id))

    def transition_task(
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
        """Move a task to ``status`` (``PATCH /tasks/{id}/status``).

        Raises :class:`ConflictError` for a transition the state machine forbids (including
        losing a race to another terminal transition).
        """
        return self._send(
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

    def resolve(self, task_id: str, data: Any = None) -> Task:
        """Answer a ``blocked`` task's request and resume it (``POST /tasks/{id}/resolve``)."""
        return self._send(calls.resolve(task_id, data))

    def get_request(self, task_id: str) -> BlockedRequest:
        """What a ``blocked`` task waits for (``GET /tasks/{id}/request``)."""
        return self._send(calls.get_request(task_id))

    # -- archives --------------------------------------------------------------------------

    def export_task_archive(self, task_id: str) -> dict[str, Any]:
        """The task and its compacted history as a ``taskcast.taskArchive`` document
        (``GET /tasks/{id}/archive``); JSON-serialisable as it is."""
        return self._send(calls.export_task_archive(task_id))

    def import_task_archive(
        self, archive: Mapping[str, Any], *, overwrite: bool = False
    ) -> ArchiveImportResult:
        """Store an archive (``POST /tasks/import``).

        Raises :class:`ConflictError` if the task exists and ``overwrite`` is false, and
        :class:`BadRequestError` (nothing stored) for an archive that breaks the format.
        """
        return self._send(calls.import_task_archive(archive, overwrite=overwrite))

    # -- events ----------------------------------------------------------------------------

    def publish_event(
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
        """Publish one event (``POST /tasks/{id}/events``) and return it as stored.

        Without ``idempotency_key`` one is generated, so the SDK's own retries never store
        the event twice.
        """
        item = calls.event_input(
            type,
            data,
            level=level,
            series_id=series_id,
            series_mode=series_mode,
            series_acc_field=series_acc_field,
            idempotency_key=idempotency_key,
        )
        return self._send(calls.publish_event(task_id, item))

    def publish_events(
        self, task_id: str, events: Iterable[EventInput | Mapping[str, Any]]
    ) -> list[TaskEvent]:
        """Publish several events in order, ``max_batch`` per request.

        Items are :class:`EventInput` or wire-form mappings (``{"type": ..., "data": ...}``).
        If a request fails, the events of earlier requests stay published.
        """
        out: list[TaskEvent] = []
        for call in calls.publish_events(task_id, events, self.max_batch):
            batch = self._send(call)
            out.extend(batch)
        return out

    def get_history(
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
        """Stored events in index order (``GET /tasks/{id}/events/history``).

        ``since_index`` is a raw event index here (exclusive); ``series_format=
        "accumulated"`` collapses accumulate series into snapshots.
        """
        return self._send(
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

    def health(self) -> Health:
        """``GET /health``."""
        return self._send(calls.health())

    def server_info(self) -> ServerInfo:
        """``GET /``: name, version and API version."""
        return self._send(calls.server_info())

    # -- worker helpers --------------------------------------------------------------------

    @contextmanager
    def run(self, task_id: str, *, result: Mapping[str, Any] | None = None) -> Iterator[TaskRun]:
        """Run a task: mark it ``running`` now and finish it when the block ends.

        On normal exit the task is ``completed`` with ``run.result`` (initially ``result``);
        if the block raises, it is ``failed`` with the exception's type and message and the
        exception propagates; ``KeyboardInterrupt`` and other non-``Exception`` exits mark
        it ``cancelled``. Call ``run.complete()``/``run.fail()`` to finish it yourself.
        """
        task = self.transition_task(task_id, "running")
        run = TaskRun(self, task, result)
        try:
            yield run
        except BaseException as exc:
            if not run.finished:
                status, error = exit_transition(exc)
                try:
                    self.transition_task(task_id, status, error=error)
                except TaskcastHTTPError:
                    logger.warning("Could not mark task %s %s", task_id, status, exc_info=True)
            raise
        if not run.finished:
            run.complete()

    def publish_stream(
        self,
        task_id: str,
        chunks: Iterable[str],
        *,
        series_id: str = "output",
        field: str = "delta",
        type: str = "llm.delta",
        level: Level = "info",
        max_batch_chars: int = 2048,
        max_interval: float = 0.05,
    ) -> PublishStreamResult:
        """Pipe text chunks into an ``accumulate`` series, coalescing small chunks.

        Chunks are buffered until ``max_batch_chars`` characters are waiting or the oldest
        has waited ``max_interval`` seconds, then sent as one delta event (or a batch of
        deltas of at most ``max_batch_chars`` each). The series' accumulated ``field`` is the
        concatenation of all chunks. The iterator is read on a helper thread, so a slow
        producer never delays text that is already buffered. If the iterator raises, the text
        read so far is published and the exception propagates.
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
        feed: queue.Queue[Any] = queue.Queue(maxsize=1024)
        stop = threading.Event()
        reader = threading.Thread(
            target=_read_chunks,
            args=(chunks, feed, stop),
            name="taskcast-publish-stream",
            daemon=True,
        )
        reader.start()
        events = requests = 0
        last: TaskEvent | None = None
        failure: BaseException | None = None

        def flush() -> None:
            nonlocal events, requests, last
            deltas = buffer.take()
            if len(deltas) == 1:
                last = self._send(calls.publish_event(task_id, spec.event(deltas[0])))
                requests += 1
                events += 1
                return
            for call in calls.publish_events(
                task_id, [spec.event(d) for d in deltas], self.max_batch
            ):
                published = self._send(call)
                requests += 1
                events += len(published)
                last = published[-1]

        try:
            while True:
                wait = buffer.wait()
                try:
                    item = feed.get(timeout=wait) if wait != 0 else feed.get_nowait()
                except queue.Empty:
                    flush()
                    continue
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    failure = item.error
                    break
                buffer.add(item)
                if buffer.full:
                    flush()
            if not buffer.empty:
                flush()
        finally:
            stop.set()
        if failure is not None:
            raise failure
        return PublishStreamResult(
            text="".join(buffer.text),
            chunks=buffer.chunks,
            events=events,
            requests=requests,
            last_event=last,
        )


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _read_chunks(chunks: Iterable[str], feed: queue.Queue[Any], stop: threading.Event) -> None:
    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                feed.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for chunk in chunks:
            if not put(chunk):
                return
    except BaseException as exc:
        put(_Failure(exc))
        return
    put(_END)


class TaskRun:
    """The task a :meth:`TaskcastServerClient.run` block is running."""

    def __init__(
        self, client: TaskcastServerClient, task: Task, result: Mapping[str, Any] | None
    ) -> None:
        self.client = client
        self.task = task
        self.task_id = task.id
        self.result: dict[str, Any] | None = None if result is None else dict(result)
        """Sent with the ``completed`` transition on normal exit; assign to change it."""
        self.finished = False

    def publish(self, type: str, data: Any = None, **options: Any) -> TaskEvent:
        """Publish an event to this task (same options as ``publish_event``)."""
        return self.client.publish_event(self.task_id, type, data, **options)

    def publish_stream(self, chunks: Iterable[str], **options: Any) -> PublishStreamResult:
        """Stream text into this task (same options as ``publish_stream``)."""
        return self.client.publish_stream(self.task_id, chunks, **options)

    def complete(self, result: Mapping[str, Any] | None = None) -> Task:
        """Mark the task ``completed`` now (with ``result`` or ``self.result``)."""
        if result is not None:
            self.result = dict(result)
        self.finished = True
        self.task = self.client.transition_task(self.task_id, "completed", result=self.result)
        return self.task

    def fail(self, error: TaskError | Mapping[str, Any] | str) -> Task:
        """Mark the task ``failed`` now; the block then exits without another transition."""
        self.finished = True
        self.task = self.client.transition_task(self.task_id, "failed", error=error)
        return self.task
