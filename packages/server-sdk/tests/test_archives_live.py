"""export_task_archive / import_task_archive (sync and async) against a real server."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from taskcast.server_sdk import (
    ArchiveImportResult,
    AsyncTaskcastServerClient,
    BadRequestError,
    ConflictError,
    EventInput,
    NotFoundError,
    TaskcastServerClient,
)

pytestmark = pytest.mark.anyio


def test_archive_round_trip_sync(live: Any) -> None:
    with TaskcastServerClient(live.url) as client:
        task = client.create_task(id="sdk-arch-" + uuid.uuid4().hex, type="t")
        client.transition_task(task.id, "running")
        client.publish_events(
            task.id,
            [
                EventInput(type="log", data={"n": 1}),
                EventInput(
                    type="llm", data={"delta": "Hel"}, series_id="out", series_mode="accumulate"
                ),
                EventInput(
                    type="llm", data={"delta": "lo"}, series_id="out", series_mode="accumulate"
                ),
            ],
        )
        client.transition_task(task.id, "completed")
        archive = client.export_task_archive(task.id)
        assert archive["schema"] == "taskcast.taskArchive" and archive["version"] == 1
        assert [e["data"] for e in archive["events"]][1:3] == [{"n": 1}, {"delta": "Hello"}]
        json.dumps(archive)  # a plain JSON document, ready for a file
        with pytest.raises(ConflictError):
            client.import_task_archive(archive)
        client.delete_task(task.id)
        result = client.import_task_archive(archive)
        assert result == ArchiveImportResult(
            task_id=task.id, event_count=len(archive["events"]), overwritten=False
        )
        again = client.import_task_archive(archive, overwrite=True)
        assert again.overwritten is True
        history = client.get_history(task.id)
        assert [e.id for e in history] == [e["id"] for e in archive["events"]]
        with pytest.raises(BadRequestError, match="contiguous indexes"):
            broken = {**archive, "events": archive["events"][1:]}
            client.import_task_archive(broken, overwrite=True)
        with pytest.raises(NotFoundError):
            client.export_task_archive("sdk-arch-missing")


async def test_archive_round_trip_async(live: Any) -> None:
    async with AsyncTaskcastServerClient(live.url) as client:
        task = await client.create_task(id="sdk-arch-" + uuid.uuid4().hex)
        await client.transition_task(task.id, "running")
        await client.publish_event(task.id, "log", {"n": 1})
        archive = await client.export_task_archive(task.id)
        assert archive["task"]["status"] == "running"
        await client.delete_task(task.id)
        result = await client.import_task_archive(archive)
        assert (result.task_id, result.event_count, result.overwritten) == (
            task.id,
            len(archive["events"]),
            False,
        )
        # The imported running task continues where it stopped.
        event = await client.publish_event(task.id, "log", {"n": 2})
        assert event.index == len(archive["events"])
        with pytest.raises(ConflictError):
            await client.import_task_archive(archive)
