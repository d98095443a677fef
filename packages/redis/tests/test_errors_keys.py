"""Error classification and key naming (no server needed)."""

from __future__ import annotations

import socket

import pytest
from redis import exceptions as rx

from taskcast.core import StorageUnavailableError
from taskcast.redis import KeySpace
from taskcast.redis._errors import error_kind, guard


def chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 - implicit chaining is what redis-py does
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (rx.AuthenticationError("invalid password"), "authentication"),
        (rx.TimeoutError("Timeout reading"), "timeout"),
        (TimeoutError("timed out"), "timeout"),
        (
            chained(rx.ConnectionError("x"), ConnectionRefusedError(111, "refused")),
            "connection_refused",
        ),
        (rx.ConnectionError("Error 111 connecting. Connection refused."), "connection_refused"),
        (chained(rx.ConnectionError("x"), ConnectionResetError()), "connection_reset"),
        (rx.ConnectionError("Connection reset by peer"), "connection_reset"),
        (chained(rx.ConnectionError("x"), BrokenPipeError()), "connection_reset"),
        (chained(rx.ConnectionError("x"), socket.gaierror(-2, "Name unknown")), "dns"),
        (rx.ConnectionError("Connection closed by server."), "connection_closed"),
        (rx.BusyLoadingError("Redis is loading"), "unavailable"),
    ],
)
def test_error_kinds(exc: BaseException, kind: str) -> None:
    assert error_kind(exc) == kind


@pytest.mark.parametrize(
    "exc",
    [
        rx.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
        rx.ResponseError("OOM command not allowed when used memory > 'maxmemory'"),
        rx.ReadOnlyError("You can't write against a read only replica."),
        rx.ConnectionError("gone"),
        OSError("network down"),
    ],
)
def test_guard_maps_outages(exc: BaseException) -> None:
    with pytest.raises(StorageUnavailableError) as info, guard():
        raise exc
    assert info.value.dependency == "redis"
    assert info.value.__cause__ is exc


def test_guard_names_the_reason_redis_refused_a_write() -> None:
    # redis-py strips the OOM code; a Lua script's refusal also names the script's line.
    oom = rx.OutOfMemoryError(
        "command not allowed when used memory > 'maxmemory'. script: 1a2b, on @user_script:4."
    )
    with pytest.raises(StorageUnavailableError) as info, guard():
        raise oom
    assert info.value.kind == "out_of_memory"
    assert info.value.message == (
        "redis is out of memory (OOM command not allowed when used memory > 'maxmemory')"
    )
    with pytest.raises(StorageUnavailableError) as info, guard():
        raise rx.ResponseError("MISCONF Errors writing to the AOF file")
    assert info.value.kind == "refused"
    assert info.value.message == "redis refuses writes (MISCONF Errors writing to the AOF file)"


def test_guard_lets_bugs_through() -> None:
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"), guard():
        raise rx.ResponseError("WRONGTYPE Operation against a key")
    with pytest.raises(KeyError), guard():
        raise KeyError("x")


def test_key_space() -> None:
    keys = KeySpace("p")
    k = keys.for_task("t:1")
    assert k.all() == [
        "p:task:t:1",
        "p:taskStatus:t:1",
        "p:taskRevision:t:1",
        "p:idx:t:1",
        "p:events:t:1",
        "p:seriesState:t:1",
        "p:seriesMeta:t:1",
        "p:idem:t:1",
        "p:eventIdx:t:1",
    ]
    assert keys.task("t:1") == k.task
    assert keys.tasks == "p:tasks" and keys.task_order == "p:tasksByCreated"
    assert keys.channel("t:1") == "p:task:t:1"
    assert keys.task_id_of_channel(b"p:task:t:1") == "t:1"
    assert keys.task_id_of_channel(b"q:task:t:1") is None
    assert KeySpace("a*b?[c]\\").channel_pattern == "a\\*b\\?\\[c\\]\\\\:task:*"
