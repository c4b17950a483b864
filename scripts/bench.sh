#!/usr/bin/env bash
# Run the benchmarks (all, or the ones named: store workflow extract suricata hashlist api
# capture compression retention hold trigger_hunt trigger_watch trigger_engines jobs
# cluster cluster_merge cluster_hunt dashboard; capture,
# retention and trigger_watch need root: they record in a
# network namespace of their own).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(store workflow suricata extract hashlist api capture compression retention hold
  trigger_hunt trigger_watch trigger_engines jobs cluster cluster_merge cluster_hunt dashboard)
for n in "${names[@]}"; do
  f="benchmarks/bench_${n}.py"
  [ -f "$f" ] || { echo "no benchmark $f" >&2; continue; }
  echo "== $f"
  python "$f"
done
