"""Carving benchmark: ``pcapwire extract`` vs ``tshark --export-objects http`` on one
generated capture (HTTP downloads -- plain, gzip, chunked -- and SMTP messages with
attachments), in the same run.

    python benchmarks/bench_extract.py [--size-mib 64] [--rounds 5]

The machine is shared (other jobs come and go), so both tools run in the same rounds,
alternating (pcapwire first in even rounds, tshark first in odd ones), on a warm page
cache; every figure is the **median over the rounds** of that round's measurement, and
the ratios are medians of the per-round ratios (each listed too):

* end to end: wall time of ``pcapwire extract`` and of ``tshark --export-objects``
  (processes started from scratch, interpreter and imports included);
* work only: pcapwire's carving timed inside its process (``carve_pcap``, imports
  excluded) against tshark's time minus tshark's own start-up (tshark on an empty capture,
  timed in the same round);

each as a ratio (tshark / pcapwire: above 1 means pcapwire is faster). It also compares
the sets of SHA-256 of the HTTP objects both extracted (and the SMTP attachments pcapwire
carved with what the generator sent), in every round. Results go to
benchmarks/results/extract.json.

pcapwire runs with a warm bytecode cache, as an installed package does (tshark does not
compile its dissectors at start-up either): when the environment disables writing
``.pyc`` files (``PYTHONDONTWRITEBYTECODE``), the pcapwire processes get a private cache
(``PYTHONPYCACHEPREFIX`` in the benchmark's temporary directory), filled by one untimed
run on an empty capture.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from extract_capture import write_capture  # noqa: E402

RESULTS = HERE / "results"
PCAPWIRE = [sys.executable, "-m", "pcapwire.cli"]


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{err}")
    return elapsed, usage.ru_maxrss


_LIBRARY = """
import sys, time
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.source import carve_pcap
t0 = time.perf_counter()
carve_pcap(sys.argv[1], ArtifactStore(sys.argv[2]))
print(time.perf_counter() - t0)
"""


def _library_seconds(pcap: Path, out: Path, env: dict[str, str]) -> float:
    res = subprocess.run([sys.executable, "-c", _LIBRARY, str(pcap), str(out)],
                         capture_output=True, text=True, check=True, env=env)
    return float(res.stdout.strip())


def _hashes(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()
            if p.is_file() and p.stat().st_size}


def _median(values: list[float], digits: int = 3) -> float:
    return round(statistics.median(values), digits)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--rounds", "--repeat", type=int, default=5,
                    help="alternating rounds (at least 3); figures are their medians")
    ap.add_argument("--keep", action="store_true", help="keep the capture and outputs")
    args = ap.parse_args()
    if args.rounds < 3:
        raise SystemExit("--rounds must be at least 3 (the figures are medians)")
    if shutil.which("tshark") is None:
        raise SystemExit("tshark is not installed")
    work = Path(tempfile.mkdtemp(prefix="pcapwire-bench-extract-"))
    pcap = work / "carve.pcap"
    sent = write_capture(pcap, args.size_mib * 2**20)
    size = pcap.stat().st_size
    with open(pcap, "rb") as f:  # warm the page cache for both tools
        while f.read(16 * 2**20):
            pass
    empty = work / "empty.pcap"
    empty.write_bytes(pcap.read_bytes()[:24])
    env = dict(os.environ)
    if env.pop("PYTHONDONTWRITEBYTECODE", ""):
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    _timed(PCAPWIRE + ["extract", "--pcap", str(empty), "--out", str(work / "warm-up")], env)
    _library_seconds(empty, work / "warm-up-library", env)

    ours, theirs, library, startup = [], [], [], []
    same_http, same_sent, same_attachments, emails = [], [], [], set()
    http_ours: set[str] = set()
    http_tshark: set[str] = set()
    for i in range(args.rounds):
        out, ts_out, ts_empty = (work / f"pcapwire-{i}", work / f"tshark-{i}",
                                 work / f"tshark-empty-{i}")
        ts_out.mkdir()
        ts_empty.mkdir()

        def run_pcapwire(i: int = i, out: Path = out) -> None:
            library.append(_library_seconds(pcap, work / f"library-{i}", env))
            ours.append(_timed(PCAPWIRE + ["extract", "--pcap", str(pcap), "--out",
                                           str(out)], env))

        def run_tshark(ts_out: Path = ts_out, ts_empty: Path = ts_empty) -> None:
            startup.append(_timed(["tshark", "-r", str(empty), "-q", "--export-objects",
                                   f"http,{ts_empty}"])[0])
            theirs.append(_timed(["tshark", "-r", str(pcap), "-q", "--export-objects",
                                  f"http,{ts_out}"]))

        for run in ((run_pcapwire, run_tshark) if i % 2 == 0 else (run_tshark, run_pcapwire)):
            run()
        files = [json.loads(x) for x in (out / "files.jsonl").read_text().splitlines()]
        http_ours = {f["sha256"] for f in files if f["protocol"] == "http"}
        http_tshark = _hashes(ts_out)
        attachments = {f["sha256"] for f in files if f["protocol"] == "smtp"
                       and f["extra"].get("mime_role") == "attachment"}
        same_http.append(http_ours == http_tshark)
        same_sent.append(http_ours == set(sent.http_bodies))
        same_attachments.append(attachments == set(sent.attachments))
        emails.add((out / "emails.jsonl").read_text().count("\n"))

    ratios = [t / o for (t, _), (o, _) in zip(theirs, ours, strict=True)]
    work_ratios = [(t - s) / lib for (t, _), s, lib in zip(theirs, startup, library,
                                                           strict=True)]
    ours_s, theirs_s = _median([t for t, _ in ours]), _median([t for t, _ in theirs])
    result = {
        "capture_bytes": size, "capture_mib": round(size / 2**20, 1),
        "http_objects_sent": len(set(sent.http_bodies)), "smtp_messages_sent": sent.messages,
        "pcapwire_seconds": ours_s, "tshark_seconds": theirs_s,
        "pcapwire_mib_s": round(size / 2**20 / ours_s, 1),
        "tshark_mib_s": round(size / 2**20 / theirs_s, 1),
        "ratio_vs_tshark": _median(ratios, 2),
        "ratio_per_round": [round(r, 2) for r in ratios],
        "pcapwire_library_seconds": _median(library),
        "tshark_startup_seconds": _median(startup),
        "ratio_work_only": _median(work_ratios, 2),
        "ratio_work_only_per_round": [round(r, 2) for r in work_ratios],
        "pcapwire_peak_rss_mib": round(max(r for _, r in ours) / 1024, 1),
        "tshark_peak_rss_mib": round(max(r for _, r in theirs) / 1024, 1),
        "http_hashes_pcapwire": len(http_ours), "http_hashes_tshark": len(http_tshark),
        "http_hash_sets_equal": all(same_http),
        "http_hashes_equal_sent": all(same_sent),
        "smtp_emails_carved": emails.pop() if len(emails) == 1 else sorted(emails),
        "smtp_attachments_equal_sent": all(same_attachments),
        "rounds": args.rounds, "statistic": "median", "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "extract.json").write_text(json.dumps(result, indent=1) + "\n")
    for k, v in result.items():
        print(f"{k:28} {v}")
    if not args.keep:
        shutil.rmtree(work)
    else:
        print(f"kept in {work}")


if __name__ == "__main__":
    main()
