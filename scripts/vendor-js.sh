#!/usr/bin/env bash
# Refresh the dashboard's vendored JavaScript libraries from the npm registry.
#
# Each library is pinned below (name, version, the built files taken from its package);
# the files land in core/api/static/vendor/<name>-<version>/ with the package's LICENSE,
# and core/api/static/vendor/VENDORED.md records the version, the tarball's npm integrity
# and the SHA-256 of every file kept (tests/test_dashboard_vendor.py checks them).
# Changing a version: edit PINS, run this script, update the <script>/<link> tags that
# name the folder (grep -r vendor/ core/api/static/*.html), run the dashboard tests.
#
# Why these two: uPlot (~50 KB, canvas, made for time series: the timeline of a case with
# a million packets) rather than Apache ECharts (~1 MB); cytoscape.js for the connections
# graph (hosts and flows). Both run under the dashboard's CSP (script-src 'self', no eval).
set -euo pipefail
cd "$(dirname "$0")/.."

VENDOR=core/api/static/vendor
# name version files-in-the-package (space separated, relative to package/)
PINS=(
  "uplot 1.6.32 dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE"
  "cytoscape 3.35.0 dist/cytoscape.min.js LICENSE"
)

command -v npm >/dev/null || { echo "vendor-js: npm is not installed" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

{
  echo "# Vendored JavaScript"
  echo
  echo "Written by \`scripts/vendor-js.sh\` (do not edit by hand). Served by the dashboard from"
  echo "\`/ui/static/vendor/<name>-<version>/\`; no build step, no CDN."
  echo
  echo "| library | version | npm integrity | file | sha256 |"
  echo "|---|---|---|---|---|"
} > "$tmp/VENDORED.md"

rm -rf "$VENDOR"/*/
mkdir -p "$VENDOR"
for pin in "${PINS[@]}"; do
  read -r name version files <<<"$pin"
  integrity=$(npm view "$name@$version" dist.integrity)
  (cd "$tmp" && npm pack --silent "$name@$version" >/dev/null)
  mkdir -p "$tmp/$name"
  tar -xzf "$tmp/$name-$version.tgz" -C "$tmp/$name"
  dest="$VENDOR/$name-$version"
  mkdir -p "$dest"
  for f in $files; do
    cp "$tmp/$name/package/$f" "$dest/$(basename "$f")"
    sum=$(sha256sum "$dest/$(basename "$f")" | cut -d' ' -f1)
    echo "| $name | $version | \`$integrity\` | $(basename "$f") | \`$sum\` |" >> "$tmp/VENDORED.md"
  done
done
cp "$tmp/VENDORED.md" "$VENDOR/VENDORED.md"
echo "vendor-js: $(ls -d "$VENDOR"/*/ | wc -l) libraries in $VENDOR" >&2
