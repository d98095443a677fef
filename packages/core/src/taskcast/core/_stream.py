"""One subscriber's view of a task: hold, replay, then live, as SSE frames.

The algorithm (architecture §3): subscribe to the hub *first*, then read the store, then
drain what arrived meanwhile, dropping indexes already sent. Indexes are contiguous per
task, so a jump in the live feed means something was missed (an outage, a replaced
``latest`` entry, or an out-of-order broadcast) and is filled from the store; nothing is
ever skipped silently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from ._errors import TaskcastError
from ._filters import DELETED_EVENT, STATUS_EVENT, EventFilter, terminal_status
from ._hub import Subscriber
from ._models import EventQuery, TaskEvent
from ._series import DEFAULT_ACC_FIELD, Collapser, _Accumulated
from ._wire import HEARTBEAT, WireEvent, done_frame, encode_frame, resync_frame, retry_frame

if TYPE_CHECKING:
    from ._engine import TaskEngine

__all__ = ["StreamOptions", "TaskStream"]

HOLD_STATUSES: Final = frozenset({"pending", "assigned"})


@dataclass(slots=True, frozen=True, kw_only=True)
class StreamOptions:
    """How a subscriber wants its stream."""

    filter: EventFilter = field(default_factory=EventFilter)
    wrap: bool = True
    series_format: Literal["delta", "accumulated"] = "delta"
    since_id: str | None = None
    since_index: int | None = None
    """A *filtered* index, as sent in ``filteredIndex``: events up to it are skipped."""
    since_timestamp: int | None = None
    limit: int | None = None
    """Replay at most this many stored events (the oldest after the cursor)."""
    heartbeat_seconds: float = 15.0
    retry_ms: int = 3000
    page_size: int = 1000
    queue_limit: int | None = None
    """Most live events queued for this subscriber before it is cut (engine default if None)."""

    @property
    def has_cursor(self) -> bool:
        return (
            self.since_id is not None
            or self.since_index is not None
            or self.since_timestamp is not None
        )


def _consume(future: asyncio.Future[list[TaskEvent]]) -> None:
    # A read made needless by the stream's end: its outcome (or failure) is not wanted.
    if not future.cancelled():
        future.exception()


class TaskStream:
    """Async iterator of SSE frames (bytes) for one task subscription."""

    def __init__(self, engine: TaskEngine, task_id: str, options: StreamOptions) -> None:
        self._engine = engine
        self._task_id = task_id
        self._opt = options
        self._filtered = 0
        self._last = -1
        # The id of the event at ``_last`` as this stream saw it (None: not known). A store
        # catch-up checks it is still there, so a task replaced by an archive import is not
        # continued as if its new history followed the old one (see ``_fill``).
        self._last_id: str | None = None
        self._terminal: str | None = None
        self._accumulated = options.series_format == "accumulated"
        self._wrap = options.wrap
        # Every live event is sent and counted: no filter, no filteredIndex cursor.
        self._every = options.filter.is_everything and options.since_index is None
        self._write: Callable[[bytes], bool] | None = None
        self.end_reason: str | None = None
        # seriesFormat=accumulated: each accumulate series' merged value, fed with every event
        # in index order (stores keep only deltas). ``_fed``: every event up to this index
        # has been fed; None until the stream has read the history from its start.
        self._merged: dict[str, _Accumulated] = {}
        self._fed: int | None = None

    def attach(self, write: Callable[[bytes], bool]) -> None:
        """Let live events bypass the reader: ``write(chunk)`` sends a chunk now or says no.

        A server that can write to a connection without awaiting (the socket is not
        backed up) passes such a function before iterating. While the stream is live and
        its reader is idle, contiguous live events are then formatted and written from the
        hub's dispatch itself, with no task wake-up per subscriber; everything else (replay,
        gaps, the terminal status, a refused write) goes through the iterator as before.
        """
        self._write = write

    def _direct(self, wires: Sequence[WireEvent]) -> bool:
        write = self._write
        assert write is not None
        if len(wires) == 1 and self._every:
            # The usual live event: one per dispatch to an unfiltered stream. Subscribers with
            # the same filteredIndex get the same bytes object (see WireEvent.frame).
            wire = wires[0]
            if not wire.plain or wire.event.index != self._last + 1:
                return False
            if self._accumulated and not self._merge_live(wire.event):
                return False
            fi = self._filtered
            if not write(
                wire.frame(wrap=self._wrap, accumulated=self._accumulated, filtered_index=fi)
            ):
                return False
            self._filtered = fi + 1
            self._last += 1
            self._last_id = wire.event.id
        elif not self._direct_many(write, wires):
            return False
        observer = self._engine.hub.observer
        if observer is not None:
            observer.on_live_lag(time.time() - wires[0].event.timestamp / 1000)
        return True

    def _direct_many(self, write: Callable[[bytes], bool], wires: Sequence[WireEvent]) -> bool:
        last = self._last
        for wire in wires:
            last += 1
            if wire.event.index != last or not wire.plain:
                return False
            if self._accumulated and not self._merge_live(wire.event):
                return False
        opt = self._opt
        matches = opt.filter.matches
        since = opt.since_index
        wrap, accumulated = opt.wrap, self._accumulated
        fi = self._filtered
        out: list[bytes] = []
        for wire in wires:
            if matches(wire.event):
                if since is None or fi > since:
                    out.append(wire.frame(wrap=wrap, accumulated=accumulated, filtered_index=fi))
                fi += 1
        if out and not write(out[0] if len(out) == 1 else b"".join(out)):
            return False
        self._filtered = fi
        self._last = last
        self._last_id = wires[-1].event.id
        return True

    def _frame(self, event: TaskEvent, wire: WireEvent | None = None) -> bytes | None:
        """The frame of the next event, or None if filtered out; counts ``filteredIndex``.

        Live events come with their shared ``wire`` (encoded once for every subscriber);
        replayed ones are encoded just for this stream.
        """
        opt = self._opt
        if not opt.filter.matches(event):
            return None
        fi = self._filtered
        self._filtered = fi + 1
        if opt.since_index is not None and fi <= opt.since_index:
            return None
        if wire is None:
            return encode_frame(
                event, wrap=opt.wrap, accumulated=self._accumulated, filtered_index=fi
            )
        return wire.frame(wrap=opt.wrap, accumulated=self._accumulated, filtered_index=fi)

    def _collapsed_frame(self, event: TaskEvent, filtered_index: int) -> bytes:
        """The frame of an event of a collapsed replay (no cursor: nothing is skipped)."""
        opt = self._opt
        return encode_frame(
            event, wrap=opt.wrap, accumulated=self._accumulated, filtered_index=filtered_index
        )

    async def frames(self) -> AsyncIterator[bytes]:
        """The stream, one SSE frame per item."""
        groups = self._groups()
        try:
            async for group in groups:
                for frame in group:
                    yield frame
        finally:
            await groups.aclose()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The same bytes as :meth:`frames`, with frames that are ready together joined.

        A replay page or the live events of one wake-up become one chunk: one write (and one
        syscall) per group instead of per event. Servers should send these.
        """
        groups = self._groups()
        try:
            async for group in groups:
                yield group[0] if len(group) == 1 else b"".join(group)
        finally:
            await groups.aclose()

    async def _groups(self) -> AsyncGenerator[list[bytes], None]:
        hub = self._engine.hub
        sub = await hub.open(self._task_id, maxsize=self._opt.queue_limit)
        reason = "client-closed"
        try:
            yield [retry_frame(self._opt.retry_ms)]
            async for group in self._run(sub):
                yield group
            if self.end_reason is None:
                # Live events are the hot path: one generator level less than via _run.
                async for group in self._live(sub):
                    yield group
            reason = self.end_reason or "ended"
        except TaskcastError:
            reason = "storage-error"
            raise
        finally:
            await hub.close(sub)
            if hub.observer is not None:
                hub.observer.on_stream_end(reason)

    async def _run(self, sub: Subscriber) -> AsyncIterator[list[bytes]]:
        """Hold (pending tasks), then replay; sets ``end_reason`` if the stream is over."""
        engine = self._engine
        task = await engine.get_task(self._task_id)
        if task is None:
            self.end_reason = "deleted"
            yield [done_frame("deleted")]
            return
        if task.status in HOLD_STATUSES:
            async for group in self._hold(sub):
                yield group
            if self.end_reason is not None:
                return
        async for group in self._replay():
            yield group

    async def _hold(self, sub: Subscriber) -> AsyncIterator[list[bytes]]:
        """Send nothing but heartbeats until the task leaves pending/assigned."""
        while True:
            batch = await sub.get(self._opt.heartbeat_seconds)
            if sub.closing:
                self.end_reason = "shutdown"
                yield [retry_frame(self._opt.retry_ms)]
                return
            released = False
            for wire in batch or ():
                event = wire.event
                if event.type == DELETED_EVENT:
                    self.end_reason = _removed_reason(event)
                    yield [done_frame(self.end_reason)]
                    return
                if event.type == STATUS_EVENT and isinstance(event.data, dict):
                    if event.data.get("status") not in HOLD_STATUSES:
                        released = True
            if sub.overflowed:
                # Everything queued is in the store; the replay reads it from there.
                sub.reset()
            if released:
                return
            # Re-check the store too: a broadcast from another process may be out of reach.
            task = await self._engine.get_task(self._task_id)
            if task is None:
                self.end_reason = "deleted"
                yield [done_frame("deleted")]
                return
            if task.status not in HOLD_STATUSES:
                return
            if batch is None:
                yield [HEARTBEAT]

    async def _replay(self) -> AsyncIterator[list[bytes]]:
        engine, opt = self._engine, self._opt
        after = -1
        if opt.since_id is not None:
            resolved = await engine.resolve_cursor(self._task_id, opt.since_id)
            if resolved is None:
                task = await engine.get_task(self._task_id)
                payload = {"reason": "unknown-cursor", "cursor": opt.since_id}
                if task is not None:
                    payload["status"] = task.status
                if engine.hub.observer is not None:
                    engine.hub.observer.on_resync()
                yield [resync_frame(payload)]
            else:
                after = resolved
        self._last = after
        self._last_id = None
        if self._accumulated and after == -1 and opt.since_timestamp is None:
            self._fed = -1
        collapser = None if opt.has_cursor else Collapser()
        replayed = 0
        async for group in self._pages(collapser, opt.limit):
            replayed += len(group)
            yield group
        if collapser is not None:
            # The held-back run ends with the last event counted.
            fi = self._filtered - 1
            tail = [self._collapsed_frame(item, fi) for item in collapser.flush()]
            if tail:
                replayed += len(tail)
                yield tail
        if engine.hub.observer is not None:
            engine.hub.observer.on_replay(replayed)
        if self._terminal is None:
            task = await engine.get_task(self._task_id)
            if task is not None and task.is_terminal:
                # Finished while we replayed (or its last events fell outside the cursor or
                # limit): nothing can follow a terminal status, so send what is left and end.
                if opt.limit is None:
                    async for group in self._pages(None, None):
                        yield group
                self._terminal = self._terminal or task.status
            elif opt.limit is not None:
                # A limited replay skips the backlog beyond the limit; live events continue.
                last = await engine.last_index(self._task_id)
                if last > self._last:
                    self._last, self._last_id = last, None
        if self._terminal is not None:
            self.end_reason = self._terminal
            yield [done_frame(self._terminal)]

    async def _pages(
        self, collapser: Collapser | None, limit: int | None
    ) -> AsyncIterator[list[bytes]]:
        """Stored events after ``self._last`` (and the timestamp cursor), one group per page.

        The next page is asked for as soon as a full page arrives, so the store reads it
        (on its reader thread, or in its server) while this one is formatted and written.
        """
        opt = self._opt
        matches = opt.filter.matches
        remaining = limit
        size = opt.page_size if remaining is None else min(opt.page_size, remaining)
        if size <= 0:
            return
        reading = self._read(self._last, size)
        try:
            while True:
                size_asked = size
                page = await reading
                if remaining is not None:
                    remaining -= len(page)
                # A full page may have more behind it, unless the limit is reached.
                size = opt.page_size if remaining is None else min(opt.page_size, remaining)
                more = len(page) == size_asked and size > 0
                if more:
                    reading = self._read(page[-1].index, size)
                    # Let the read begin (hand the query to the reader thread or the
                    # server) before this page is formatted.
                    await asyncio.sleep(0)
                group: list[bytes] = []
                fed = self._fed
                for event in page:
                    self._last = event.index
                    self._last_id = event.id
                    if fed is not None:
                        self._feed(event)
                    self._terminal = terminal_status(event) or self._terminal
                    if collapser is None:
                        frame = self._frame(event)
                        if frame is not None:
                            group.append(frame)
                    elif matches(event):
                        # The filtered stream is collapsed, and every event it covers is
                        # counted: a collapsed event carries the filteredIndex of the last
                        # event it covers, so `since.index` resumes right after it. A run
                        # is consecutive, so the one this event closes ended just before it.
                        fi = self._filtered
                        self._filtered = fi + 1
                        for item in collapser.feed(event):
                            at = fi if item.index == event.index else fi - 1
                            group.append(self._collapsed_frame(item, at))
                if group:
                    yield group
                if not more:
                    return
        finally:
            if not reading.done():
                reading.cancel()
                reading.add_done_callback(_consume)

    def _read(self, after: int, size: int) -> asyncio.Future[list[TaskEvent]]:
        query = EventQuery(after_index=after, after_timestamp=self._opt.since_timestamp, limit=size)
        return asyncio.ensure_future(self._engine.get_events(self._task_id, query))

    async def _live(self, sub: Subscriber) -> AsyncIterator[list[bytes]]:
        if self._write is not None:
            sub.sink = self._direct
        try:
            while True:
                if sub.overflowed:
                    self.end_reason = "slow-consumer"
                    yield [b": slow consumer, resume with Last-Event-ID\n\n"]
                    return
                if sub.closing:
                    self.end_reason = "shutdown"
                    yield [retry_frame(self._opt.retry_ms)]
                    return
                batch = await sub.get(self._opt.heartbeat_seconds)
                observer = self._engine.hub.observer
                if batch and observer is not None:
                    observer.on_live_lag(time.time() - batch[0].event.timestamp / 1000)
                if not batch:
                    if sub.overflowed or sub.closing:
                        continue
                    if batch is None:
                        yield [HEARTBEAT]
                    # Woken without events (the broadcast reconnected) or idle for a heartbeat:
                    # events the broadcast never delivered are caught up from the store.
                    last = await self._engine.last_index(self._task_id)
                    if last > self._last:
                        async for caught_up in self._fill(last + 1):
                            yield caught_up
                        if self.end_reason is not None:
                            return
                    continue
                group: list[bytes] = []
                for wire in batch:
                    event = wire.event
                    if event.type == DELETED_EVENT:
                        self.end_reason = _removed_reason(event)
                        group.append(done_frame(self.end_reason))
                        yield group
                        return
                    index = event.index
                    if index <= self._last:
                        continue
                    if index > self._last + 1:
                        # A gap: what is ready goes first, then the missing events from the store.
                        if group:
                            yield group
                            group = []
                        async for filled in self._fill(index):
                            yield filled
                        if self.end_reason is not None:
                            return
                        if index <= self._last:
                            continue
                    if self._accumulated and not self._merge_live(event):
                        await self._catch_up(index)
                        self._merge_live(event)
                    self._last = index
                    self._last_id = event.id
                    out = self._frame(event, wire)
                    if out is not None:
                        group.append(out)
                    status = terminal_status(event)
                    if status is not None:
                        self.end_reason = status
                        group.append(done_frame(status))
                        yield group
                        return
                if group:
                    yield group
        finally:
            sub.sink = None

    async def _fill(self, before: int) -> AsyncIterator[list[bytes]]:
        """Send stored events between the last sent index and ``before``.

        The read starts one event early, at the last one sent, to check it is the same
        event: an archive import that replaced the task writes the new history before it
        broadcasts the end of the old one, and a catch-up in between would otherwise send
        the new history's later events as if they followed the old ones. An event missing
        there (e.g. a superseded ``latest`` entry of a task restored from the archive) is
        not taken for a replacement.
        """
        if self._accumulated and (self._fed is None or self._fed < self._last):
            await self._catch_up(self._last + 1)
        last, last_id = self._last, self._last_id
        check = last_id is not None
        page = await self._engine.get_events(
            self._task_id,
            EventQuery(after_index=last - 1 if check else last, limit=before - last - 1 + check),
        )
        if check and page and page[0].index == last:
            if page[0].id != last_id:
                self.end_reason = "replaced"
                yield [done_frame("replaced")]
                return
            page = page[1:]
        group: list[bytes] = []
        for event in page:
            if event.index >= before:
                break
            self._last = event.index
            self._last_id = event.id
            if self._accumulated:
                event = self._merge_stored(event)
            frame = self._frame(event)
            if frame is not None:
                group.append(frame)
            status = terminal_status(event)
            if status is not None:
                self.end_reason = status
                group.append(done_frame(status))
                break
        if group:
            yield group

    # -- seriesFormat=accumulated ----------------------------------------------------

    def _feed(self, event: TaskEvent) -> None:
        """Account the next event in index order in the merged values."""
        self._fed = event.index
        sid = event.series_id
        if sid is None:
            return
        if event.series_mode == "accumulate":
            state = self._merged.get(sid)
            if state is None:
                field_name = event.series_acc_field or DEFAULT_ACC_FIELD
                self._merged[sid] = _Accumulated(event.data, field_name)
            else:
                state.add(event)
        elif event.series_mode == "latest":
            # A store restarts a series that was `latest` in between (plan_commit).
            self._merged.pop(sid, None)

    def _merge_live(self, event: TaskEvent) -> bool:
        """Feed a live event and give it its merged value; False if history must be read.

        Live events are shared by every subscriber in this process: the first stream that
        merges one sets ``accumulated`` on it, and every stream computes the same value
        from the same deltas, so the others (and their frames) reuse it.
        """
        fed = self._fed
        index = event.index
        if fed is not None and fed >= index:
            return True
        if fed is None or fed < index - 1:
            # Only an accumulate delta needs its value now; whatever else is skipped here is
            # read back from the store before the next one (_catch_up).
            return event.series_mode != "accumulate" or event.series_id is None
        self._feed(event)
        sid = event.series_id
        if event.series_mode == "accumulate" and sid is not None:
            state = self._merged[sid]
            if event.has_accumulated:
                # Take the value another stream made (a reference, not a copy): streams of
                # the same task then hold one text between them, not pieces each.
                state.adopt(event.accumulated)
            else:
                event.accumulated = state.value()
        return True

    def _merge_stored(self, event: TaskEvent) -> TaskEvent:
        """A stored event fed in order, with its merged value on a copy (stored events
        may be shared with other readers, whose replays must not see it)."""
        if self._fed is None or self._fed >= event.index:
            return event
        self._feed(event)
        sid = event.series_id
        if event.series_mode == "accumulate" and sid is not None:
            return event.copy(accumulated=self._merged[sid].value())
        return event

    async def _catch_up(self, before: int) -> None:
        """Feed every stored event before ``before`` not fed yet (the history before a
        resume cursor, or a backlog a limited replay skipped)."""
        if self._fed is None:
            self._merged.clear()
        after = -1 if self._fed is None else self._fed
        size = self._opt.page_size
        while after < before - 1:
            asked = min(size, before - 1 - after)
            page = await self._engine.get_events(
                self._task_id, EventQuery(after_index=after, limit=asked)
            )
            for event in page:
                if event.index >= before:
                    break
                self._feed(event)
            if len(page) < asked:
                break
            after = page[-1].index
        self._fed = before - 1


def _removed_reason(marker: TaskEvent) -> str:
    """Why a task's stream ends on a removal marker: ``deleted``, or ``replaced`` when an
    archive import overwrote the task (the client may reconnect to the new history)."""
    data = marker.data
    if isinstance(data, dict) and data.get("reason") == "replaced":
        return "replaced"
    return "deleted"
