"""TaskcastServerClient against an in-memory fake server (httpx.MockTransport)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskcast.server_sdk import (
    BadRequestError,
    BlockedRequest,
    ConflictError,
    EventInput,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RetryConfig,
    ServerError,
    ServiceUnavailableError,
    TaskcastHTTPError,
    TaskcastServerClient,
    TaskcastTransportError,
    TaskError,
    UnauthorizedError,
)

FAST = RetryConfig(attempts=3, backoff=0.001, max_backoff=0.002)


@pytest.fixture
def client(fake: Any) -> Iterator[TaskcastServerClient]:
    with TaskcastServerClient(
        "http://tc.test/", token="tok", retry=FAST, transport=httpx.MockTransport(fake.handler)
    ) as c:
        yield c


def test_create_get_and_headers(client: TaskcastServerClient, fake: Any) -> None:
    task = client.create_task(
        id="a1",
        type="llm.chat",
        params={"p": 1},
        metadata={"m": 2},
        ttl=60,
        tags=["x"],
        result={"r": 0},
        extra={"cost": 3},
    )
    assert fake.body() == {
        "id": "a1",
        "type": "llm.chat",
        "params": {"p": 1},
        "metadata": {"m": 2},
        "ttl": 60,
        "tags": ["x"],
        "result": {"r": 0},
        "cost": 3,
    }
    request = fake.requests[-1]
    assert str(request.url) == "http://tc.test/tasks"
    assert request.headers["authorization"] == "Bearer tok"
    assert request.headers["accept"] == "application/json"
    assert (task.id, task.status, task.type, task.params, task.cost) == (
        "a1",
        "pending",
        "llm.chat",
        {"p": 1},
        3,
    )
    got = client.get_task("a1")
    assert got.hot is True and got.subscriber_count == 2 and not got.is_terminal


def test_create_minimal_body_and_no_token(fake: Any) -> None:
    with TaskcastServerClient(transport=httpx.MockTransport(fake.handler)) as c:
        c.create_task()
    assert fake.body() == {}
    assert "authorization" not in fake.requests[-1].headers
    assert str(fake.requests[-1].url) == "http://127.0.0.1:3721/tasks"


def test_task_ids_are_quoted(client: TaskcastServerClient, fake: Any) -> None:
    with pytest.raises(NotFoundError):
        client.get_task("a/b c")
    assert fake.requests[-1].url.raw_path == b"/tasks/a%2Fb%20c"


def test_list_tasks_pages(client: TaskcastServerClient, fake: Any) -> None:
    for i in range(5):
        client.create_task(id=f"L{i}")
    page = client.list_tasks(status=["pending", "running"], type="t", limit=2, cursor="0")
    params = fake.requests[-1].url.params
    assert (params["status"], params["type"], params["limit"], params["cursor"]) == (
        "pending,running",
        "t",
        "2",
        "0",
    )
    assert [t.id for t in page.tasks] == ["L0", "L1"] and page.next_cursor == "2"
    assert [t.id for t in client.iter_tasks(status="pending", page_size=2)] == [
        f"L{i}" for i in range(5)
    ]
    assert [t.id for t in client.iter_tasks(status=("pending",), page_size=10)] == [
        f"L{i}" for i in range(5)
    ]
    assert client.list_tasks().next_cursor is None


def test_delete_task(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="d")
    client.delete_task("d")
    assert fake.requests[-1].method == "DELETE"
    with pytest.raises(NotFoundError):
        client.delete_task("d")


def test_transition_bodies(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="t")
    task = client.transition_task("t", "running", ttl=30)
    assert fake.body() == {"status": "running", "ttl": 30} and task.status == "running"
    client.transition_task(
        "t",
        "blocked",
        reason="needs input",
        resume_after_ms=500,
        blocked_request=BlockedRequest(type="confirm", data={"q": 1}),
    )
    assert fake.body() == {
        "status": "blocked",
        "reason": "needs input",
        "resumeAfterMs": 500,
        "blockedRequest": {"type": "confirm", "data": {"q": 1}},
    }
    assert client.get_request("t") == BlockedRequest(type="confirm", data={"q": 1})
    task = client.resolve("t", {"ok": True})
    assert fake.body() == {"data": {"ok": True}} and task.status == "running"
    client.transition_task("t", "paused", blocked_request={"type": "x", "data": None})
    assert fake.body()["blockedRequest"] == {"type": "x", "data": None}
    client.transition_task("t", "running")
    task = client.transition_task(
        "t", "failed", error=TaskError(message="boom", code="E1", details={"d": 1})
    )
    assert fake.body()["error"] == {"message": "boom", "code": "E1", "details": {"d": 1}}
    assert task.error == TaskError(message="boom", code="E1", details={"d": 1})
    assert task.is_terminal
    with pytest.raises(ConflictError) as info:
        client.transition_task("t", "running")
    assert info.value.status_code == 409
    assert info.value.message == "Invalid transition: failed \u2192 running"
    assert str(info.value) == "HTTP 409: Invalid transition: failed \u2192 running"


def test_transition_error_forms(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="e1")
    client.create_task(id="e2")
    client.transition_task("e1", "running")
    client.transition_task("e1", "failed", error="plain", result={"partial": 1})
    assert fake.body() == {
        "status": "failed",
        "error": {"message": "plain"},
        "result": {"partial": 1},
    }
    client.transition_task("e2", "running")
    client.transition_task("e2", "failed", error={"message": "m", "code": "c"})
    assert fake.body()["error"] == {"message": "m", "code": "c"}


def test_resolve_and_request_errors(client: TaskcastServerClient) -> None:
    client.create_task(id="r")
    with pytest.raises(BadRequestError, match="Task is not blocked"):
        client.resolve("r")
    with pytest.raises(NotFoundError, match="No blocked request"):
        client.get_request("r")


def test_publish_event_adds_idempotency_key(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="p")
    event = client.publish_event(
        "p",
        "llm.delta",
        {"delta": "hi"},
        level="debug",
        series_id="s",
        series_mode="accumulate",
        series_acc_field="delta",
    )
    body = fake.body()
    assert len(body.pop("idempotencyKey")) == 32
    assert body == {
        "type": "llm.delta",
        "level": "debug",
        "data": {"delta": "hi"},
        "seriesId": "s",
        "seriesMode": "accumulate",
        "seriesAccField": "delta",
    }
    assert (event.index, event.series_id, event.series_mode, event.data) == (
        0,
        "s",
        "accumulate",
        {"delta": "hi"},
    )
    again = client.publish_event("p", "x", idempotency_key="k1")
    assert fake.body()["idempotencyKey"] == "k1" and again.idempotency_key == "k1"
    assert client.publish_event("p", "x", idempotency_key="k1") == again


def test_publish_events_batches(fake: Any) -> None:
    with TaskcastServerClient(
        "http://tc.test", max_batch=2, transport=httpx.MockTransport(fake.handler)
    ) as c:
        c.create_task(id="b")
        events = c.publish_events(
            "b",
            [
                EventInput(type="a", data=1),
                {"type": "b", "data": 2},
                EventInput(type="c", level="warn", idempotency_key="mine"),
            ],
        )
    assert [e.type for e in events] == ["a", "b", "c"]
    assert [e.index for e in events] == [0, 1, 2]
    first, second = fake.body(-2), fake.body(-1)
    assert [b["type"] for b in first] == ["a", "b"] and first[1]["level"] == "info"
    assert all(b["idempotencyKey"] for b in first)
    assert second == [{"type": "c", "level": "warn", "data": None, "idempotencyKey": "mine"}]
    assert c.publish_events("b", []) == []


def test_publish_to_terminal_task(client: TaskcastServerClient) -> None:
    client.create_task(id="z")
    client.transition_task("z", "cancelled")
    with pytest.raises(BadRequestError, match="terminal status: cancelled") as info:
        client.publish_event("z", "x")
    assert info.value.body == {"error": "Cannot publish to task in terminal status: cancelled"}


def test_get_history_params(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="h")
    client.publish_event("h", "a", 1)
    events = client.get_history(
        "h",
        since_id="E1",
        since_index=3,
        since_timestamp=99,
        limit=10,
        series_format="accumulated",
        types=["llm.*", "x"],
        levels="info",
    )
    params = dict(fake.requests[-1].url.params)
    assert params == {
        "since.id": "E1",
        "since.index": "3",
        "since.timestamp": "99",
        "limit": "10",
        "seriesFormat": "accumulated",
        "types": "llm.*,x",
        "levels": "info",
    }
    assert [e.type for e in events] == ["a"] and events[0].series_snapshot is False
    client.get_history("h")
    assert not fake.requests[-1].url.params


def test_health_and_server_info(client: TaskcastServerClient) -> None:
    health = client.health()
    assert health.ok and health.name == "taskcast" and health.api_version == "v1"
    info = client.server_info()
    assert (info.name, info.version, info.api_version, info.links) == (
        "taskcast",
        "9.9",
        "v1",
        {"health": "/health"},
    )


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, UnauthorizedError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, PayloadTooLargeError),
        (503, ServiceUnavailableError),
        (500, ServerError),
        (418, TaskcastHTTPError),
    ],
)
def test_error_classes(
    client: TaskcastServerClient, fake: Any, status: int, cls: type[TaskcastHTTPError]
) -> None:
    fake.fail_next(*[httpx.Response(status, json={"error": "nope"})] * 3)
    with pytest.raises(cls) as info:
        client.create_task()
    assert type(info.value) is cls
    assert (info.value.status_code, info.value.message) == (status, "nope")


def test_error_bodies(client: TaskcastServerClient, fake: Any) -> None:
    fake.fail_next(httpx.Response(400, json={"error": {"fieldErrors": {"ttl": ["bad"]}}}))
    with pytest.raises(BadRequestError, match="fieldErrors") as info:
        client.create_task()
    assert info.value.body == {"error": {"fieldErrors": {"ttl": ["bad"]}}}
    fake.fail_next(httpx.Response(400, text="Malformed JSON in request body"))
    with pytest.raises(BadRequestError, match="Malformed JSON") as info:
        client.create_task()
    fake.fail_next(httpx.Response(404))
    with pytest.raises(NotFoundError) as missing:
        client.create_task()
    assert missing.value.message == "HTTP 404" and missing.value.body is None
    fake.fail_next(httpx.Response(400, json=["odd"]))
    with pytest.raises(BadRequestError, match="HTTP 400"):
        client.create_task()


def test_unexpected_success_body(client: TaskcastServerClient, fake: Any) -> None:
    fake.fail_next(httpx.Response(200, text="<html>"))
    with pytest.raises(TaskcastHTTPError, match="Unexpected response body") as info:
        client.health()
    assert info.value.status_code == 200
    fake.fail_next(httpx.Response(200, json={"no": "id"}))
    with pytest.raises(TaskcastHTTPError, match="Unexpected response body"):
        client.get_task("x")


def test_safe_get_retries_status(client: TaskcastServerClient, fake: Any) -> None:
    fake.fail_next(httpx.Response(503, json={"error": "down"}), httpx.Response(502))
    assert client.health().ok
    assert len(fake.requests) == 3


def test_retry_after_header_is_honoured(fake: Any) -> None:
    retry = RetryConfig(attempts=2, backoff=10, max_backoff=0.01)
    with TaskcastServerClient(retry=retry, transport=httpx.MockTransport(fake.handler)) as c:
        fake.fail_next(httpx.Response(429, headers={"Retry-After": "0"}))
        assert c.health().ok
        fake.fail_next(httpx.Response(429, headers={"Retry-After": "soon"}))
        assert c.health().ok
    assert len(fake.requests) == 4


def test_retries_exhausted(client: TaskcastServerClient, fake: Any) -> None:
    fake.fail_next(*[httpx.Response(503, json={"error": "down"})] * 3)
    with pytest.raises(ServiceUnavailableError):
        client.health()
    assert len(fake.requests) == 3
    fake.fail_next(*[httpx.ReadTimeout("slow")] * 3)
    with pytest.raises(TaskcastTransportError, match="GET /health failed") as info:
        client.health()
    assert info.value.status_code is None
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert str(info.value).startswith("GET /health failed")


def test_publish_retry_reuses_idempotency_key(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="k")
    fake.fail_next(httpx.ReadError("cut"), httpx.Response(504))
    event = client.publish_event("k", "x", 1)
    bodies = [json.loads(r.content) for r in fake.requests[-3:]]
    assert len({b["idempotencyKey"] for b in bodies}) == 1
    assert [e["type"] for e in fake.events["k"]] == ["x"] and event.index == 0


def test_unsafe_calls_not_retried_after_sending(client: TaskcastServerClient, fake: Any) -> None:
    fake.fail_next(httpx.Response(503, json={"error": "down"}))
    with pytest.raises(ServiceUnavailableError):
        client.create_task(id="u")
    fake.fail_next(httpx.ReadError("cut"))
    with pytest.raises(TaskcastTransportError):
        client.create_task(id="u")
    assert len(fake.requests) == 2


def test_connect_errors_retried_for_any_call(client: TaskcastServerClient, fake: Any) -> None:
    fake.fail_next(httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"))
    task = client.create_task(id="c")
    assert task.id == "c" and len(fake.requests) == 3


def test_retry_config_validation() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryConfig(attempts=0)
    delay = RetryConfig(backoff=1, max_backoff=1.5).delay(5)
    assert 0.75 <= delay <= 1.5


def test_http_client_is_not_closed(fake: Any) -> None:
    http = httpx.Client(transport=httpx.MockTransport(fake.handler))
    with TaskcastServerClient("http://x", http_client=http) as c:
        assert c.health().ok
    assert not http.is_closed
    http.close()


# -- run() -------------------------------------------------------------------------------


def statuses(fake: Any, tid: str) -> list[str]:
    return [e["data"]["status"] for e in fake.events[tid] if e["type"] == "taskcast:status"]


def test_run_completes(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="w")
    with client.run("w", result={"n": 0}) as run:
        assert run.task.status == "running" and run.task_id == "w"
        run.publish("log", {"line": 1}, level="debug")
        run.result = {"n": 1}
    assert statuses(fake, "w") == ["running", "completed"]
    assert fake.tasks["w"]["result"] == {"n": 1}
    assert [e["type"] for e in fake.events["w"]][1] == "log"


def test_run_fails_and_reraises(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="f")
    with pytest.raises(KeyError), client.run("f"):
        raise KeyError("missing")
    assert statuses(fake, "f") == ["running", "failed"]
    assert fake.tasks["f"]["error"] == {"code": "KeyError", "message": "'missing'"}


def test_run_without_message_uses_type_name(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="f2")
    with pytest.raises(RuntimeError), client.run("f2"):
        raise RuntimeError
    assert fake.tasks["f2"]["error"] == {"code": "RuntimeError", "message": "RuntimeError"}


def test_run_keyboard_interrupt_cancels(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="ki")
    with pytest.raises(KeyboardInterrupt), client.run("ki"):
        raise KeyboardInterrupt
    assert statuses(fake, "ki") == ["running", "cancelled"]


def test_run_manual_finish(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="m1")
    with client.run("m1") as run:
        assert run.complete({"done": True}).status == "completed"
    client.create_task(id="m2")
    with pytest.raises(ValueError), client.run("m2") as run:
        run.fail(TaskError(message="bad input", code="E"))
        raise ValueError("after fail")
    assert statuses(fake, "m1") == ["running", "completed"]
    assert statuses(fake, "m2") == ["running", "failed"]
    assert fake.tasks["m2"]["error"] == {"message": "bad input", "code": "E"}


def test_run_failure_transition_error_is_logged(
    client: TaskcastServerClient, fake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client.create_task(id="x")
    with pytest.raises(ZeroDivisionError), client.run("x"):
        fake.tasks["x"]["status"] = "cancelled"  # cancelled elsewhere meanwhile
        _ = 1 / 0
    assert "Could not mark task x failed" in caplog.text


def test_run_completion_conflict_raises(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="y")
    with pytest.raises(ConflictError), client.run("y"):
        fake.tasks["y"]["status"] = "cancelled"


def test_run_start_conflict(client: TaskcastServerClient) -> None:
    with pytest.raises(NotFoundError), client.run("nope"):
        pytest.fail("the block must not run")


# -- publish_stream ------------------------------------------------------------------------


def is_publish(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith("/events")


def test_publish_stream_coalesces(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="s")
    chunks = [f"tok{i} " for i in range(1000)]
    result = client.publish_stream("s", chunks, max_batch_chars=1000, max_interval=10)
    expected = "".join(chunks)
    assert result.text == expected and fake.text("s") == expected
    assert result.chunks == 1000
    assert result.requests == fake.count(is_publish) < 20
    assert result.events == len(fake.events["s"])
    assert result.last_event is not None and result.last_event.index == result.events - 1
    first = fake.events["s"][0]
    assert (first["type"], first["seriesMode"], first["seriesAccField"], first["level"]) == (
        "llm.delta",
        "accumulate",
        "delta",
        "info",
    )
    assert all(len(e["data"]["delta"]) <= 1000 for e in fake.events["s"])


def test_publish_stream_options_and_big_chunk(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="o")
    big = "x" * 25
    result = client.publish_stream(
        "o", ["", big], series_id="answer", field="text", type="chat.text", max_batch_chars=10
    )
    assert result.events == 3 and result.requests == 1 and result.chunks == 1
    assert fake.text("o", field="text", series="answer") == big
    assert isinstance(fake.body(), list) and fake.body()[0]["seriesId"] == "answer"


def test_publish_stream_batch_split_by_max_batch(fake: Any) -> None:
    with TaskcastServerClient(max_batch=2, transport=httpx.MockTransport(fake.handler)) as c:
        c.create_task(id="mb")
        result = c.publish_stream("mb", ["abcdefghij"], max_batch_chars=2)
    assert (result.events, result.requests) == (5, 3)
    assert fake.text("mb") == "abcdefghij"


def test_publish_stream_empty(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="e")
    result = client.publish_stream("e", iter(()))
    assert (result.text, result.events, result.requests, result.last_event) == ("", 0, 0, None)


def test_publish_stream_flushes_on_interval(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="i")
    seen_before_second: list[str] = []
    release = threading.Event()

    def slow() -> Iterator[str]:
        yield "first "
        # The buffered chunk must go out on its own while the producer is stalled.
        deadline = time.monotonic() + 5
        while not fake.events["i"] and time.monotonic() < deadline:
            time.sleep(0.005)
        seen_before_second.append(fake.text("i"))
        release.set()
        yield "second"

    result = client.publish_stream("i", slow(), max_interval=0.01)
    assert seen_before_second == ["first "]
    assert fake.text("i") == "first second" and result.events == 2


def test_publish_stream_iterator_error(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="ie")

    def broken() -> Iterator[str]:
        yield "partial"
        raise OSError("model went away")

    with pytest.raises(OSError, match="model went away"):
        client.publish_stream("ie", broken(), max_interval=10)
    assert fake.text("ie") == "partial"


def test_publish_stream_rejects_non_str(client: TaskcastServerClient) -> None:
    client.create_task(id="ns")
    with pytest.raises(TypeError, match="must be str"):
        client.publish_stream("ns", ["ok", 3])  # type: ignore[list-item]


def test_publish_stream_publish_error_stops_reader(client: TaskcastServerClient, fake: Any) -> None:
    consumed: list[int] = []

    def endless() -> Iterator[str]:
        i = 0
        while True:
            consumed.append(i)
            i += 1
            yield "x"

    with pytest.raises(NotFoundError):
        client.publish_stream("missing", endless(), max_batch_chars=5)
    # The reader may still fill its bounded queue, but then it stops: the endless producer
    # is never drained. (5 buffered + 1,024 queued + 1 waiting, at most.)
    time.sleep(0.5)
    assert len(consumed) <= 1030


def test_publish_stream_validates_settings(client: TaskcastServerClient) -> None:
    with pytest.raises(ValueError, match="max_batch_chars"):
        client.publish_stream("t", [], max_batch_chars=0)
    with pytest.raises(ValueError, match="max_interval"):
        client.publish_stream("t", [], max_interval=-1)


def test_run_publish_stream(client: TaskcastServerClient, fake: Any) -> None:
    client.create_task(id="rs")
    with client.run("rs") as run:
        run.publish_stream(["a", "b"])
    assert fake.text("rs") == "ab" and fake.tasks["rs"]["status"] == "completed"


def test_logging_of_retries(
    client: TaskcastServerClient, fake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskcast.server_sdk")
    fake.fail_next(httpx.Response(503), httpx.ConnectError("refused"))
    client.health()
    assert "answered 503, retrying" in caplog.text and "failed (ConnectError" in caplog.text


def test_publish_stream_reader_waits_for_a_slow_publisher() -> None:
    # The reader fills its bounded queue while the first publish hangs, then waits; when
    # the publish fails it stops instead of draining the producer.
    produced: list[int] = []

    def endless() -> Iterator[str]:
        while True:
            produced.append(1)
            yield "x"

    def slow_404(request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + 5
        while len(produced) < 1026 and time.monotonic() < deadline:  # 1 sent + 1024 queued + 1
            time.sleep(0.01)
        time.sleep(0.15)  # the reader's put() times out at least once on the full queue
        return httpx.Response(404, json={"error": "Task not found: t"})

    with (
        TaskcastServerClient(transport=httpx.MockTransport(slow_404)) as c,
        pytest.raises(NotFoundError),
    ):
        c.publish_stream("t", endless(), max_batch_chars=1)
    time.sleep(0.3)
    assert len(produced) == 1026  # 1 published + 1,024 queued + 1 refused: never more
