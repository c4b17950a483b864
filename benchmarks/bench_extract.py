"""Carving benchmark: ``pcapwire extract`` vs ``tshark --export-objects http`` on one
generated capture (HTTP downloads -- plain, gzip, chunked -- and SMTP messages with
attachments), in the same run.

    python benchmarks/bench_extract.py [--size-mib 64] [--repeat 3]

Reports, best of --repeat on a warm page cache:

* end to end: wall time of ``pcapwire extract`` and of ``tshark --export-objects``
  (processes started from scratch, interpreter and imports included);
* work only: pcapwire's carving timed inside its process (``carve_pcap``, imports
  excluded) against tshark's time minus tshark's own start-up (tshark on an empty capture);

each as a ratio (tshark / pcapwire: above 1 means pcapwire is faster), and compares the
sets of SHA-256 of the HTTP objects both extracted (and the SMTP attachments pcapwire
carved with what the generator sent). Results go to benchmarks/results/extract.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
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


def _timed(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def _library_seconds(pcap: Path, out: Path) -> float:
    res = subprocess.run([sys.executable, "-c", _LIBRARY, str(pcap), str(out)],
                         capture_output=True, text=True, check=True)
    return float(res.stdout.strip())


def _hashes(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()
            if p.is_file() and p.stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the capture and outputs")
    args = ap.parse_args()
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
    (work / "tshark-empty").mkdir()
    startup = min(_timed(["tshark", "-r", str(empty), "-q", "--export-objects",
                          f"http,{work / 'tshark-empty'}"])[0] for _ in range(args.repeat))
    ours, theirs, library = [], [], []
    for i in range(args.repeat):
        library.append(_library_seconds(pcap, work / f"library-{i}"))
        out = work / f"pcapwire-{i}"
        ts_out = work / f"tshark-{i}"
        ts_out.mkdir()
        ours.append(_timed(PCAPWIRE + ["extract", "--pcap", str(pcap), "--out", str(out)]))
        theirs.append(_timed(["tshark", "-r", str(pcap), "-q", "--export-objects",
                              f"http,{ts_out}"]))
    best_ours, best_theirs = min(t for t, _ in ours), min(t for t, _ in theirs)

    files = [json.loads(x) for x in (work / "pcapwire-0" / "files.jsonl").read_text()
             .splitlines()]
    http_ours = {f["sha256"] for f in files if f["protocol"] == "http"}
    http_tshark = _hashes(work / "tshark-0")
    attachments = {f["sha256"] for f in files if f["protocol"] == "smtp"
                   and f["extra"].get("mime_role") == "attachment"}
    emails = (work / "pcapwire-0" / "emails.jsonl").read_text().count("\n")
    result = {
        "capture_bytes": size, "capture_mib": round(size / 2**20, 1),
        "http_objects_sent": len(set(sent.http_bodies)), "smtp_messages_sent": sent.messages,
        "pcapwire_seconds": round(best_ours, 3), "tshark_seconds": round(best_theirs, 3),
        "pcapwire_mib_s": round(size / 2**20 / best_ours, 1),
        "tshark_mib_s": round(size / 2**20 / best_theirs, 1),
        "ratio_vs_tshark": round(best_theirs / best_ours, 2),
        "pcapwire_library_seconds": round(min(library), 3),
        "tshark_startup_seconds": round(startup, 3),
        "ratio_work_only": round((best_theirs - startup) / min(library), 2),
        "pcapwire_peak_rss_mib": round(max(r for _, r in ours) / 1024, 1),
        "tshark_peak_rss_mib": round(max(r for _, r in theirs) / 1024, 1),
        "http_hashes_pcapwire": len(http_ours), "http_hashes_tshark": len(http_tshark),
        "http_hash_sets_equal": http_ours == http_tshark,
        "http_hashes_equal_sent": http_ours == set(sent.http_bodies),
        "smtp_emails_carved": emails,
        "smtp_attachments_equal_sent": attachments == set(sent.attachments),
        "repeat": args.repeat, "cpus": os.cpu_count(),
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
