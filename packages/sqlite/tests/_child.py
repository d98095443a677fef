"""A second OS process working on the same file (run by test_processes.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from taskcast.core import EventDraft, StaleRevisionError, new_id, now_ms
from taskcast.sqlite import SQLiteStore


def _draft(data: object) -> EventDraft:
    return EventDraft(id=new_id(), timestamp=now_ms(), type="log", level="info", data=data)


async def contend(path: str, cas_task: str, revision: int, events_task: str, n: int) -> None:
    store = SQLiteStore(path, busy_timeout=30)
    await store.open()
    current = await store.get_task(cas_task)
    assert current is not None
    print("ready", flush=True)
    sys.stdin.readline()  # wait for "go" so both processes start together

    async def attempt(i: int) -> bool:
        try:
            await store.commit_transition(
                current.copy(status="cancelled", metadata={"winner": f"{os.getpid()}-{i}"}),
                revision,
                [_draft({"status": "cancelled"})],
            )
        except StaleRevisionError:
            return False
        return True

    async def publisher(worker: int) -> list[int]:
        # Sequential commits from a few workers: many small transactions, so the two
        # processes take the write lock in turns instead of one big group each.
        indexes: list[int] = []
        for i in range(worker, n, 4):
            result = await store.commit_events(events_task, [_draft(i), _draft(i)])
            indexes.extend(e.index for e in result.events)
        return indexes

    async def cas() -> list[bool]:
        outcomes = list(await asyncio.gather(*(attempt(i) for i in range(10))))
        for i in range(10, 20):
            outcomes.append(await attempt(i))
        return outcomes

    wins, batches = await asyncio.gather(cas(), asyncio.gather(*(publisher(w) for w in range(4))))
    await store.close()
    print(json.dumps({"wins": sum(wins), "indexes": [i for b in batches for i in b]}), flush=True)


async def durable(path: str, task_id: str, n: int) -> None:
    store = SQLiteStore(path)
    await store.open()
    for start in range(0, n, 10):
        results = await asyncio.gather(
            *(store.commit_events(task_id, [_draft(i)]) for i in range(start, min(start + 10, n)))
        )
        for result in results:
            print(f"ok {result.events[0].index}", flush=True)
    # Killed right after the last acknowledgement: no close(), no checkpoint.
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "contend":
        asyncio.run(contend(args[0], args[1], int(args[2]), args[3], int(args[4])))
    else:
        asyncio.run(durable(args[0], args[1], int(args[2])))
