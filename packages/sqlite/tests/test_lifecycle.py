from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from taskcast.core import (
    ConfigError,
    EventInput,
    EventQuery,
    StorageUnavailableError,
    TaskEngine,
    TaskInput,
    TaskQuery,
)
from taskcast.sqlite import SQLiteStore

from ._helpers import draft, make_task, raw_connection, writer_held

pytestmark = pytest.mark.anyio


async def test_open_creates_parent_folders_and_wal_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.db"
    store = SQLiteStore(path)
    await store.open()
    await store.open()  # idempotent
    try:
        await store.ping()
        assert path.exists()
        with raw_connection(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await store.close()
    await store.close()  # idempotent
    assert repr(store) == f"SQLiteStore({str(path)!r})"


async def test_restart_keeps_everything_and_indexes_continue(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    task = make_task(type="llm.chat", params={"p": 1})
    await store.create_task(task)
    acc = {"series_id": "s", "series_mode": "accumulate"}
    first = await store.commit_events(
        task.id, [draft({"delta": "ab"}, **acc), draft(idempotency_key="k"), draft(1)]
    )
    lat = {"series_id": "p", "series_mode": "latest"}
    replaced = await store.commit_events(task.id, [draft({"pct": 1}, **lat)])
    await store.commit_events(task.id, [draft({"pct": 2}, **lat)])
    current = await store.get_task_revision(task.id)
    assert current is not None
    await store.close()

    again = SQLiteStore(db_path)
    await again.open()
    try:
        assert await again.get_task(task.id) == task
        assert await again.get_task_revision(task.id) == current
        assert await again.last_index(task.id) == 4
        assert await again.resolve_cursor(task.id, replaced.events[0].id) == 3
        stored = await again.get_events(task.id, EventQuery())
        assert [e.index for e in stored] == [0, 1, 2, 4]
        repeat = await again.commit_events(task.id, [draft(idempotency_key="k")])
        assert repeat.events[0].id == first.events[1].id and repeat.fresh == []
        more = await again.commit_events(task.id, [draft({"delta": "c"}, **acc)])
        assert more.events[0].index == 5
        assert more.fresh[0].data == {"delta": "c"} and not more.fresh[0].has_accumulated
        updated = await again.commit_transition(
            current[0].copy(status="running"), current[1], [draft()]
        )
        assert updated.events[0].index == 6
    finally:
        await again.close()


async def test_close_lets_queued_writes_commit(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    task = make_task()
    await store.create_task(task)
    async with writer_held(store):
        pending = [
            asyncio.ensure_future(store.commit_events(task.id, [draft(i)])) for i in range(50)
        ]
        await asyncio.sleep(0.01)  # every commit is queued behind the held writer
        closing = asyncio.ensure_future(store.close())
        await asyncio.sleep(0.01)  # ...and so is the stop marker
    await closing
    results = await asyncio.gather(*pending)
    assert sorted(r.events[0].index for r in results) == list(range(50))
    again = SQLiteStore(db_path)
    await again.open()
    try:
        assert await again.last_index(task.id) == 49
    finally:
        await again.close()


async def test_connect_failure_is_a_storage_error(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    with pytest.raises(StorageUnavailableError, match="unable to open") as info:
        await SQLiteStore(db_path).open()
    assert str(db_path) in str(info.value)


async def test_reopen_same_instance(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    task = make_task()
    await store.create_task(task)
    await store.close()
    assert store.stats.transactions == 0
    await store.open()
    try:
        assert await store.get_task(task.id) == task
    finally:
        await store.close()


async def test_closed_store_refuses_work(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    with pytest.raises(StorageUnavailableError, match="closed"):
        await store.get_task("x")
    with pytest.raises(StorageUnavailableError, match="closed"):
        await store.create_task(make_task())
    with pytest.raises(StorageUnavailableError, match="closed"):
        await store.ping()
    await store.open()
    await store.close()
    with pytest.raises(StorageUnavailableError, match="closed"):
        await store.commit_events("x", [draft()])
    with pytest.raises(StorageUnavailableError, match="closed"):
        await store.list_tasks(TaskQuery())


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        (":memory:", {}),
        ("", {}),
        ("file:x?mode=memory", {}),
        ("x.db", {"synchronous": "OFF"}),
        ("x.db", {"busy_timeout": -1}),
        ("x.db", {"read_threads": 0}),
        ("x.db", {"max_group": 0}),
    ],
)
def test_bad_configuration(path: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SQLiteStore(path, **kwargs)  # type: ignore[arg-type]


async def test_corrupt_file_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not an sqlite database\n" * 200)
    store = SQLiteStore(path)
    with pytest.raises(StorageUnavailableError) as info:
        await store.open()
    assert str(path) in str(info.value) and "not a database" in str(info.value)
    assert info.value.dependency == "sqlite"
    with pytest.raises(StorageUnavailableError, match="closed"):
        await store.ping()


async def test_path_that_is_a_directory(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    with pytest.raises(StorageUnavailableError, match="cannot use"):
        await store.open()


async def test_parent_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = SQLiteStore(blocker / "db.sqlite")
    with pytest.raises(StorageUnavailableError, match="cannot use"):
        await store.open()


async def test_ping_notices_a_removed_file(db_path: Path) -> None:
    store = SQLiteStore(db_path, read_threads=8)
    await store.open()
    try:
        await store.ping()
        await asyncio.to_thread(db_path.unlink)
        with pytest.raises(StorageUnavailableError, match="removed"):
            await store.ping()
        # Readers never re-create the file: each one either still reads the removed
        # file or fails to open it.
        outcomes = await asyncio.gather(
            *(store.get_task("x") for _ in range(16)), return_exceptions=True
        )
        assert all(o is None or isinstance(o, StorageUnavailableError) for o in outcomes)
        assert not await asyncio.to_thread(db_path.exists)
    finally:
        await store.close()


async def test_ping_checks_the_schema(sqlite_store: SQLiteStore, db_path: Path) -> None:
    with raw_connection(db_path) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("DROP TABLE tasks")
    with pytest.raises(StorageUnavailableError, match="no such table"):
        await sqlite_store.ping()


async def test_read_errors_become_storage_errors(sqlite_store: SQLiteStore, db_path: Path) -> None:
    with raw_connection(db_path) as conn:
        conn.execute("DROP TABLE event_ids")
    with pytest.raises(StorageUnavailableError, match="read failed") as info:
        await sqlite_store.resolve_cursor("t", "e")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)


async def test_engine_on_sqlite(db_path: Path) -> None:
    engine = TaskEngine(short_term=SQLiteStore(db_path))
    async with engine:
        task = await engine.create_task(TaskInput(type="job"))
        await engine.transition_task(task.id, "running")
        published = await engine.publish_events(
            task.id, [EventInput(type="log", data={"n": i}) for i in range(3)]
        )
        assert [e.index for e in published] == [1, 2, 3]
        await engine.transition_task(task.id, "completed", result={"ok": True})
        events = await engine.get_events(task.id)
        assert [e.type for e in events] == [
            "taskcast:status",
            "log",
            "log",
            "log",
            "taskcast:status",
        ]
        done = await engine.get_task(task.id)
        assert done is not None and done.status == "completed" and done.result == {"ok": True}


@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("FULL", 2)])
async def test_writer_connection_settings(db_path: Path, synchronous: str, level: int) -> None:
    store = SQLiteStore(db_path, synchronous=synchronous)  # type: ignore[arg-type]
    await store.open()
    try:

        def settings(conn: sqlite3.Connection) -> tuple[int, int, str]:
            return (
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA foreign_keys").fetchone()[0],
                conn.execute("PRAGMA journal_mode").fetchone()[0],
            )

        assert await store._write(settings) == (level, 1, "wal")
    finally:
        await store.close()


async def test_readme_example(tmp_path: Path) -> None:
    engine = TaskEngine(short_term=SQLiteStore(tmp_path / "data" / "taskcast.db"))
    async with engine:
        task = await engine.create_task(TaskInput(type="llm.chat"))
        await engine.transition_task(task.id, "running")
        event = await engine.publish_event(
            task.id, EventInput(type="llm.delta", data={"delta": "Hi"})
        )
        assert event.index == 1


async def test_too_old_sqlite_library_is_refused(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 22, 0))
    with pytest.raises(ConfigError, match="needs SQLite"):
        await SQLiteStore(db_path).open()


async def test_relative_path_with_uri_characters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore(Path("dir with space") / "a%b?#.db")
    monkeypatch.chdir(tmp_path.parent)  # later cwd changes do not move the file
    await store.open()
    try:
        task = make_task()
        await store.create_task(task)
        assert await store.get_task(task.id) == task
    finally:
        await store.close()
    assert (tmp_path / "dir with space" / "a%b?#.db").exists()
