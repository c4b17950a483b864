"""Run a fuzz harness under AddressSanitizer + UndefinedBehaviorSanitizer (GCC's runtimes).

Python itself is not instrumented, so the ASan runtime must be loaded before anything else
(``LD_PRELOAD``); :func:`ensure_runtime` re-executes the harness that way once. Findings
must reach libFuzzer so it saves the input (``-artifact_prefix``) and exits non-zero:

- ASan reports call libFuzzer's death callback (libFuzzer registers it with the preloaded
  runtime), which writes ``crash-<sha1>``; ``abort_on_error`` then aborts;
- UBSan (``-fno-sanitize-recover=undefined``) has its own runtime (libubsan) and no death
  callback: ``abort_on_error=1`` turns a report into SIGABRT, which libFuzzer's signal
  handler catches ("deadly signal") and saves the input the same way.

Leak detection is off: CPython keeps objects alive until exit by design.
"""

from __future__ import annotations

import os
import subprocess
import sys

ASAN_OPTIONS = ("detect_leaks=0:abort_on_error=1:symbolize=1:handle_abort=1"
                ":allocator_may_return_null=1:detect_stack_use_after_return=0")
UBSAN_OPTIONS = "halt_on_error=1:abort_on_error=1:print_stacktrace=1:symbolize=1"


def runtime_library() -> str:
    """GCC's libasan.so (from the gcc/libasan package of the distribution)."""
    path = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                          text=True, check=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        raise SystemExit("sanitizer build: gcc has no libasan.so (Debian: apt-get install "
                         "libasan8 or gcc); see scripts/setup.sh")
    return path


def ensure_runtime() -> None:
    """Re-exec this process with the ASan runtime preloaded and the sanitizer options set
    (options already in the environment win), unless that is already the case."""
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [runtime_library(), env.get("LD_PRELOAD")]))
    env["ASAN_OPTIONS"] = ":".join(filter(None, [ASAN_OPTIONS, env.get("ASAN_OPTIONS")]))
    env["UBSAN_OPTIONS"] = ":".join(filter(None, [UBSAN_OPTIONS, env.get("UBSAN_OPTIONS")]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
