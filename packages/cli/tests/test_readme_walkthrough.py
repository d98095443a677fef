"""The curl walk-throughs (README, getting started), run as written against `taskcast start`, twice.

The second run goes to a new server on the same SQLite file, as a newcomer who follows the
README again the next day does: it must not trip over what the first run stored.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ._server import env_for, start

ROOT = Path(__file__).resolve().parents[3]

# Every request must succeed (curl shows the error body and fails on a 4xx/5xx), and the
# interactive subscription ("Ctrl-C to stop") stops by itself once its replay has come.
_PRELUDE = """\
set -euo pipefail
curl() {
  local rc=0
  command curl --fail-with-body --max-time 3 "$@" || rc=$?
  if [ "$rc" -eq 28 ] && [[ " $* " == *" -N "* ]]; then return 0; fi
  return "$rc"
}
"""


def _walkthrough(doc: str = "README.md", heading: str = "## A walk through with curl") -> str:
    text = (ROOT / doc).read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def _run_twice(script: str, tmp_path: Path) -> list[str]:
    """Run ``script`` against a server, then again against a new one on the same file."""
    assert "localhost:3721" in script
    env = env_for(tmp_path)
    outputs = []
    for _ in range(2):
        server = start(["start", "--port", "0"], cwd=tmp_path, env=env)
        try:
            address = server.url.removeprefix("http://")
            run = subprocess.run(
                ["bash", "-c", _PRELUDE + script.replace("localhost:3721", address)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            status, log = server.stop()
        assert run.returncode == 0, run.stdout + run.stderr + log
        assert status == 0, log
        outputs.append(run.stdout)
    return outputs


def test_readme_walkthrough_runs_twice_on_the_same_data_file(tmp_path: Path) -> None:
    outputs = _run_twice(_walkthrough(), tmp_path)
    for out in outputs:
        # The replay shows the text collapsed; the resumed stream gets the completion.
        assert '"seriesSnapshot":true' in out and '"delta":"Hello"' in out
        assert "event: taskcast.done" in out and '"reason":"completed"' in out
        assert '"error"' not in out
    first, second = (re.search(r"^task (\S+)$", out, re.M) for out in outputs)
    assert first is not None and second is not None and first[1] != second[1]


def test_getting_started_lifecycle_runs_twice_on_the_same_data_file(tmp_path: Path) -> None:
    script = _walkthrough("docs/guide/getting-started.md", "## The lifecycle in five requests")
    for out in _run_twice(script, tmp_path):
        assert '"pct":40' in out and '"url":"/r/1"' in out
        assert '"error"' not in out
