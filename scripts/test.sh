#!/usr/bin/env bash
# The whole test suite: lint and type check, bounded fuzz runs (the native code under
# ASan/UBSan, the HTTP, MIME and SMTP parsers), pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
# The shared corpus: $PCAPWIRE_CORPUS, else ../shared/corpus beside this checkout, else
# beside the local repository this checkout was cloned from (a clone in a scratch folder).
if [ -z "${PCAPWIRE_CORPUS:-}" ] && [ ! -f ../shared/corpus/manifest.json ]; then
  origin=$(git config --get remote.origin.url 2>/dev/null || true)
  if [ -n "$origin" ] && [ -f "$origin/../shared/corpus/manifest.json" ]; then
    PCAPWIRE_CORPUS=$(cd "$origin/../shared/corpus" && pwd)
    export PCAPWIRE_CORPUS
  fi
fi
echo "== ruff"
ruff check core plugins tests benchmarks examples
echo "== mypy"
mypy core plugins
mkdir -p artifacts
# Fuzzing, bounded: a finding (crash, sanitizer report, failed invariant, hang) fails the
# test command, its input saved as artifacts/fuzz-<target>-{crash,timeout,oom}-<sha1>
# (replay: python tests/fuzz/<harness>.py FILE). Corpora persist in artifacts/. The seed is
# fixed (PCAPWIRE_FUZZ_SEED, default 1) so that the gate gives the same verdict on the same
# code; explore with PCAPWIRE_FUZZ_SEED=0 (random) and longer runs.
fuzz() {  # fuzz TARGET SECONDS HARNESS [ENV=VALUE...]
  local target=$1 seconds=$2 harness=$3
  shift 3
  echo "== fuzz ($target, $seconds s)"
  env "$@" python "tests/fuzz/$harness" -max_total_time="$seconds" -timeout=60 \
    -seed="${PCAPWIRE_FUZZ_SEED:-1}" \
    -artifact_prefix="artifacts/fuzz-$target-" "artifacts/fuzz-$target-corpus" \
    >"artifacts/fuzz-$target.log" 2>&1 \
    || { tail -60 "artifacts/fuzz-$target.log"
         echo "fuzzing found a problem: $(ls -t artifacts/fuzz-"$target"-{crash,timeout,oom,leak}-* 2>/dev/null | head -1)"
         exit 1; }
  grep -E "Done [0-9]+ runs" "artifacts/fuzz-$target.log" || tail -3 "artifacts/fuzz-$target.log"
}
# The native indexer under AddressSanitizer + UndefinedBehaviorSanitizer: a separate
# instrumented build of core/native/*.c in build/fuzz/asan-ubsan/ (rebuilt when a source
# changes, before the clock starts), never the installed extension.
fuzz native-asan "${PCAPWIRE_FUZZ_SECONDS:-60}" fuzz_native.py PCAPWIRE_FUZZ_ASAN=1
# The live capture's ring-block walker (capture_ring.c), same build, crafted blocks.
fuzz capture-asan "${PCAPWIRE_FUZZ_CAPTURE_SECONDS:-10}" fuzz_capture.py PCAPWIRE_FUZZ_ASAN=1
# The Python parsers of carved traffic.
for target in http mime smtp; do
  fuzz "$target" "${PCAPWIRE_FUZZ_PY_SECONDS:-15}" "fuzz_$target.py"
done
echo "== pytest"
pytest -q -p no:cacheprovider --junitxml=artifacts/junit.xml "$@"
