"""Several OS processes on one file: CAS, index allocation and crash durability."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from taskcast.core import EventQuery
from taskcast.sqlite import SQLiteStore

from ._helpers import make_task

pytestmark = pytest.mark.anyio

CHILD = str(Path(__file__).with_name("_child.py"))


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_two_processes_one_winner_and_contiguous_indexes(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    cas_task, events_task = make_task(), make_task()
    await store.create_task(cas_task)
    await store.create_task(events_task)
    current = await store.get_task_revision(cas_task.id)
    assert current is not None
    await store.close()

    per_process = 120
    children = [
        _spawn(
            "contend",
            str(db_path),
            cas_task.id,
            str(current[1]),
            events_task.id,
            str(per_process),
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    reports = []
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))

    assert sum(r["wins"] for r in reports) == 1
    indexes = [i for r in reports for i in r["indexes"]]
    assert len(indexes) == len(set(indexes)) == 2 * 2 * per_process
    assert sorted(indexes) == list(range(4 * per_process))

    store = SQLiteStore(db_path)
    await store.open()
    try:
        stored = await store.get_events(events_task.id, EventQuery())
        assert [e.index for e in stored] == list(range(4 * per_process))
        winner = await store.get_task(cas_task.id)
        assert winner is not None and winner.status == "cancelled"
        assert len(await store.get_events(cas_task.id, EventQuery())) == 1
    finally:
        await store.close()


async def test_acknowledged_commits_survive_sigkill(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    task = make_task()
    await store.create_task(task)
    await store.close()

    n = 200
    child = _spawn("durable", str(db_path), task.id, str(n))
    out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err
    acked = sorted(int(line.split()[1]) for line in out.splitlines() if line.startswith("ok "))
    assert acked == list(range(n))
    # The process died with its WAL un-checkpointed; the file must still hold every ack.
    assert db_path.with_name(db_path.name + "-wal").exists()

    again = SQLiteStore(db_path)
    await again.open()
    try:
        stored = await again.get_events(task.id, EventQuery())
        assert [e.index for e in stored] == list(range(n))
        assert await again.last_index(task.id) == n - 1
    finally:
        await again.close()
