#!/usr/bin/env bash
# Prove every wheel in a directory installs and imports on its own, in a fresh environment
# with only its declared dependencies (siblings come from the same directory).
# Usage: scripts/check_wheels.sh dist
set -euo pipefail
dist="${1:?usage: scripts/check_wheels.sh DIST_DIR}"
if unzip -l "$dist"/*.whl | grep -E ' taskcast/__init__\.py$'; then
  echo "a wheel ships taskcast/__init__.py, which breaks the namespace" >&2
  exit 1
fi
refresh=""
for name in core sqlite redis postgres server server-sdk client sentry cli widget; do
  refresh="$refresh --refresh-package taskcast-$name"
done
for wheel in "$dist"/*.whl; do
  name=$(basename "$wheel" | cut -d- -f1)
  module="taskcast.${name#taskcast_}"
  venv=$(mktemp -d)
  uv venv --quiet "$venv"
  # Every build has the same version number: refresh our own packages so a cached wheel of
  # an older build never stands in for the one just built.
  # shellcheck disable=SC2086
  VIRTUAL_ENV="$venv" uv pip install --quiet --find-links "$dist" $refresh "$wheel"
  "$venv/bin/python" -c "import importlib; m = importlib.import_module('$module'); print('$module', m.__version__, 'ok', len(getattr(m, '__all__', [])), 'names')"
  rm -rf "$venv"
done
