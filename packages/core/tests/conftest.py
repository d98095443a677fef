from collections.abc import AsyncIterator

import pytest

from taskcast.core import MemoryShortTermStore, TaskEngine


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def engine() -> AsyncIterator[TaskEngine]:
    """An engine on the memory store with a small per-subscriber queue (slow consumers)."""
    async with TaskEngine(short_term=MemoryShortTermStore(), queue_limit=50) as e:
        yield e
