"""Benchmark: move a deployment with `taskcast export` / `taskcast import`.

Starts a SQLite server and a target server (`--target redis+pg` by default, as in
production), fills the source with TASKS tasks of EVENTS events each (a quarter of them
deltas of one `accumulate` series, so the archives are compacted), then runs
`taskcast export --all` and `taskcast import` as processes, timing each and recording its
peak RSS. Run it at two sizes to see that the CLI's memory does not grow with the file:

    uv run python scripts/bench/migrate.py --tasks 10000 --events 100        # the issue's size
    uv run python scripts/bench/migrate.py --tasks 1000 --events 100 --tasks 4000

JSON report on stdout, a short table on stderr; exit 1 if a task was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # the server starter of scripts/bench/run.py


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def _patch(url: str, body: Any) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="PATCH",
    )
    with urllib.request.urlopen(request, timeout=60):
        pass


def fill(base: str, tasks: int, events: int) -> float:
    started = time.perf_counter()
    for i in range(tasks):
        task_id = f"mig{i:06d}"
        _post(f"{base}/tasks", {"id": task_id, "type": "bench.migrate"})
        _patch(f"{base}/tasks/{task_id}/status", {"status": "running"})
        batch = []
        for j in range(events - 2):  # with the two status events: `events` stored events
            if j % 4 == 1:
                batch.append({"type": "llm", "level": "info", "data": {"delta": f"w{j} "},
                              "seriesId": "text", "seriesMode": "accumulate"})  # fmt: skip
            else:
                batch.append({"type": "log", "level": "info", "data": {"i": j, "pad": "x" * 64}})
        _post(f"{base}/tasks/{task_id}/events", batch)
        _patch(f"{base}/tasks/{task_id}/status", {"status": "completed"})
    return time.perf_counter() - started


# Runs the CLI in this wrapper so the figure is the CLI process's own peak RSS (getrusage of
# RUSAGE_CHILDREN would also count the servers this script started and stopped).
_WRAPPER = """
import json, resource, sys
from taskcast.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, f)
sys.exit(code)
"""


def timed_cli(*args: str) -> dict[str, Any]:
    """Run `taskcast ARGS`; its wall time and its own peak RSS."""
    with tempfile.NamedTemporaryFile(suffix=".json") as rss:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _WRAPPER, rss.name, *args],
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("TASKCAST_")},
        )
        seconds = time.perf_counter() - started
        peak_kib = json.loads(Path(rss.name).read_text() or "{}").get("maxrss_kib", 0)
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "exit": done.returncode,
        "summary": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "",
    }


def one_size(args: argparse.Namespace, tasks: int) -> dict[str, Any]:
    source = bench.start_taskcast("sqlite", args)
    target = bench.start_taskcast(args.target, args)
    try:
        fill_s = fill(source.url, tasks, args.events)
        with tempfile.TemporaryDirectory(prefix="taskcast-migrate-") as tmp:
            dump = Path(tmp) / "all.jsonl"
            export = timed_cli("export", "--all", "-o", str(dump), "--url", source.url)
            size_mib = dump.stat().st_size / 2**20
            imported = timed_cli("import", str(dump), "--url", target.url)
        total_events = tasks * args.events
        return {
            "tasks": tasks,
            "events_per_task": args.events,
            "file_mib": round(size_mib, 1),
            "fill_seconds": round(fill_s, 1),
            "export": export
            | {
                "tasks_per_s": round(tasks / export["seconds"], 1),
                "events_per_s": round(total_events / export["seconds"]),
            },
            "import": imported
            | {
                "tasks_per_s": round(tasks / imported["seconds"], 1),
                "events_per_s": round(total_events / imported["seconds"]),
            },
            "ok": export["exit"] == 0
            and imported["exit"] == 0
            and f"imported {tasks}," in imported["summary"],
        }
    finally:
        source.stop()
        target.stop()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", type=int, action="append", help="tasks (repeat for several sizes)")
    ap.add_argument("--events", type=int, default=100, help="stored events per task")
    ap.add_argument("--target", choices=["sqlite", "redis", "redis+pg"], default="redis+pg")
    ap.add_argument(
        "--redis-url", default=os.environ.get("TASKCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    ap.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "TASKCAST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = ap.parse_args(argv)
    args.queue_limit, args.workers = 10_000, 1  # what run.py's starter reads
    runs = [one_size(args, n) for n in (args.tasks or [1000])]
    print(json.dumps({"machine": bench.machine(), "target": args.target, "runs": runs}, indent=1))
    for r in runs:
        print(
            f"{r['tasks']} tasks x {r['events_per_task']} events ({r['file_mib']} MiB): "
            f"export {r['export']['seconds']} s ({r['export']['tasks_per_s']} tasks/s, "
            f"{r['export']['events_per_s']} events/s, peak {r['export']['peak_rss_mib']} MiB); "
            f"import {r['import']['seconds']} s ({r['import']['tasks_per_s']} tasks/s, "
            f"{r['import']['events_per_s']} events/s, peak {r['import']['peak_rss_mib']} MiB)"
            + ("" if r["ok"] else "  FAILED"),
            file=sys.stderr,
        )
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
