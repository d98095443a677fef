"""Every Redis key and channel name the adapter uses, built in one place.

The layout follows the original's (reference §11.3) where it has a key for the purpose, so a
``redis-cli --scan`` looks familiar; the keys it lacks are ours:

====================================  =======  ==================================================
key                                   type     content
====================================  =======  ==================================================
``p:task:{id}``                       string   task JSON (``Task.to_dict``)
``p:taskStatus:{id}``                 string   the task's status (read by the commit script)
``p:taskRevision:{id}``               string   compare-and-set revision, bumped per transition
``p:tasks``                           set      every task id (as the original)
``p:tasksByCreated``                  zset     task ids scored by ``createdAt`` (listing order)
``p:events:{id}``                     list     event JSON (``TaskEvent.to_dict``), index order
``p:idx:{id}``                        string   how many indexes were allocated (next index)
``p:seriesState:{id}``                hash     series id -> newest latest / accumulate event JSON
``p:seriesMeta:{id}``                 hash     series id -> ``"<mode> <index>"`` of that state
                                               (earlier versions wrote more after the index,
                                               which is ignored)
``p:idem:{id}``                       hash     idempotency key -> event JSON stored for it
``p:eventIdx:{id}``                   hash     event id -> index (resume cursors, replaced too)
``p:archivePending``                  zset     task ids with writes not yet confirmed archived,
                                               scored by the oldest such write's time (ms)
``p:archiveLease:{id}``               string   an archive gap check's claim of the task (PX)
``p:readyProbe``                      string   written by readiness probes (is Redis taking
                                               writes?), expires after 10 s
====================================  =======  ==================================================

Pub/sub channel ``p:task:{id}`` carries a JSON array of the events of one commit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeySpace", "TaskKeys"]


@dataclass(slots=True, frozen=True)
class TaskKeys:
    """The keys of one task, in the order the Lua scripts expect them as ``KEYS``."""

    task: str
    status: str
    revision: str
    idx: str
    events: str
    series_state: str
    series_meta: str
    idem: str
    event_idx: str

    def all(self) -> list[str]:
        return [
            self.task,
            self.status,
            self.revision,
            self.idx,
            self.events,
            self.series_state,
            self.series_meta,
            self.idem,
            self.event_idx,
        ]


def _glob_escape(text: str) -> str:
    """Escape PSUBSCRIBE glob characters so a prefix matches only itself."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class KeySpace:
    """Key and channel names under one prefix (``taskcast`` by default)."""

    __slots__ = (
        "_channel_prefix",
        "archive_lease_prefix",
        "archive_pending",
        "channel_pattern",
        "prefix",
        "task_order",
        "tasks",
    )

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.tasks = f"{prefix}:tasks"
        self.task_order = f"{prefix}:tasksByCreated"
        self.archive_pending = f"{prefix}:archivePending"
        self.archive_lease_prefix = f"{prefix}:archiveLease:"
        self._channel_prefix = f"{prefix}:task:"
        self.channel_pattern = _glob_escape(self._channel_prefix) + "*"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def for_task(self, task_id: str) -> TaskKeys:
        p = self.prefix
        return TaskKeys(
            task=f"{p}:task:{task_id}",
            status=f"{p}:taskStatus:{task_id}",
            revision=f"{p}:taskRevision:{task_id}",
            idx=f"{p}:idx:{task_id}",
            events=f"{p}:events:{task_id}",
            series_state=f"{p}:seriesState:{task_id}",
            series_meta=f"{p}:seriesMeta:{task_id}",
            idem=f"{p}:idem:{task_id}",
            event_idx=f"{p}:eventIdx:{task_id}",
        )

    def channel(self, task_id: str) -> str:
        return self._channel_prefix + task_id

    def task_id_of_channel(self, channel: bytes) -> str | None:
        """The task id a channel name carries, None if it is not one of ours."""
        text = channel.decode("utf-8", "surrogateescape")
        if not text.startswith(self._channel_prefix):
            return None
        return text[len(self._channel_prefix) :]
