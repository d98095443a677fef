#!/usr/bin/env bash
# Vendor htmx and its SSE extension into the taskcast-widget package from the npm registry.
#
# Pinned versions: htmx 2.0.x is the stable line the SSE extension (htmx-ext-sse 2.x) targets;
# htmx 4 only reached 4.0.0 recently and changes attribute inheritance and the extension API,
# so it is not yet the reliable choice for a widget that must work in other people's pages.
#
# Usage: scripts/vendor_htmx.sh            (re-vendors; rewrites VERSIONS)
#        HTMX_VERSION=2.0.11 SSE_VERSION=2.2.4 scripts/vendor_htmx.sh
# Needs: npm, sha256sum. Runs `npm pack` in a temporary directory; nothing is installed.
set -euo pipefail

HTMX_VERSION="${HTMX_VERSION:-2.0.11}"
SSE_VERSION="${SSE_VERSION:-2.2.4}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/packages/widget/src/taskcast/widget/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --silent "htmx.org@${HTMX_VERSION}" >/dev/null
npm pack --silent "htmx-ext-sse@${SSE_VERSION}" >/dev/null
mkdir htmx sse
tar -xzf "htmx.org-${HTMX_VERSION}.tgz" -C htmx
tar -xzf "htmx-ext-sse-${SSE_VERSION}.tgz" -C sse

mkdir -p "$dest"
cp htmx/package/dist/htmx.min.js "$dest/htmx.min.js"
cp htmx/package/LICENSE "$dest/LICENSE.htmx"
cp sse/package/dist/sse.min.js "$dest/htmx-ext-sse.min.js"
cp sse/package/LICENSE "$dest/LICENSE.htmx-ext-sse"

{
  echo "# Vendored by scripts/vendor_htmx.sh from the npm registry (npm pack)."
  echo "# package version file sha256"
  for f in "$dest"/*.js; do
    name="$(basename "$f")"
    case "$name" in
      htmx.min.js) pkg="htmx.org"; ver="$HTMX_VERSION" ;;
      *) pkg="htmx-ext-sse"; ver="$SSE_VERSION" ;;
    esac
    echo "$pkg $ver $name $(sha256sum "$f" | cut -d' ' -f1)"
  done
  for t in "htmx.org-${HTMX_VERSION}.tgz" "htmx-ext-sse-${SSE_VERSION}.tgz"; do
    echo "# tarball $t sha256 $(sha256sum "$t" | cut -d' ' -f1)"
  done
} > "$dest/VERSIONS"
cat "$dest/VERSIONS"
