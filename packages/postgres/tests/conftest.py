"""Fixtures: the real PostgreSQL server, one throw-away schema per test, and a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql

from taskcast.core import new_id
from taskcast.postgres import PostgresLongTermStore, apply_migrations

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("TASKCAST_TEST_POSTGRES_URL") or DEFAULT_URL
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"PostgreSQL not reachable at {url}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return url


def _drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    """A fresh schema name for this test; the schema (only this one) is dropped afterwards."""
    name = f"tc_test_{new_id().lower()}"
    yield name
    _drop_schema(pg_url, name)


@pytest.fixture
async def migrated(pg_url: str, schema: str) -> str:
    await apply_migrations(pg_url, schema)
    return schema


@pytest.fixture
async def store(pg_url: str, migrated: str) -> AsyncIterator[PostgresLongTermStore]:
    s = PostgresLongTermStore(pg_url, schema=migrated, max_size=4)
    await s.open()
    yield s
    await s.close()


class TcpProxy:
    """A loopback TCP proxy whose link can be cut and restored, to simulate an outage."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.enabled = True
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.enabled:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)
            for w in (writer, up_writer):
                self._links.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        self.enabled = False
        for w in list(self._links):
            w.transport.abort()

    def restore(self) -> None:
        self.enabled = True

    def url(self, url: str) -> str:
        """``url`` with host and port pointing at the proxy."""
        return psycopg.conninfo.make_conninfo(url, host="127.0.0.1", port=str(self.port))

    async def close(self) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[TcpProxy]:
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    p = TcpProxy(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
    await p.start()
    yield p
    await p.close()
