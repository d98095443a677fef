"""The store's own pipelined script connection (RespChannel), against real redis-servers."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, ConnectionPool

from taskcast.core import EventDraft, EventQuery, StorageUnavailableError, Task, new_id, now_ms
from taskcast.redis import RedisShortTermStore
from taskcast.redis._batching import ScriptBatcher
from taskcast.redis._channel import (
    ChannelSettings,
    RespChannel,
    ScriptCall,
    channel_settings,
    pack,
)

from ._private_redis import PrivateRedis, free_port

pytestmark = pytest.mark.anyio


def _draft(i: int) -> EventDraft:
    return EventDraft(id=new_id(), timestamp=now_ms(), type="log", level="info", data={"i": i})


def _task() -> Task:
    now = now_ms()
    return Task(id=new_id(), created_at=now, updated_at=now, status="running")


@pytest.fixture
async def channel(redis_url: str) -> AsyncIterator[RespChannel]:
    settings = channel_settings(Redis.from_url(redis_url))
    assert settings is not None
    ch = RespChannel(settings, socket_timeout=5.0, connect_timeout=2.0)
    yield ch
    await ch.close()


def test_pack_encodes_strings_bytes_and_ints() -> None:
    assert pack(("SET", b"k\r\n", 12, "é")) == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$2\r\n\xc3\xa9\r\n"
    )


def test_settings_are_read_off_the_client() -> None:
    tcp = channel_settings(Redis.from_url("redis://user:pw@example.test:6380/3", client_name="x"))
    assert tcp == ChannelSettings(
        host="example.test", port=6380, db=3, username="user", password="pw", client_name="x"
    )
    unix = channel_settings(Redis.from_url("unix:///run/redis.sock?db=2"))
    assert unix == ChannelSettings(path="/run/redis.sock", db=2)
    # What the channel cannot reproduce stays with redis-py.
    assert channel_settings(Redis.from_url("rediss://example.test:6380/0")) is None
    assert channel_settings(Redis.from_url("redis://example.test", protocol=3)) is None


async def test_commands_of_one_turn_share_one_write(channel: RespChannel, redis_url: str) -> None:
    key = f"tctest-{uuid.uuid4().hex}"
    try:
        await channel.call("PING")
        protocol = channel._protocol
        assert protocol is not None and protocol.transport is not None
        writes: list[bytes] = []
        original = protocol.transport.write

        def spy(data: Any) -> None:
            writes.append(bytes(data))
            original(data)

        protocol.transport.write = spy  # type: ignore[method-assign]
        replies = await asyncio.gather(*(channel.call("INCR", key) for _ in range(50)))
        assert replies == list(range(1, 51))  # in order, each caller its own reply
        assert len(writes) == 1
        assert await channel.call("GET", key) == b"50"
        with pytest.raises(rx.ResponseError, match=r"^WRONGTYPE"):
            await channel.call("LPUSH", key, "x")
        assert await channel.call("GET", key) == b"50"  # an error reply is one caller's
    finally:
        redis.Redis.from_url(redis_url).delete(key)


async def test_a_cancelled_caller_keeps_the_replies_aligned(channel: RespChannel) -> None:
    await channel.call("PING")
    slow = asyncio.ensure_future(channel.call("ECHO", "first"))
    await asyncio.sleep(0)  # queued
    slow.cancel()
    assert await channel.call("ECHO", "second") == b"second"
    with pytest.raises(asyncio.CancelledError):
        await slow


async def test_script_call_falls_back_to_eval_when_the_script_is_unknown(
    channel: RespChannel,
) -> None:
    # A fresh body: its sha is in no server's cache, as after a restart or SCRIPT FLUSH.
    source = f"return {{KEYS[1], ARGV[1], '{uuid.uuid4().hex}'}}"
    script = ScriptCall(channel, source)
    first = await script(["k"], ["a"])
    assert first[:2] == [b"k", b"a"]
    # EVAL cached it: the next call runs as EVALSHA.
    assert await channel.call("SCRIPT", "EXISTS", script.sha) == [1]
    assert (await script(["k2"], [7]))[:2] == [b"k2", b"7"]


async def test_a_private_server_with_password_db_and_name(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        server.command("CONFIG", "SET", "requirepass", "s3cret")
        url = f"redis://:s3cret@127.0.0.1:{server.port}/5"
        settings = channel_settings(Redis.from_url(url, client_name="taskcast-test"))
        assert settings is not None
        ch = RespChannel(settings, socket_timeout=5.0, connect_timeout=2.0)
        try:
            await ch.call("SET", "k", "v")
            assert await ch.call("CLIENT", "GETNAME") == b"taskcast-test"
        finally:
            await ch.close()
        check = redis.Redis(port=server.port, password="s3cret", db=5)
        assert check.get("k") == b"v"
        check.close()
        wrong = channel_settings(Redis.from_url(f"redis://:nope@127.0.0.1:{server.port}/0"))
        assert wrong is not None
        bad = RespChannel(wrong, socket_timeout=5.0, connect_timeout=2.0)
        with pytest.raises(rx.AuthenticationError):
            await bad.call("PING")
        await bad.close()
    finally:
        server.kill()


async def test_a_lost_connection_fails_waiting_callers_and_the_next_call_reconnects(
    tmp_path: Path,
) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    settings = ChannelSettings(port=server.port)
    ch = RespChannel(settings, socket_timeout=5.0, connect_timeout=1.0)
    try:
        assert await ch.call("PING") == b"PONG"
        blocked = asyncio.ensure_future(ch.call("BLPOP", "never", 0))
        await asyncio.sleep(0.05)
        server.kill()
        with pytest.raises(rx.ConnectionError):
            await blocked
        # Down: a clear connection error (the store's guard makes it a 503).
        with pytest.raises(rx.ConnectionError, match="Error connecting"):
            await ch.call("PING")
        server.start()
        assert await ch.call("PING") == b"PONG"
    finally:
        await ch.close()
        server.kill()


async def test_a_silent_server_times_out_and_the_connection_is_dropped() -> None:
    # Accepts the connection, never answers.
    accepted: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ch = RespChannel(ChannelSettings(port=port), socket_timeout=0.2, connect_timeout=1.0)
    try:
        with pytest.raises(rx.TimeoutError):
            await asyncio.wait_for(ch.call("PING"), 5)
        assert ch._protocol is None
    finally:
        await ch.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_garbled_reply_drops_the_connection() -> None:
    async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"?what\r\n")
        await writer.drain()

    server = await asyncio.start_server(garble, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ch = RespChannel(ChannelSettings(port=port), socket_timeout=2.0, connect_timeout=1.0)
    try:
        with pytest.raises(rx.ConnectionError, match="Protocol error"):
            await asyncio.wait_for(ch.call("PING"), 5)
    finally:
        await ch.close()
        server.close()
        await server.wait_closed()


async def test_nothing_listening_is_a_connection_error() -> None:
    ch = RespChannel(ChannelSettings(port=free_port()), socket_timeout=1.0, connect_timeout=1.0)
    with pytest.raises(rx.ConnectionError, match="Error connecting"):
        await ch.call("PING")
    await ch.close()
    with pytest.raises(rx.ConnectionError, match="closed"):
        await ch.call("PING")


async def test_store_commits_through_the_channel(redis_url: str, prefix: str) -> None:
    store = RedisShortTermStore(redis_url, prefix=prefix)
    await store.open()
    try:
        assert store._channel is not None
        task = _task()
        await store.create_task(task)
        results = await asyncio.gather(
            *(store.commit_events(task.id, [_draft(i)]) for i in range(20))
        )
        assert sorted(r.events[0].index for r in results) == list(range(20))
    finally:
        await store.close()


async def test_store_with_a_client_it_cannot_copy_uses_redis_py(
    redis_url: str, prefix: str
) -> None:
    class Custom(Connection):
        pass

    base = ConnectionPool.from_url(redis_url)
    pool = ConnectionPool(connection_class=Custom, **base.connection_kwargs)
    client = Redis(connection_pool=pool)
    store = RedisShortTermStore(client, prefix=prefix)
    await store.open()
    try:
        assert store._channel is None
        assert isinstance(store._commits, ScriptBatcher)
        task = _task()
        await store.create_task(task)
        result = await store.commit_events(task.id, [_draft(0), _draft(1)])
        assert [e.index for e in result.events] == [0, 1]
        assert [e.index for e in await store.get_events(task.id, EventQuery())] == [0, 1]
    finally:
        await store.close()
        await client.aclose()


async def test_store_outage_through_the_channel_is_storage_unavailable(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    store = RedisShortTermStore(server.url, prefix="p", connect_timeout=1.0)
    try:
        await store.open()
        task = _task()
        await store.create_task(task)
        await store.commit_events(task.id, [_draft(0)])
        server.kill()
        with pytest.raises(StorageUnavailableError):
            await store.commit_events(task.id, [_draft(1)])
        server.start()  # AOF: the task and its first event are back
        result = await store.commit_events(task.id, [_draft(1)])
        assert result.events[0].index == 1
    finally:
        await store.close()
        server.kill()


async def _answering(reply: bytes) -> tuple[asyncio.Server, int]:
    """A fake server that answers every command it reads with ``reply``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            writer.write(reply)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (b"-LOADING Redis is loading the dataset in memory\r\n", rx.BusyLoadingError),
        (b"-READONLY You can't write against a read only replica.\r\n", rx.ReadOnlyError),
        (b"-MISCONF Errors writing to the AOF file\r\n", rx.ResponseError),
    ],
)
async def test_error_replies_keep_redis_py_classes_and_full_text(
    reply: bytes, kind: type[Exception]
) -> None:
    server, port = await _answering(reply)
    ch = RespChannel(ChannelSettings(port=port), socket_timeout=2.0, connect_timeout=1.0)
    try:
        with pytest.raises(kind) as info:
            await ch.call("SET", "k", "v")
        # The store's guard recognises outages by the reply's code, so it is kept.
        assert str(info.value) == reply[1:-2].decode()
    finally:
        await ch.close()
        server.close()
        await server.wait_closed()


async def test_a_unix_socket_server(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is needed for the Redis tests"
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", "0", "--unixsocket", str(socket_path), "--save", "",
        "--dir", str(tmp_path), stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            if socket_path.exists():
                break
            await asyncio.sleep(0.01)
        settings = channel_settings(Redis.from_url(f"unix://{socket_path}?db=1"))
        assert settings == ChannelSettings(path=str(socket_path), db=1)
        ch = RespChannel(settings, socket_timeout=2.0, connect_timeout=1.0)
        try:
            assert await ch.call("ECHO", "over unix") == b"over unix"
        finally:
            await ch.close()
    finally:
        proc.kill()
        await proc.wait()


async def test_redis_py_fallback_reports_outages_and_reloads_scripts(tmp_path: Path) -> None:
    # The commit path of a client the channel cannot copy: redis-py with ScriptBatcher.
    server = PrivateRedis(tmp_path)
    server.start()

    class Custom(Connection):
        pass

    base = ConnectionPool.from_url(server.url, socket_connect_timeout=1.0)
    client = Redis(
        connection_pool=ConnectionPool(connection_class=Custom, **base.connection_kwargs)
    )
    store = RedisShortTermStore(client, prefix="p")
    try:
        await store.open()
        task = _task()
        await store.create_task(task)
        # Several commits in one turn go out as one pipeline.
        first = await asyncio.gather(*(store.commit_events(task.id, [_draft(i)]) for i in range(3)))
        assert sorted(r.events[0].index for r in first) == [0, 1, 2]
        server.command("SCRIPT", "FLUSH")
        again = await asyncio.gather(*(store.commit_events(task.id, [_draft(i)]) for i in range(2)))
        assert sorted(r.events[0].index for r in again) == [3, 4]
        server.command("SCRIPT", "FLUSH")
        assert (await store.commit_events(task.id, [_draft(5)])).events[0].index == 5
        server.kill()
        with pytest.raises(StorageUnavailableError):
            await store.commit_events(task.id, [_draft(6)])
        with pytest.raises(StorageUnavailableError):
            await asyncio.gather(*(store.commit_events(task.id, [_draft(i)]) for i in range(2)))
    finally:
        await store.close()
        await client.aclose()
        server.kill()
