"""Commit scripts of one event-loop turn go out as one pipeline; each caller gets its own reply."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aredis
from redis import exceptions as rx

from taskcast.core import EventDraft, EventQuery, StorageUnavailableError, Task, new_id, now_ms
from taskcast.redis import RedisShortTermStore
from taskcast.redis._batching import MAX_BATCH, ScriptBatcher

pytestmark = pytest.mark.anyio

# Stores ARGV[2] at KEYS[1] and answers it; ARGV[1] == "fail" answers an error instead.
_SCRIPT = """
if ARGV[1] == 'fail' then return redis.error_reply('refused ' .. ARGV[2]) end
redis.call('SET', KEYS[1], ARGV[2])
return ARGV[2]
"""


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aredis.Redis]:
    c = aredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def fresh_script(client: aredis.Redis) -> Any:
    # A text no server has seen yet, so its first EVALSHA answers NOSCRIPT.
    return client.register_script(_SCRIPT + f"-- {uuid.uuid4().hex}\n")


class CountingPipelines:
    def __init__(self, client: aredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        original = client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = original(*args, **kwargs)
            execute = pipe.execute

            async def counted(**options: Any) -> Any:
                self.sizes.append(len(pipe.command_stack))
                return await execute(**options)

            pipe.execute = counted  # type: ignore[method-assign,assignment]
            return pipe

        monkeypatch.setattr(client, "pipeline", pipeline)


async def test_one_turn_is_one_pipeline_with_each_reply_to_its_caller(
    client: aredis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipelines = CountingPipelines(client, monkeypatch)
    script = fresh_script(client)
    await script.registered_client.script_load(script.script)
    batcher = ScriptBatcher(client, script)
    calls = [batcher([f"{prefix}:k{i}"], ["fail" if i == 4 else "ok", f"v{i}"]) for i in range(10)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert pipelines.sizes == [10]
    assert [r for i, r in enumerate(results) if i != 4] == [
        f"v{i}".encode() for i in range(10) if i != 4
    ]
    assert isinstance(results[4], rx.ResponseError) and "refused v4" in str(results[4])
    assert await client.get(f"{prefix}:k4") is None
    assert await client.get(f"{prefix}:k9") == b"v9"


async def test_a_lone_call_and_a_large_turn(
    client: aredis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipelines = CountingPipelines(client, monkeypatch)
    batcher = ScriptBatcher(client, fresh_script(client))
    # Alone in its turn: the script object runs it (and loads the unknown script).
    assert await batcher([f"{prefix}:a"], ["ok", "alone"]) == b"alone"
    assert pipelines.sizes == []
    n = MAX_BATCH + 3
    results = await asyncio.gather(*(batcher([f"{prefix}:b{i}"], ["ok", str(i)]) for i in range(n)))
    assert results == [str(i).encode() for i in range(n)]
    assert pipelines.sizes == [MAX_BATCH, 3]


async def test_scripts_missing_from_the_server_are_loaded_and_run(
    client: aredis.Redis, prefix: str
) -> None:
    batcher = ScriptBatcher(client, fresh_script(client))
    results = await asyncio.gather(*(batcher([f"{prefix}:n{i}"], ["ok", str(i)]) for i in range(5)))
    assert results == [str(i).encode() for i in range(5)]
    assert await client.get(f"{prefix}:n3") == b"3"


async def test_a_cancelled_caller_leaves_the_others_and_its_write_happens(
    client: aredis.Redis, prefix: str
) -> None:
    script = fresh_script(client)
    await script.registered_client.script_load(script.script)
    batcher = ScriptBatcher(client, script)
    tasks = [asyncio.ensure_future(batcher([f"{prefix}:c{i}"], ["ok", str(i)])) for i in range(3)]
    await asyncio.sleep(0)  # all three queued; the pipeline goes out on the next turn
    tasks[1].cancel()
    assert await tasks[0] == b"0" and await tasks[2] == b"2"
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert await client.get(f"{prefix}:c1") == b"1"


async def test_an_unreachable_server_fails_every_caller() -> None:
    store = RedisShortTermStore("redis://127.0.0.1:1/0", connect_timeout=0.5)
    try:
        task = Task(id="t", status="running", created_at=now_ms(), updated_at=now_ms())
        drafts = [
            EventDraft(id=new_id(), timestamp=now_ms(), type="x", level="info") for _ in range(3)
        ]
        results = await asyncio.gather(
            *(store.commit_events(task.id, [d]) for d in drafts), return_exceptions=True
        )
        assert all(isinstance(r, StorageUnavailableError) for r in results), results
    finally:
        await store.close()


async def test_concurrent_commits_to_one_task_get_distinct_indices(
    store: RedisShortTermStore,
) -> None:
    task = Task(id="batched", status="running", created_at=now_ms(), updated_at=now_ms())
    await store.create_task(task)
    drafts = [
        EventDraft(id=new_id(), timestamp=now_ms(), type="x", level="info", data=i)
        for i in range(20)
    ]
    results = await asyncio.gather(*(store.commit_events(task.id, [d]) for d in drafts))
    committed = [r.events[0] for r in results]
    assert [e.data for e in committed] == list(range(20))
    assert sorted(e.index for e in committed) == list(range(20))
    stored = {e.id: e for e in await store.get_events(task.id, EventQuery())}
    assert all(stored[e.id].index == e.index and stored[e.id].data == e.data for e in committed)
