"""Connection-level limits of ``taskcast start``: request heads, slowloris, the connection cap.

Every test runs the real command in a subprocess and talks to it over raw sockets, as an
attacker would: a header flood is answered 431 without the server's memory growing, a head
that never ends is answered 408, connections beyond the cap (open SSE streams included) are
answered 503 with one throttled WARNING, and the cap derived from the open files limit keeps
the server reachable where it used to run out of descriptors.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from ._server import Running, env_for, start
from ._services import REDIS_URL, redis_prefix

__all__ = ["redis_prefix"]  # a fixture, imported for pytest

Address = tuple[str, int]


def _address(server: Running) -> Address:
    url = httpx.URL(server.url)
    assert url.host and url.port
    return url.host, url.port


def _read_all(sock: socket.socket, timeout: float = 15) -> bytes:
    """What the server sends until it closes (or the deadline passes)."""
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body, leaving the connection open."""
    sock.settimeout(15)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _exchange(address: Address, data: bytes) -> bytes:
    with socket.create_connection(address, timeout=15) as sock:
        sock.sendall(data)
        return _read_all(sock)


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def _error(answer: bytes) -> str:
    assert b"content-type: application/json" in answer.lower()
    return str(json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"])


def _get(path: str = "/health", *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: t", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


_HALF_SENT = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: "


def _half_sent(address: Address) -> socket.socket:
    sock = socket.create_connection(address, timeout=15)
    sock.sendall(_HALF_SENT)
    return sock


def _flood(address: Address, total: int) -> bytes:
    """Send a request head of ``total`` bytes that never ends, until the server answers."""
    with socket.create_connection(address, timeout=15) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Flood: ")
        chunk = b"a" * 65536
        sent = 0
        deadline = time.monotonic() + 60
        while sent < total and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                break  # answered
            if writable:
                try:
                    sent += sock.send(chunk)
                except OSError:
                    break
        return _read_all(sock)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _served_eventually(address: Address, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        answer = _exchange(address, _get())
        if _status(answer) == 200:
            return
        assert time.monotonic() < deadline, answer


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[Path, list[Running]]]:
    started: list[Running] = []
    yield tmp_path, started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.communicate()


def _start(
    serve: tuple[Path, list[Running]],
    env: dict[str, str],
    preexec_fn: Callable[[], object] | None = None,
) -> Running:
    tmp_path, started = serve
    server = start(
        ["start", "--storage", "memory", "--port", "0"],
        cwd=tmp_path,
        env=env_for(tmp_path, env),
        preexec_fn=preexec_fn,
    )
    started.append(server)
    return server


def test_a_header_flood_is_answered_431_and_does_not_grow_the_server(
    serve: tuple[Path, list[Running]],
) -> None:
    """Eight clients each sending an 8 MB head: each is cut off at the 64 KiB default with a
    431, the server goes on serving meanwhile, and its memory does not follow the flood
    (unbounded, the heads alone were 64 MB)."""
    server = _start(serve, {})
    address = _address(server)
    assert _status(_exchange(address, _get())) == 200
    before = _rss(server.proc.pid)
    with ThreadPoolExecutor(8) as pool:
        floods = [pool.submit(_flood, address, 8 * 1024 * 1024) for _ in range(8)]
        assert _status(_exchange(address, _get())) == 200  # served during the flood
        answers = [flood.result() for flood in floods]
    grown = _rss(server.proc.pid) - before
    for answer in answers:
        assert _status(answer) == 431, answer[:200]
        assert _error(answer) == "Request header fields too large (max 65536 bytes)"
    assert grown < 24 * 1024 * 1024, f"the server grew by {grown / 2**20:.0f} MiB"
    assert _status(_exchange(address, _get())) == 200
    code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err
    assert "WARNING" not in err  # a refused head is the client's fault, not news


def test_head_size_header_count_and_url_length_are_bounded(
    serve: tuple[Path, list[Running]],
) -> None:
    server = _start(
        serve,
        {
            "TASKCAST_MAX_HEADER_BYTES": "4096",
            "TASKCAST_MAX_HEADERS": "20",
            "TASKCAST_MAX_URL_BYTES": "512",
        },
    )
    address = _address(server)
    # Host and Connection count: 20 headers in all are served, 21 are not.
    nineteen = [f"X-N{i}: v" for i in range(18)]
    assert _status(_exchange(address, _get("/health", *nineteen))) == 200
    answer = _exchange(address, _get("/health", *nineteen, "X-Last: v"))
    assert (_status(answer), _error(answer)) == (431, "Too many request headers (max 20)")
    # The request target: 512 bytes served, 513 not.
    path = "/health?q=" + "a" * (512 - len("/health?q="))
    assert _status(_exchange(address, _get(path))) == 200
    answer = _exchange(address, _get(path + "a"))
    assert (_status(answer), _error(answer)) == (414, "Request URL too long (max 512 bytes)")
    # The head as a whole, complete in one read or not.
    assert _status(_exchange(address, _get("/health", "X-Big: " + "b" * 3500))) == 200
    answer = _exchange(address, _get("/health", "X-Big: " + "b" * 4200))
    assert (_status(answer), _error(answer)) == (
        431,
        "Request header fields too large (max 4096 bytes)",
    )
    answer = _exchange(address, b"GET /health HTTP/1.1\r\nX-Big: " + b"b" * 5000)
    assert _status(answer) == 431
    # The same on a kept-alive connection's later requests.
    with socket.create_connection(address, timeout=15) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _status(_read_response(sock)) == 200
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 5000)
        assert _status(_read_all(sock)) == 431
    with socket.create_connection(address, timeout=15) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _status(_read_response(sock)) == 200
        sock.sendall(_get("/health", *nineteen, "X-Last: v"))
        assert _status(_read_all(sock)) == 431
    code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err


def test_heads_that_never_end_are_answered_408_and_closed(
    serve: tuple[Path, list[Running]],
) -> None:
    """Slowloris: half-sent heads hold no descriptor past the header timeout."""
    server = _start(serve, {"TASKCAST_HEADER_TIMEOUT_SECONDS": "1"})
    address = _address(server)
    with ExitStack() as stack:
        slow = [stack.enter_context(_half_sent(address)) for _ in range(30)]
        silent = stack.enter_context(socket.create_connection(address, timeout=15))
        kept = stack.enter_context(socket.create_connection(address, timeout=15))
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _status(_read_response(kept)) == 200
        kept.sendall(_HALF_SENT)  # a later request on a kept-alive connection
        for sock in [*slow, kept]:
            answer = _read_all(sock)
            assert _status(answer) == 408, answer
            assert _error(answer) == "Request head not received within 1 s"
        assert _read_all(silent) == b""  # closed: nothing to answer
    assert _status(_exchange(address, _get())) == 200
    code, err = server.stop()
    assert code == 0, err
    assert "Traceback" not in err


def _open_stream(address: Address, task_id: str) -> socket.socket:
    sock = socket.create_connection(address, timeout=15)
    sock.sendall(f"GET /tasks/{task_id}/events HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_connections_beyond_the_cap_are_answered_503_counting_open_streams(
    serve: tuple[Path, list[Running]],
) -> None:
    """Open SSE streams count (they are taken over from uvicorn once their headers are out);
    each connection beyond the cap gets a 503 at once, and the log says so once, not once
    per connection."""
    server = _start(serve, {"TASKCAST_MAX_CONNECTIONS": "5"})
    address = _address(server)
    created = _exchange(
        address,
        b"POST /tasks HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\nConnection: close\r\n\r\n"
        b'{"type": "demo"}',
    )
    assert _status(created) == 201, created
    task_id = json.loads(created.split(b"\r\n\r\n", 1)[1])["id"]
    first_refusal = time.monotonic()
    with ExitStack() as stack:
        streams = [stack.enter_context(_open_stream(address, task_id)) for _ in range(5)]
        first_refusal = time.monotonic()
        refused = [_exchange(address, _get()) for _ in range(5)]
        for answer in refused:
            assert _status(answer) == 503, answer
            assert _error(answer) == "Too many open connections; retry later"
        streams.pop().close()
        _served_eventually(address)
    code, err = server.stop()
    elapsed = time.monotonic() - first_refusal
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "connection cap reached" in line]
    assert warnings, err
    assert "WARNING" in warnings[0] and "(limits.maxConnections 5)" in warnings[0]
    assert len(warnings) <= 1 + elapsed // 10  # at most one every ten seconds


def _low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 256))


def _soft_open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files limit")


def test_the_default_cap_keeps_the_server_reachable_within_the_descriptor_limit(
    serve: tuple[Path, list[Running]],
) -> None:
    """Started with a soft limit of 64 open files (hard 256), the server raises it to 256
    and caps connections below it (256 - 64 = 192): 200 half-sent requests no longer make it
    drop every new connection; those beyond the cap, and a normal client, get a 503, and
    once the attackers leave it serves again."""
    server = _start(serve, {}, preexec_fn=_low_descriptor_limit)
    address = _address(server)
    assert _soft_open_files_limit(server.proc.pid) == 256
    with ExitStack() as stack:
        slow = [stack.enter_context(_half_sent(address)) for _ in range(200)]
        answered: dict[socket.socket, bytes] = {}
        deadline = time.monotonic() + 30
        while len(answered) < 8 and time.monotonic() < deadline:
            readable, _, _ = select.select([s for s in slow if s not in answered], [], [], 1)
            for sock in readable:
                answered[sock] = _read_all(sock)
        assert len(answered) >= 8
        assert all(_status(answer) == 503 for answer in answered.values()), answered
        answer = _exchange(address, _get())
        assert _status(answer) == 503, answer  # an answer, not a reset
    _served_eventually(address)
    code, err = server.stop()
    assert code == 0, err
    assert "connection cap reached" in err


@pytest.mark.redis
def test_workers_apply_the_limits_too(serve: tuple[Path, list[Running]], redis_prefix: str) -> None:
    tmp_path, started = serve
    server = start(
        ["start", "--storage", "redis", "--redis-url", REDIS_URL, "--workers", "2", "--port", "0"],
        cwd=tmp_path,
        env=env_for(tmp_path, {"TASKCAST_REDIS_PREFIX": redis_prefix, "TASKCAST_MAX_HEADERS": "5"}),
        timeout=60,
    )
    started.append(server)
    address = _address(server)
    deadline = time.monotonic() + 60
    while True:  # the workers may still be loading
        try:
            if _status(_exchange(address, _get())) == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "no worker answered"
    # New connections are spread over both processes: each refuses the same.
    for _ in range(6):
        answer = _exchange(address, _get("/health", *[f"X-N{i}: v" for i in range(4)]))
        assert (_status(answer), _error(answer)) == (431, "Too many request headers (max 5)")
    code, err = server.stop()
    assert code == 0, err
