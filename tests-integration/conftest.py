"""Cross-package tests: real `taskcast start` processes driven over HTTP and SSE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from itsupport import Server


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "taskcast.db"
