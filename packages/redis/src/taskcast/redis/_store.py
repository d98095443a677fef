"""The Redis short-term store: tasks, ordered events and series state, committed in Lua."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from redis.asyncio import Redis
from taskcast.core import (
    DEFAULT_CACHE_BYTES,
    CommitResult,
    EventCache,
    EventDraft,
    EventQuery,
    StaleRevisionError,
    Task,
    TaskConflictError,
    TaskEvent,
    TaskNotFoundError,
    TaskPage,
    TaskQuery,
    TaskTerminalError,
    matches_type,
    now_ms,
    series_states,
)

from ._batching import ScriptBatcher
from ._channel import RespChannel, ScriptCall, channel_settings
from ._client import command_client
from ._codec import decode_event, decode_events, draft_args, dumps, event_json
from ._errors import guard
from ._keys import KeySpace
from ._outbox import RedisWebhookOutbox
from ._scripts import Scripts, script_source

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

__all__ = ["RedisShortTermStore"]

logger = logging.getLogger(__name__)

_MGET_CHUNK: Final = 500
# The readiness probe's key (``p:readyProbe``) expires by itself; it holds nothing.
_PROBE_TTL_MS: Final = 10_000

ScriptRunner = Callable[[Sequence[Any], Sequence[Any]], Awaitable[Any]]
"""``run(keys, args)``: one script, through the store's own channel or redis-py."""


def _keyword_call(script: AsyncScript) -> ScriptRunner:
    def run(keys: Sequence[Any], args: Sequence[Any]) -> Awaitable[Any]:
        return script(keys=keys, args=args)

    return run


class RedisShortTermStore:
    """:class:`~taskcast.core.ShortTermStore` on Redis, safe to share between processes.

    Every commit (idempotency, index allocation, series state, append, cursor map and the
    PUBLISH to the task's channel) is one Lua script, so all server processes sharing the
    Redis see one order per task and subscribers receive events in index order.

    Args:
        url_or_client: A ``redis://`` / ``rediss://`` / ``unix://`` URL, or a
            ``redis.asyncio.Redis`` you manage (it must use ``decode_responses=False``;
            it is not closed by :meth:`close`).
        prefix: Key and channel prefix; processes that share tasks use the same one.
        socket_timeout: Seconds to wait for a reply before the operation fails with
            :class:`~taskcast.core.StorageUnavailableError` (for a client you pass, only
            on the store's own script connection; the client keeps its settings).
        connect_timeout: Seconds to wait for a connection (likewise).
        page_size: Events per round trip when reading history.
        cache_bytes: Memory (estimated) for events already decoded, by their stored JSON,
            so a history replayed again is not parsed again; 0 turns the cache off.
    """

    name = "redis"
    publishes_on_commit = True
    shared_across_processes = True
    supports_release = True
    tracks_archive = True

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        prefix: str = "taskcast",
        socket_timeout: float | None = 5.0,
        connect_timeout: float = 5.0,
        page_size: int = 1000,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be positive")
        self._cache: EventCache[bytes] = EventCache(cache_bytes)
        if isinstance(url_or_client, str):
            self._client = command_client(
                url_or_client, socket_timeout=socket_timeout, connect_timeout=connect_timeout
            )
            self._owned = True
        else:
            self._client = url_or_client
            self._owned = False
        self.keys = KeySpace(prefix)
        self._page_size = page_size
        self._scripts = Scripts.register(self._client)
        settings = channel_settings(self._client)
        self._channel: RespChannel | None = None
        self._commits: ScriptRunner
        self._read_events: ScriptRunner
        if settings is None:
            # TLS, a credential provider or a custom connection class: stay with redis-py.
            self._commits = ScriptBatcher(self._client, self._scripts.commit)
            self._read_events = _keyword_call(self._scripts.read_events)
        else:
            self._channel = RespChannel(
                settings, socket_timeout=socket_timeout, connect_timeout=connect_timeout
            )
            self._commits = ScriptCall(self._channel, script_source("commit"))
            self._read_events = ScriptCall(self._channel, script_source("read_events"))

    @property
    def client(self) -> Redis:
        """The command client (shared with whoever passed it in)."""
        return self._client

    @property
    def event_cache(self) -> EventCache[bytes]:
        """Decoded events by their stored JSON (see ``cache_bytes``)."""
        return self._cache

    def webhook_outbox(self) -> RedisWebhookOutbox:
        """A webhook outbox on this store's client and prefix (closing it leaves them)."""
        return RedisWebhookOutbox(self._client, prefix=self.keys.prefix)

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Check the server answers (raises ``StorageUnavailableError`` if not).

        A PING: a Redis at ``maxmemory`` still lets the server start (and serve reads);
        :meth:`ping`, behind ``/health/ready``, reports that it refuses writes.
        """
        with guard():
            await self._client.ping()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self._owned:
            await self._client.aclose()

    async def ping(self) -> None:
        """A tiny write, not PING: at ``maxmemory`` (or on a read-only replica) Redis answers
        PING but refuses every write, and readiness must say so with Redis's reason."""
        with guard():
            await self._client.set(f"{self.keys.prefix}:readyProbe", b"1", px=_PROBE_TTL_MS)

    # -- tasks -----------------------------------------------------------------------

    async def create_task(self, task: Task) -> None:
        k = self.keys.for_task(task.id)
        with guard():
            created = await self._scripts.create_task(
                keys=[
                    k.task,
                    k.status,
                    self.keys.tasks,
                    self.keys.task_order,
                    self.keys.archive_pending,
                ],
                args=[dumps(task.to_dict()), task.status, task.created_at, task.id],
            )
        if not created:
            raise TaskConflictError(task.id)

    async def get_task(self, task_id: str) -> Task | None:
        with guard():
            raw = await self._client.get(self.keys.task(task_id))
        return None if raw is None else Task.from_dict(json.loads(raw))

    async def get_task_revision(self, task_id: str) -> tuple[Task, int] | None:
        k = self.keys.for_task(task_id)
        with guard():
            raw, revision = await self._client.mget([k.task, k.revision])
        if raw is None:
            return None
        return Task.from_dict(json.loads(raw)), int(revision or 0)

    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        if query.limit is not None and query.limit <= 0:
            return TaskPage(tasks=[])
        if query.task_ids is not None:
            tasks = [t for t in await self._load_tasks(sorted(query.task_ids)) if _wanted(t, query)]
            tasks.sort(key=lambda t: (t.created_at, t.id))
            if query.after is not None:
                after = query.after
                tasks = [t for t in tasks if (t.created_at, t.id) > after]
            return _page(tasks, query.limit)
        return await self._scan_tasks(query)

    async def _scan_tasks(self, query: TaskQuery) -> TaskPage:
        """Walk the creation-ordered index with a keyset cursor, filtering in Python."""
        limit = query.limit
        # One more than the limit tells whether another page exists.
        want = None if limit is None else limit + 1
        batch = 1000 if want is None else min(max(want, 100), 1000)
        # `fence` is the caller's cursor; `after` is where the next page starts. They differ
        # when the fence's task is gone and equal-score members at or before it are skipped.
        fence = after = query.after
        found: list[Task] = []
        while want is None or len(found) < want:
            args: list[Any] = ["", "", batch] if after is None else [after[0], after[1], batch]
            with guard():
                reply = await self._scripts.tasks_after(keys=[self.keys.task_order], args=args)
            page = [(int(float(reply[i + 1])), reply[i].decode()) for i in range(0, len(reply), 2)]
            if not page:
                break
            after = page[-1]
            members = page if fence is None else [m for m in page if m > fence]
            if members:
                tasks = await self._load_tasks([m[1] for m in members])
                found.extend(t for t in tasks if _wanted(t, query))
            if len(page) < batch:
                break
        return _page(found, limit)

    async def _load_tasks(self, ids: Sequence[str]) -> list[Task]:
        """The tasks that still exist among ``ids``, in the given order."""
        out: list[Task] = []
        for start in range(0, len(ids), _MGET_CHUNK):
            chunk = ids[start : start + _MGET_CHUNK]
            with guard():
                raws = await self._client.mget([self.keys.task(i) for i in chunk])
            out.extend(Task.from_dict(json.loads(raw)) for raw in raws if raw is not None)
        return out

    async def delete_task(self, task_id: str) -> bool:
        k = self.keys.for_task(task_id)
        with guard():
            existed = await self._scripts.delete_task(
                keys=[*k.all(), self.keys.tasks, self.keys.task_order, self.keys.archive_pending],
                args=[task_id],
            )
        return bool(existed)

    # -- hot/cold lifecycle ----------------------------------------------------------

    async def release_task(
        self, task_id: str, expected_revision: int, expected_last_index: int
    ) -> bool:
        """Delete the task's keys if its revision and last index are still the expected ones.

        One script: a commit racing the release either lands before it (the release then
        refuses) or after it (the commit finds no task and the engine restores it).
        """
        k = self.keys.for_task(task_id)
        with guard():
            released = await self._scripts.release(
                keys=[*k.all(), self.keys.tasks, self.keys.task_order, self.keys.archive_pending],
                args=[str(expected_revision), str(expected_last_index + 1), task_id],
            )
        return bool(released)

    async def restore_task(
        self,
        task: Task,
        events: Sequence[TaskEvent],
        *,
        next_index: int,
        series: dict[str, TaskEvent],
        revision: int,
    ) -> bool:
        """Put a released task back in one script, unless it exists (``SET NX``)."""
        return await self._restore(
            task, events, next_index, series, revision, replace=False, record=False
        )

    async def import_task(
        self, task: Task, events: Sequence[TaskEvent], *, replace: bool = False
    ) -> bool:
        """One script (the restore's): with ``replace`` the old task's keys are overwritten
        or cleared in the same step, so no reader sees the task half imported or absent."""
        return await self._restore(
            task,
            events,
            len(events),
            series_states(events),
            # A revision no counter of a replaced task reaches (see rehydrate).
            now_ms(),
            replace=replace,
            # Acknowledged here before the archive has it: recorded for the gap check like
            # a commit, so a process dying before its archive writer runs loses nothing.
            record=True,
        )

    async def _restore(
        self,
        task: Task,
        events: Sequence[TaskEvent],
        next_index: int,
        series: dict[str, TaskEvent],
        revision: int,
        *,
        replace: bool,
        record: bool,
    ) -> bool:
        stored = [event_json(e) for e in events]
        keyed = [(e.idempotency_key, raw) for e, raw in zip(events, stored, strict=True)]
        args: list[Any] = [
            dumps(task.to_dict()),
            task.status,
            str(revision),
            str(next_index),
            task.created_at,
            task.id,
            len(stored),
            len(series),
            sum(1 for key, _ in keyed if key is not None),
            "1" if replace else "0",
            str(now_ms()) if record else "",
            *stored,
        ]
        for event in events:
            args.extend((event.id, str(event.index)))
        for sid, state in series.items():
            args.extend((sid, event_json(state), f"{state.series_mode} {state.index}"))
        for key, raw in keyed:
            if key is not None:
                args.extend((key, raw))
        k = self.keys.for_task(task.id)
        with guard():
            restored = await self._scripts.restore(
                keys=[*k.all(), self.keys.tasks, self.keys.task_order, self.keys.archive_pending],
                args=args,
            )
        return bool(restored)

    # -- archive records (taskcast.core.ArchiveTrackingStore) ---------------------------

    async def claim_unarchived(
        self, older_than: int, limit: int, lease_ms: int
    ) -> list[tuple[str, int]]:
        with guard():
            flat = await self._scripts.archive_claim(
                keys=[self.keys.archive_pending],
                args=[
                    older_than,
                    limit,
                    lease_ms,
                    self.keys.archive_lease_prefix,
                    secrets.token_hex(8),
                ],
            )
        return [(flat[i].decode(), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]

    async def settle_unarchived(
        self,
        task_id: str,
        *,
        since: int | None,
        checked_at: int,
        expected_revision: int,
        expected_last_index: int,
    ) -> None:
        k = self.keys.for_task(task_id)
        with guard():
            await self._scripts.archive_settle(
                keys=[
                    self.keys.archive_pending,
                    self.keys.archive_lease_prefix + task_id,
                    k.task,
                    k.revision,
                    k.idx,
                ],
                args=[
                    task_id,
                    "confirm" if since is None else "defer",
                    checked_at if since is None else since,
                    str(expected_revision),
                    str(expected_last_index + 1),
                ],
            )

    async def unarchived_overdue(self, older_than: int) -> tuple[int, int | None]:
        with guard():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zcount(self.keys.archive_pending, "-inf", older_than)
                pipe.zrange(self.keys.archive_pending, 0, 0, withscores=True)
                count, oldest = await pipe.execute()
        return int(count), (int(oldest[0][1]) if oldest and int(count) else None)

    # -- commits ---------------------------------------------------------------------

    async def commit_transition(
        self, task: Task, expected_revision: int, drafts: Sequence[EventDraft]
    ) -> CommitResult:
        args: list[Any] = [
            "transition",
            self.keys.channel(task.id),
            str(expected_revision),
            dumps(task.to_dict()),
            task.status,
        ]
        return await self._commit(task.id, args, drafts)

    async def commit_events(self, task_id: str, drafts: Sequence[EventDraft]) -> CommitResult:
        return await self._commit(
            task_id, ["events", self.keys.channel(task_id), "", "", ""], drafts
        )

    async def _commit(
        self, task_id: str, head: list[Any], drafts: Sequence[EventDraft]
    ) -> CommitResult:
        args = [*head, len(drafts)]
        for draft in drafts:
            args.extend(draft_args(task_id, draft))
        # The time and the task id for the archive record (taskcast.core.ArchiveChecker).
        args.extend((now_ms(), task_id))
        keys = self.keys.for_task(task_id).all()
        keys.append(self.keys.archive_pending)
        with guard():
            reply = await self._commits(keys, args)
        status = reply[0]
        if status != b"ok":
            if status == b"notfound":
                raise TaskNotFoundError(task_id)
            if status == b"stale":
                raise StaleRevisionError(task_id)
            raise TaskTerminalError(reply[1].decode())
        events: list[TaskEvent] = []
        fresh: list[TaskEvent] = []
        for i, draft in enumerate(drafts):
            kind, value = reply[1 + 2 * i], reply[2 + 2 * i]
            if kind == b"dup":
                events.append(decode_event(value))
                continue
            event = draft.at(task_id, int(value))
            events.append(event)
            fresh.append(event)
        return CommitResult(events=events, fresh=fresh)

    # -- reads -----------------------------------------------------------------------

    async def get_events(self, task_id: str, query: EventQuery) -> list[TaskEvent]:
        k = self.keys.for_task(task_id)
        after = -1 if query.after_index is None else query.after_index
        after_ts = query.after_timestamp
        limit = query.limit
        out: list[TaskEvent] = []
        while True:
            size = self._page_size
            if limit is not None and after_ts is None:
                size = min(size, limit - len(out))
            if size <= 0:
                return out
            with guard():
                raws = await self._read_events([k.events, k.idx], [after, size])
            for event in self._cache.decode(raws, decode_events):
                # Re-reading from the last index seen keeps paging right even when a
                # concurrent `latest` replacement shifts list positions.
                after = event.index
                if after_ts is not None and event.timestamp <= after_ts:
                    continue
                out.append(event)
                if limit is not None and len(out) >= limit:
                    return out
            if len(raws) < size:
                return out

    async def delete_events(self, task_id: str, indexes: Sequence[int]) -> int:
        """Remove stored events by index; their ids stay in the cursor map."""
        wanted = set(indexes)
        if not wanted:
            return 0
        k = self.keys.for_task(task_id)
        with guard():
            raws = await self._client.lrange(k.events, 0, -1)
            doomed = [raw for raw in raws if decode_event(raw).index in wanted]
            if not doomed:
                return 0
            # Entries are unique JSON strings, so removing by value is exact even while
            # concurrent commits append; cleanup runs on finished tasks anyway.
            async with self._client.pipeline(transaction=True) as pipe:
                for raw in doomed:
                    pipe.lrem(k.events, 1, raw)  # type: ignore[arg-type]
                removed = await pipe.execute()
        return sum(int(n) for n in removed)

    async def resolve_cursor(self, task_id: str, event_id: str) -> int | None:
        with guard():
            raw = await self._client.hget(self.keys.for_task(task_id).event_idx, event_id)
        return None if raw is None else int(raw)

    async def last_index(self, task_id: str) -> int:
        with guard():
            raw = await self._client.get(self.keys.for_task(task_id).idx)
        return -1 if raw is None else int(raw) - 1


def _wanted(task: Task, query: TaskQuery) -> bool:
    return (query.statuses is None or task.status in query.statuses) and (
        query.types is None or matches_type(task.type, query.types)
    )


def _page(tasks: Iterable[Task], limit: int | None) -> TaskPage:
    selected = list(tasks)
    if limit is not None and len(selected) > limit:
        page = selected[:limit]
        return TaskPage(tasks=page, next_after=(page[-1].created_at, page[-1].id))
    return TaskPage(tasks=selected)
