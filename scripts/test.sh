#!/usr/bin/env bash
# The whole test suite: lint and type check, a bounded fuzz run of the native code, pytest.
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
echo "== fuzz (native indexer, ${PCAPWIRE_FUZZ_SECONDS:-60} s)"
python tests/fuzz/fuzz_native.py -max_total_time="${PCAPWIRE_FUZZ_SECONDS:-60}" \
  -artifact_prefix=artifacts/fuzz- artifacts/fuzz-corpus >artifacts/fuzz.log 2>&1 \
  || { tail -40 artifacts/fuzz.log; echo "fuzzing found a crash: artifacts/fuzz-*"; exit 1; }
grep -E "Done [0-9]+ runs" artifacts/fuzz.log || tail -3 artifacts/fuzz.log
echo "== pytest"
pytest -q -p no:cacheprovider --junitxml=artifacts/junit.xml "$@"
