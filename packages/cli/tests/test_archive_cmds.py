"""``taskcast export`` / ``taskcast import`` against real servers (JSON Lines files)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from taskcast.cli import app

from ._threaded import threaded_server

runner = CliRunner()


@pytest.fixture(scope="module")
def source() -> Iterator[str]:
    with threaded_server() as base:
        yield base


@pytest.fixture
def target() -> Iterator[str]:
    with threaded_server() as base:
        yield base


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def _task(url: str, task_id: str, status: str = "completed", n: int = 3) -> None:
    assert httpx.post(f"{url}/tasks", json={"id": task_id, "type": "job"}).status_code == 201
    httpx.patch(f"{url}/tasks/{task_id}/status", json={"status": "running"})
    events = [{"type": "log", "level": "info", "data": {"i": i}} for i in range(n)]
    events.append({"type": "llm", "level": "info", "data": {"delta": "a"}, "seriesId": "s",
                   "seriesMode": "accumulate"})  # fmt: skip
    events.append({"type": "llm", "level": "info", "data": {"delta": "b"}, "seriesId": "s",
                   "seriesMode": "accumulate"})  # fmt: skip
    assert httpx.post(f"{url}/tasks/{task_id}/events", json=events).status_code == 201
    if status != "running":
        httpx.patch(f"{url}/tasks/{task_id}/status", json={"status": status})


def _history(url: str, task_id: str) -> Any:
    return httpx.get(f"{url}/tasks/{task_id}/events/history").json()


def test_export_then_import_moves_tasks(
    source: str, target: str, tmp_path: Path, clean_env: Path
) -> None:
    for i in range(3):
        _task(source, f"mv-{i}")
    _task(source, "mv-running", status="running")
    out = tmp_path / "tasks.jsonl"
    result = invoke("export", "--status", "completed", "--type", "job", "-o", str(out),
                    "--url", source)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "exported 3 task(s), 18 event(s)" in result.output
    lines = out.read_text().splitlines()
    archives = [json.loads(line) for line in lines]
    assert sorted(a["task"]["id"] for a in archives) == ["mv-0", "mv-1", "mv-2"]
    assert all(a["schema"] == "taskcast.taskArchive" for a in archives)

    result = invoke("import", str(out), "--url", target)
    assert result.exit_code == 0, result.output
    assert "imported 3, skipped 0, failed 0" in result.output
    for archive in archives:
        task_id = archive["task"]["id"]
        assert _history(target, task_id) == archive["events"]
    # Again: every task exists, so each is skipped (not a failure); --overwrite replaces.
    result = invoke("import", str(out), "--url", target)
    assert result.exit_code == 0, result.output
    assert "imported 0, skipped 3, failed 0" in result.output
    assert "use --overwrite" in result.output
    result = invoke("import", str(out), "--overwrite", "--url", target)
    assert "imported 3, skipped 0, failed 0" in result.output


def test_export_named_tasks_to_stdout_and_unknown_ones_fail(source: str, clean_env: Path) -> None:
    _task(source, "named-1")
    result = invoke("export", "named-1", "no-such-task", "--url", source)
    assert result.exit_code == 1
    first = json.loads(result.output.splitlines()[0])
    assert first["task"]["id"] == "named-1"
    assert "failed no-such-task: HTTP 404: Task not found" in result.output
    assert "exported 1 task(s)" in result.output and "1 failed" in result.output


def test_export_needs_a_selection(source: str, clean_env: Path) -> None:
    result = invoke("export", "--url", source)
    assert result.exit_code == 2
    assert "--status / --type, or use --all" in result.output


def test_dry_run_validates_and_sends_nothing(
    source: str, target: str, tmp_path: Path, clean_env: Path
) -> None:
    _task(source, "dry-1")
    good = httpx.get(f"{source}/tasks/dry-1/archive").text
    bad = json.loads(good)
    bad["events"][1]["index"] = 7
    path = tmp_path / "mixed.jsonl"
    path.write_text(good + "\n\nnot json\n" + json.dumps(bad) + "\n")
    result = invoke("import", str(path), "--dry-run", "--url", target)
    assert result.exit_code == 1, result.output
    assert "valid 1, skipped 0, failed 2 (dry run: nothing sent)" in result.output
    assert "failed line 3 (?): not JSON" in result.output
    assert "failed line 4 (dry-1): Archive events must have contiguous indexes" in result.output
    assert httpx.get(f"{target}/tasks/dry-1").status_code == 404
    # Without --dry-run the good line is imported and the bad ones reported.
    result = invoke("import", str(path), "--url", target)
    assert result.exit_code == 1
    assert "imported 1, skipped 0, failed 2" in result.output
    assert "failed line 4 (dry-1): HTTP 400: Archive events must have contiguous" in result.output


def test_import_reports_an_unreachable_server(tmp_path: Path, clean_env: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text('{"schema": "taskcast.taskArchive"}\n')
    result = invoke("import", str(path), "--url", "http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "FAIL" in result.output and "cannot reach" in result.output
    result = invoke("import", str(tmp_path / "missing.jsonl"), "--url", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert "cannot read" in result.output
