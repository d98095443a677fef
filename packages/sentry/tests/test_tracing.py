"""Performance tracing of publishes and SSE sessions through Sentry's ASGI integrations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_publish_and_sse_session_are_traced() -> None:
    # A subprocess: the FastAPI integration patches FastAPI globally for the whole process.
    child = Path(__file__).with_name("_tracing_child.py")
    out = subprocess.run(
        [sys.executable, str(child)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    traced = {(name, method): op for name, method, op in json.loads(out.strip().splitlines()[-1])}
    # The publish and the whole SSE session each become a transaction.
    assert traced[("/tasks/{task_id}/events", "POST")] == "http.server"
    assert traced[("/tasks/{task_id}/events", "GET")] == "http.server"
    assert ("/tasks/{task_id}/status", "PATCH") in traced
