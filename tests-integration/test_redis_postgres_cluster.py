"""Several real server processes sharing Redis (and PostgreSQL): the production topology.

Every test uses its own Redis key prefix and PostgreSQL schema (both removed afterwards) and
starts its own `taskcast start` processes; the outage tests start their own `redis-server`
or put a TCP proxy in front of the shared PostgreSQL (which is never stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from itsupport import Server, free_port
from sse_client import RawStream

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("TASKCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "TASKCAST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="module")
def postgres_url() -> str:
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    return POSTGRES_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = "tcit-" + uuid.uuid4().hex
    yield value
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{value}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    value = "tcit_" + uuid.uuid4().hex
    yield value
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{value}" CASCADE')


# Tests list the `servers` fixture last: fixtures are torn down in reverse, so the servers
# stop before their Redis prefix and PostgreSQL schema are removed (an archive writer whose
# schema vanished would retry until its drain timeout).


def redis_env(url: str, prefix: str) -> dict[str, str]:
    return {"TASKCAST_REDIS_URL": url, "TASKCAST_REDIS_PREFIX": prefix}


def postgres_env(url: str, schema: str) -> dict[str, str]:
    return {
        "TASKCAST_POSTGRES_URL": url,
        "TASKCAST_POSTGRES_SCHEMA": schema,
        "TASKCAST_AUTO_MIGRATE": "true",
    }


def start_cluster(servers: list[Server], env: dict[str, str], count: int) -> list[Server]:
    started = []
    for _ in range(count):
        server = Server(["--storage", "redis", "--heartbeat-seconds", "1"], env=env)
        servers.append(server)
        started.append(server.start())
    return started


# -- SSE helpers ---------------------------------------------------------------------------


async def open_stream(server: Server, path: str, last_id: str | None = None) -> RawStream:
    headers = {} if last_id is None else {"Last-Event-ID": last_id}
    stream = RawStream("127.0.0.1", server.port, path, headers=headers)
    await stream.open()
    return stream


async def read_all(stream: RawStream, stop_after: int | None = None) -> list[tuple[int, str]]:
    """(rawIndex, id) of every event until done (or after ``stop_after`` events)."""
    seen: list[tuple[int, str]] = []
    async for event, data, id_ in stream.frames():
        if event == "taskcast.done":
            break
        if event == "taskcast.event":
            seen.append((data["rawIndex"], id_))
            if stop_after is not None and len(seen) >= stop_after:
                break
    stream.close()
    return seen


async def follow(servers: list[Server], task_id: str, deadline: float = 60.0) -> list[int]:
    """Follow a task to its end like a client does: reconnect with Last-Event-ID whenever
    the stream breaks (across ``servers``, in turn), until ``taskcast.done``."""
    seen: list[int] = []
    last_id: str | None = None
    attempt = 0
    async with asyncio.timeout(deadline):
        while True:
            server = servers[attempt % len(servers)]
            attempt += 1
            try:
                stream = await open_stream(server, f"/tasks/{task_id}/events", last_id)
            except (OSError, RuntimeError):
                await asyncio.sleep(0.2)
                continue
            try:
                async for event, data, id_ in stream.frames():
                    if event == "taskcast.done":
                        return seen
                    if event == "taskcast.event":
                        seen.append(data["rawIndex"])
                        last_id = id_
            except (OSError, asyncio.IncompleteReadError, ValueError):
                pass
            finally:
                stream.close()
            await asyncio.sleep(0.2)


async def new_running_task(client: httpx.AsyncClient, server: Server) -> str:
    task_id: str = (await client.post(server.url + "/tasks", json={})).json()["id"]
    r = await client.patch(f"{server.url}/tasks/{task_id}/status", json={"status": "running"})
    assert r.status_code == 200
    return task_id


async def publish(client: httpx.AsyncClient, server: Server, task_id: str, body: Any) -> Any:
    r = await client.post(f"{server.url}/tasks/{task_id}/events", json=body)
    assert r.status_code == 201, r.text
    return r.json()


# -- tests -----------------------------------------------------------------------------------


async def test_fanout_and_resume_across_three_instances(
    redis_url: str,
    postgres_url: str,
    prefix: str,
    schema: str,
    servers: list[Server],
) -> None:
    env = {**redis_env(redis_url, prefix), **postgres_env(postgres_url, schema)}
    a, b, c = start_cluster(servers, env, 3)
    async with httpx.AsyncClient(timeout=30) as client:
        task_id = await new_running_task(client, a)
        path = f"/tasks/{task_id}/events"
        on_b, on_c, half = [await open_stream(s, path) for s in (b, c, a)]
        readers = [asyncio.create_task(read_all(s)) for s in (on_b, on_c)]
        first_half = asyncio.create_task(read_all(half, stop_after=11))
        for i in range(20):
            await publish(client, a, task_id, {"type": "step", "data": i})
        read_half = await asyncio.wait_for(first_half, 30)
        # The subscriber that read half on A resumes on C with Last-Event-ID.
        resumed = await open_stream(c, path, last_id=read_half[-1][1])
        rest_reader = asyncio.create_task(read_all(resumed))
        await client.patch(f"{a.url}/tasks/{task_id}/status", json={"status": "completed"})
        results = await asyncio.wait_for(asyncio.gather(*readers, rest_reader), 30)
    everything = list(range(22))
    assert [i for i, _ in results[0]] == everything
    assert [i for i, _ in results[1]] == everything
    assert results[0] == results[1]  # same ids too
    assert [i for i, _ in read_half] + [i for i, _ in results[2]] == everything


async def test_hundred_concurrent_terminal_transitions_one_winner(
    redis_url: str,
    prefix: str,
    servers: list[Server],
) -> None:
    cluster = start_cluster(servers, redis_env(redis_url, prefix), 3)
    targets = ["completed", "failed", "cancelled", "timeout"]
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:
        task_id = await new_running_task(client, cluster[0])

        async def attempt(i: int) -> int:
            server = cluster[i % 3]
            r = await client.patch(
                f"{server.url}/tasks/{task_id}/status", json={"status": targets[i % 4]}
            )
            return r.status_code

        codes = await asyncio.gather(*(attempt(i) for i in range(100)))
        history = (await client.get(f"{cluster[1].url}/tasks/{task_id}/events/history")).json()
    assert sorted(set(codes)) == [200, 409]
    assert codes.count(200) == 1
    statuses = [e["data"]["status"] for e in history if e["type"] == "taskcast:status"]
    assert statuses[0] == "running" and len(statuses) == 2


async def test_thirty_publishers_over_three_instances(
    redis_url: str,
    prefix: str,
    servers: list[Server],
) -> None:
    cluster = start_cluster(servers, redis_env(redis_url, prefix), 3)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=60)) as client:
        task_id = await new_running_task(client, cluster[0])
        path = f"/tasks/{task_id}/events"
        streams = [await open_stream(s, path) for s in cluster for _ in range(2)]
        readers = [asyncio.create_task(read_all(s)) for s in streams]

        async def publisher(p: int) -> list[int]:
            indexes = []
            for i in range(10):
                event = await publish(
                    client, cluster[p % 3], task_id, {"type": "t", "data": [p, i]}
                )
                indexes.append(event["index"])
            return indexes

        published = await asyncio.gather(*(publisher(p) for p in range(30)))
        await client.patch(f"{cluster[2].url}/tasks/{task_id}/status", json={"status": "completed"})
        results = await asyncio.wait_for(asyncio.gather(*readers), 60)
    indexes = sorted(i for batch in published for i in batch)
    assert indexes == list(range(1, 301))
    assert all(batch == sorted(batch) for batch in published)
    for result in results:
        assert [i for i, _ in result] == list(range(302))


async def test_two_instances_one_redis_thousand_events_in_order(
    redis_url: str,
    prefix: str,
    servers: list[Server],
) -> None:
    a, b = start_cluster(servers, redis_env(redis_url, prefix), 2)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=40)) as client:
        task_id = await new_running_task(client, a)
        path = f"/tasks/{task_id}/events"
        readers = [asyncio.create_task(read_all(await open_stream(s, path))) for s in (a, b)]

        async def publisher(p: int) -> None:
            for i in range(50):
                await publish(client, (a, b)[(p + i) % 2], task_id, {"type": "t", "data": [p, i]})

        await asyncio.gather(*(publisher(p) for p in range(20)))
        await client.patch(f"{b.url}/tasks/{task_id}/status", json={"status": "completed"})
        results = await asyncio.wait_for(asyncio.gather(*readers), 60)
    for result in results:
        assert [i for i, _ in result] == list(range(1002))
    assert results[0] == results[1]


async def test_accumulated_format_across_instances(
    redis_url: str,
    prefix: str,
    servers: list[Server],
) -> None:
    """Deltas published on two instances reach `seriesFormat=accumulated` subscribers on
    both as the whole text so far, including one that resumed mid-answer (its stream reads
    the history it skipped); stores keep only the deltas."""
    a, b = start_cluster(servers, redis_env(redis_url, prefix), 2)
    acc = {"type": "llm.delta", "seriesId": "answer", "seriesMode": "accumulate"}
    pieces = [f"tok{i} " for i in range(60)]
    async with httpx.AsyncClient(timeout=30) as client:
        task_id = await new_running_task(client, a)
        path = f"/tasks/{task_id}/events?seriesFormat=accumulated"
        first = await publish(
            client, a, task_id, [{**acc, "data": {"delta": p}} for p in pieces[:10]]
        )

        async def texts(stream: RawStream, count: int) -> list[Any]:
            out = []
            async for event, data, _ in stream.frames():
                if event == "taskcast.event" and data["type"] == "llm.delta":
                    out.append(data["data"]["delta"])
                    if len(out) == count:
                        break
            stream.close()
            return out

        fresh = [await open_stream(s, path) for s in (a, b)]
        resumed = await open_stream(b, path, last_id=first[4]["id"])
        readers = [asyncio.create_task(texts(s, 51)) for s in fresh]  # snapshot + 50 live
        resumed_reader = asyncio.create_task(texts(resumed, 55))  # 5 raw deltas + 50 live
        await asyncio.sleep(0.3)  # the streams reach their live phase
        for i, piece in enumerate(pieces[10:]):
            await publish(client, (a, b)[i % 2], task_id, {**acc, "data": {"delta": piece}})
        got = await asyncio.wait_for(asyncio.gather(*readers, resumed_reader), 30)
        history = (await client.get(f"{a.url}/tasks/{task_id}/events/history")).json()
    expected_live = ["".join(pieces[: n + 1]) for n in range(10, 60)]
    for result in got[:2]:
        assert result == ["".join(pieces[:10]), *expected_live]
    assert got[2] == pieces[5:10] + expected_live
    assert [e["data"]["delta"] for e in history if e["type"] == "llm.delta"] == pieces


# -- Redis killed and restarted --------------------------------------------------------------


class OwnRedis:
    """A private `redis-server` with `appendfsync always`, killable and restartable."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--dir", str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not on PATH")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.kill()


async def test_redis_killed_and_restarted_mid_stream(
    own_redis: OwnRedis,
    servers: list[Server],
) -> None:
    a, b = start_cluster(servers, redis_env(own_redis.url, "tc"), 2)
    acknowledged: dict[int, str] = {}
    codes: list[int] = []
    async with httpx.AsyncClient(timeout=20) as client:
        task_id = await new_running_task(client, a)
        followers = [asyncio.create_task(follow(order, task_id)) for order in ([a, b], [b, a])]
        outage = asyncio.Event()
        warmed_up = asyncio.Event()
        restored = asyncio.Event()

        async def publisher(p: int) -> None:
            i = 0
            while not restored.is_set() or i < 60:
                server = (a, b)[(p + i) % 2]
                r = await client.post(
                    f"{server.url}/tasks/{task_id}/events", json={"type": "t", "data": [p, i]}
                )
                codes.append(r.status_code)
                if r.status_code == 201:
                    acknowledged[r.json()["index"]] = r.json()["id"]
                    if len(acknowledged) >= 40:
                        warmed_up.set()
                elif outage.is_set():
                    assert r.status_code == 503, r.text
                i += 1
                await asyncio.sleep(0.01)

        publishers = [asyncio.create_task(publisher(p)) for p in range(4)]
        await asyncio.wait_for(warmed_up.wait(), 30)
        outage.set()
        own_redis.kill()
        await asyncio.sleep(1.5)
        own_redis.start()
        restored.set()
        await asyncio.gather(*publishers)
        # Everything acknowledged survived the SIGKILL (appendfsync always).
        history = (await client.get(f"{b.url}/tasks/{task_id}/events/history")).json()
        stored = {e["index"]: e["id"] for e in history}
        assert all(stored.get(index) == id_ for index, id_ in acknowledged.items())
        await client.patch(f"{a.url}/tasks/{task_id}/status", json={"status": "completed"})
        results = await asyncio.gather(*followers)
    assert set(codes) == {201, 503}
    # Every stored event, then the completion's status event, each once and in order.
    last = max(stored) + 1
    for seen in results:
        assert seen == list(range(last + 1))


# -- PostgreSQL cut behind a proxy -----------------------------------------------------------


class TcpProxy:
    """Forwards a local port to PostgreSQL; `cut()` drops every connection and stops
    listening, `restore()` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.discard(writer)
        self._writers.discard(up_writer)


@pytest.fixture
async def pg_proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    info = psycopg.conninfo.conninfo_to_dict(postgres_url)
    proxy = TcpProxy(str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)))
    await proxy.restore()
    yield proxy
    await proxy.cut()


def via_proxy(postgres_url: str, proxy: TcpProxy) -> str:
    info = psycopg.conninfo.conninfo_to_dict(postgres_url)
    info.update(host="127.0.0.1", port=str(proxy.port))
    return psycopg.conninfo.make_conninfo(**info)


def archived_ids(postgres_url: str, schema: str, task_id: str) -> dict[int, str]:
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            f'SELECT idx, id FROM "{schema}".taskcast_events WHERE task_id = %s', (task_id,)
        ).fetchall()
    return {int(idx): str(id_) for idx, id_ in rows}


async def test_postgres_cut_and_restored_while_publishing(
    redis_url: str,
    postgres_url: str,
    prefix: str,
    schema: str,
    pg_proxy: TcpProxy,
    servers: list[Server],
) -> None:
    env = {
        **redis_env(redis_url, prefix),
        **postgres_env(via_proxy(postgres_url, pg_proxy), schema),
    }
    # The proxy runs on this event loop: start the servers (blocking) from a thread.
    cluster = await asyncio.to_thread(start_cluster, servers, env, 3)
    acknowledged: dict[int, str] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        task_id = await new_running_task(client, cluster[0])

        async def burst(n: int) -> None:
            for i in range(n):
                event = await publish(client, cluster[i % 3], task_id, {"type": "t", "data": i})
                acknowledged[event["index"]] = event["id"]

        await burst(30)
        await pg_proxy.cut()
        # Publishing does not depend on the archive: all of these succeed.
        await burst(60)
        details = [(await client.get(s.url + "/health/detail")).json() for s in cluster]
        assert sum(d["archive"]["backlog"] for d in details) > 0
        # Still serving (Redis is fine), but reporting the archive outage.
        ready = await client.get(cluster[0].url + "/health/ready")
        assert ready.status_code == 200 and ready.json()["degraded"] is True
        await pg_proxy.restore()
        async with asyncio.timeout(60):
            while True:
                details = [(await client.get(s.url + "/health/detail")).json() for s in cluster]
                if all(d["archive"]["backlog"] == 0 for d in details):
                    break
                await asyncio.sleep(0.2)
    archived = archived_ids(postgres_url, schema, task_id)
    assert {i: archived.get(i) for i in acknowledged} == acknowledged


# -- hot/cold lifecycle ----------------------------------------------------------------------


async def wait_released(redis_url: str, prefix: str, task_id: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        for _ in range(300):
            if not await client.exists(f"{prefix}:task:{task_id}"):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"task {task_id} was never released from Redis")
    finally:
        await client.aclose()


async def replay(server: Server, task_id: str, last_id: str | None = None) -> list[Any]:
    stream = await open_stream(server, f"/tasks/{task_id}/events", last_id)
    frames = []
    async with asyncio.timeout(20):
        async for event, data, id_ in stream.frames():
            frames.append((event, data, id_))
            if event == "taskcast.done":
                break
    stream.close()
    return frames


async def test_released_tasks_replay_identically_and_come_back(
    redis_url: str,
    postgres_url: str,
    prefix: str,
    schema: str,
    servers: list[Server],
) -> None:
    env = {
        **redis_env(redis_url, prefix),
        **postgres_env(postgres_url, schema),
        # `taskcast start`'s storageLifecycle settings, with short times.
        "TASKCAST_HOT_RETENTION_TERMINAL_SECONDS": "1",
        "TASKCAST_HOT_RETENTION_IDLE_SECONDS": "1",
        "TASKCAST_TTL_SWEEP_INTERVAL_SECONDS": "0.3",
    }
    a, b = (Server(["--storage", "redis", "--heartbeat-seconds", "1"], env=env) for _ in range(2))
    servers.extend((a, b))
    a.start()
    b.start()
    async with httpx.AsyncClient(timeout=30) as client:
        # A finished task: its replay and resume from the archive match the hot ones.
        done = await new_running_task(client, a)
        await publish(client, a, done, [
            {"type": "log", "data": {"n": 1}},
            {"type": "llm", "data": {"delta": "Hel"}, "seriesId": "s", "seriesMode": "accumulate"},
            {"type": "llm", "data": {"delta": "lo"}, "seriesId": "s", "seriesMode": "accumulate"},
            {"type": "pct", "data": 10, "seriesId": "p", "seriesMode": "latest"},
            {"type": "pct", "data": 90, "seriesId": "p", "seriesMode": "latest"},
            {"type": "log", "data": {"n": 2}},
        ])  # fmt: skip
        await client.patch(f"{a.url}/tasks/{done}/status", json={"status": "completed"})
        hot_full = await replay(a, done)
        cursor = hot_full[2][2]
        hot_resumed = await replay(b, done, cursor)
        hot_history = (await client.get(f"{a.url}/tasks/{done}/events/history")).json()
        await wait_released(redis_url, prefix, done)
        assert await replay(b, done) == hot_full
        assert await replay(a, done, cursor) == hot_resumed
        assert (await client.get(f"{b.url}/tasks/{done}/events/history")).json() == hot_history
        assert (await client.get(f"{b.url}/tasks/{done}")).json()["status"] == "completed"
        late = await client.post(f"{b.url}/tasks/{done}/events", json={"type": "late"})
        assert late.status_code == 400

        # An idle unfinished task: released, then a publish brings it back where it stopped.
        idle = await new_running_task(client, a)
        first = await publish(client, a, idle, [{"type": "t", "data": i} for i in range(5)])
        await wait_released(redis_url, prefix, idle)
        follower = asyncio.create_task(follow([b], idle))
        more = await publish(client, b, idle, [{"type": "t", "data": i} for i in range(5, 8)])
        assert [e["index"] for e in more] == [first[-1]["index"] + 1 + i for i in range(3)]
        await client.patch(f"{a.url}/tasks/{idle}/status", json={"status": "completed"})
        seen = await follower
    assert seen == list(range(10))


# -- an instance killed with archive writes queued ------------------------------------------


async def test_killed_instance_archive_gap_is_closed_by_the_survivor(
    redis_url: str,
    postgres_url: str,
    prefix: str,
    schema: str,
    pg_proxy: TcpProxy,
    servers: list[Server],
) -> None:
    grace, interval = 1.0, 2.0
    check = {
        "TASKCAST_ARCHIVE_CHECK_INTERVAL_SECONDS": str(interval),
        "TASKCAST_ARCHIVE_CHECK_GRACE_SECONDS": str(grace),
    }
    # The victim reaches PostgreSQL through a proxy that is cut: its archive writes stay
    # queued in its memory until it is killed. The survivor writes to PostgreSQL directly.
    victim = Server(
        ["--storage", "redis"],
        env={
            **redis_env(redis_url, prefix),
            **postgres_env(via_proxy(postgres_url, pg_proxy), schema),
            **check,
        },
    )
    survivor = Server(
        ["--storage", "redis"],
        env={**redis_env(redis_url, prefix), **postgres_env(postgres_url, schema), **check},
    )
    servers.extend((victim, survivor))
    # The proxy runs on this event loop: start the servers (blocking) from a thread.
    await asyncio.to_thread(victim.start)
    await asyncio.to_thread(survivor.start)
    async with httpx.AsyncClient(timeout=30) as client:
        await pg_proxy.cut()
        task_id = await new_running_task(client, victim)
        acknowledged = {
            e["index"]: e["id"]
            for e in await publish(
                client, victim, task_id, [{"type": "t", "data": i} for i in range(9)]
            )
        }
        acked = time.monotonic()
        detail = (await client.get(victim.url + "/health/detail")).json()
        assert detail["archive"]["backlog"] > 0
        await asyncio.to_thread(victim.kill)
        killed = time.monotonic()
        assert archived_ids(postgres_url, schema, task_id) == {}

        # Found within grace + two checks (the first one jittered); slack for this machine.
        bound = grace + 2 * interval + 10
        reported = 0
        while True:
            detail = (await client.get(survivor.url + "/health/detail")).json()
            archived = archived_ids(postgres_url, schema, task_id)
            if all(archived.get(i) == id_ for i, id_ in acknowledged.items()):
                break
            # This health answer came before the archive was seen incomplete: once the
            # writes are past the grace period and a check interval, it must report the gap.
            if time.monotonic() - acked > grace + interval + 0.5:
                gap = detail["archive"]["gap"]
                assert gap["tasks"] >= 1 and gap["oldestAgeSeconds"] >= grace, detail
                assert detail["archive"]["degraded"] is True, detail
                reported += 1
            assert time.monotonic() - killed < bound, f"not archived after {bound}s: {detail}"
            await asyncio.sleep(0.05)
        # The task snapshot (running) is archived too.
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                f'SELECT status FROM "{schema}".taskcast_tasks WHERE id = %s', (task_id,)
            ).fetchone()
        assert row == ("running",)
        # Reported until a later check confirms the archive holds everything (the check that
        # re-queued the writes keeps the task claimed for a lease, longer than the report's
        # threshold of grace + interval); the record is then cleared and health recovers.
        records = redis.asyncio.Redis.from_url(redis_url)
        try:
            async with asyncio.timeout(bound):
                while await records.zscore(f"{prefix}:archivePending", task_id) is not None:
                    detail = (await client.get(survivor.url + "/health/detail")).json()
                    if detail["archive"]["gap"]["tasks"] >= 1:
                        reported += 1
                    await asyncio.sleep(0.1)
        finally:
            await records.aclose()
        detail = (await client.get(survivor.url + "/health/detail")).json()
        assert detail["archive"]["gap"]["tasks"] == 0, detail
        assert reported >= 1
        assert detail["archive"]["gap"]["requeued"] >= len(acknowledged)
        assert detail["archive"]["degraded"] is False


# -- a write PostgreSQL refuses ---------------------------------------------------------------


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_a_refused_archive_write_is_isolated_and_reported(
    redis_url: str,
    postgres_url: str,
    prefix: str,
    schema: str,
    servers: list[Server],
) -> None:
    server = Server(
        ["--storage", "redis", "--metrics"],
        env={
            **redis_env(redis_url, prefix),
            **postgres_env(postgres_url, schema),
            "TASKCAST_ARCHIVE_CHECK_INTERVAL_SECONDS": "0.5",
            "TASKCAST_ARCHIVE_CHECK_GRACE_SECONDS": "1",
        },
    )
    servers.append(server)
    await asyncio.to_thread(server.start)
    # The schema was migrated at start; now PostgreSQL refuses one kind of row for good.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            f'ALTER TABLE "{schema}".taskcast_events '
            "ADD CONSTRAINT refuse_poison CHECK (type <> 'poison')"
        )
    async with httpx.AsyncClient(timeout=30) as client:
        bad = await new_running_task(client, server)
        bad_events = await publish(
            client, server, bad, [{"type": "ok"}, {"type": "poison"}, {"type": "ok"}]
        )
        good = await new_running_task(client, server)
        good_events = await publish(
            client, server, good, [{"type": "t", "data": i} for i in range(20)]
        )
        # Everything else is archived at once: the refused row does not hold the batch up.
        async with asyncio.timeout(10):
            while True:
                archived_good = archived_ids(postgres_url, schema, good)
                archived_bad = archived_ids(postgres_url, schema, bad)
                if len(archived_good) == 21 and len(archived_bad) == 3:
                    break
                await asyncio.sleep(0.1)
        assert {e["id"] for e in good_events} <= set(archived_good.values())
        assert set(archived_bad.values()) >= {bad_events[0]["id"], bad_events[2]["id"]}
        assert bad_events[1]["id"] not in archived_bad.values()
        # Reported, not hidden behind "healthy, backlog 0".
        detail = (await client.get(server.url + "/health/detail")).json()
        archive = detail["archive"]
        assert archive["degraded"] is True, archive
        assert archive["failing"]["tasks"] == 1 and archive["failing"]["writes"] == 1, archive
        assert "refuse_poison" in archive["failing"]["lastError"], archive
        assert archive["failing"]["oldestAgeSeconds"] >= 0
        ready = await client.get(server.url + "/health/ready")
        assert ready.status_code == 200 and ready.json()["degraded"] is True, ready.text
        text = (await client.get(server.url + "/metrics")).text
        assert metric(text, "taskcast_archive_failing_tasks") == 1
        # The constraint is lifted: the write gets through on the task's next attempt (the
        # gap check queues it again once it was given up on) and the report clears.
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'ALTER TABLE "{schema}".taskcast_events DROP CONSTRAINT refuse_poison')
        async with asyncio.timeout(60):
            while True:
                if bad_events[1]["id"] in archived_ids(postgres_url, schema, bad).values():
                    break
                await asyncio.sleep(0.2)
            # A later gap check then finds the archive complete and clears the record.
            records = redis.asyncio.Redis.from_url(redis_url)
            try:
                while True:
                    if await records.zscore(f"{prefix}:archivePending", bad) is None:
                        break
                    await asyncio.sleep(0.2)
            finally:
                await records.aclose()
        detail = (await client.get(server.url + "/health/detail")).json()
        archive = detail["archive"]
        assert archive["failing"]["tasks"] == 0 and archive["gap"]["tasks"] == 0, archive
        assert archive["degraded"] is False, archive
        ready = await client.get(server.url + "/health/ready")
        assert ready.status_code == 200 and "degraded" not in ready.json(), ready.text
        text = (await client.get(server.url + "/metrics")).text
        assert metric(text, "taskcast_archive_failing_tasks") == 0
