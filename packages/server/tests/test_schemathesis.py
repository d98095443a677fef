"""Property-based requests generated from /openapi.json: no input may produce a 5xx."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from taskcast.core import MemoryShortTermStore, TaskEngine, TaskInput
from taskcast.server import create_app

engine = TaskEngine(short_term=MemoryShortTermStore())
app = create_app(engine)

schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(
    # Streams never end on their own; they have their own tests.
    path_regex=r"^/(tasks/\{id\}/)?events$",
    method="GET",
)


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.text)
    if response.status_code >= 400:
        body = response.json()
        # The storage release route adds a machine-readable "code" (as the original does).
        assert set(body) - {"code"} == {"error"} and isinstance(body["error"], str)


KNOWN_TASK_OPERATIONS = [
    ("POST", "/tasks/{id}/events"),
    ("PATCH", "/tasks/{id}/status"),
    ("POST", "/tasks/{id}/resolve"),
    ("GET", "/tasks/{id}/events/history"),
    ("GET", "/tasks/{id}"),
]


@pytest.mark.parametrize(("method", "path"), KNOWN_TASK_OPERATIONS)
def test_no_server_errors_on_a_running_task(method: str, path: str) -> None:
    """Generated ids rarely exist, so also aim every task route at a real running task."""
    task_id = f"known-{method}-{path.count('/')}-{len(path)}"

    async def setup() -> None:
        await engine.create_task(TaskInput(id=task_id))
        await engine.transition_task(task_id, "running")

    asyncio.run(setup())

    @given(case=schema[path][method].as_strategy())
    @settings(
        max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    def run(case: Any) -> None:
        case.path_parameters = {"id": task_id}
        response = case.call()
        assert response.status_code < 500, (case.method, case.body, response.text)

    run()
