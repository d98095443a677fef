#!/usr/bin/env bash
# The project's test command: the whole suite under coverage (servers started as subprocesses
# are measured too), then the combined report with the 90% gate.
set -euo pipefail
cd "$(dirname "$0")/.."
uv sync --all-packages --all-groups --frozen --quiet
rm -f .coverage .coverage.*
status=0
uv run coverage run -m pytest "$@" || status=$?
uv run coverage combine --quiet || true
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
uv run coverage report
