"""``pcapwire capture status [--json]``: the recorder's status file and the loss the
catalog keeps per interface and per segment."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from pcapwire.capture import ledger
from pcapwire.capture.recorder import CAPTURE_DIR, STATUS_FILE
from pcapwire.capture.status import human_bytes, pid_alive, read_status, status_line
from pcapwire.cli import EXIT_OK
from pcapwire.store import Store

SEGMENTS_SHOWN = 20


def collect(data_dir: str | Path) -> dict[str, Any]:
    root = Path(data_dir)
    doc = read_status(root / CAPTURE_DIR / STATUS_FILE)
    running = bool(doc and doc.get("state") == "running" and isinstance(doc.get("pid"), int)
                   and pid_alive(doc["pid"]))
    with Store.existing(root) as store:
        cat = store.catalog
        loss = {"interfaces": ledger.loss_by_interface(cat),
                "segments": ledger.loss_by_segment(cat, SEGMENTS_SHOWN)}
        still_open = len(ledger.open_segments(cat))
    return {"running": running, "status": doc, "open_segments": still_open, "loss": loss}


def quantile(hist: dict[str, Any], q: float) -> str:
    count = hist.get("count", 0)
    if not count:
        return "-"
    for bound, cum in zip(hist["buckets"], hist["counts"], strict=False):
        if cum >= q * count:
            return f"<= {bound} s"
    return f"> {hist['buckets'][-1]} s"


def show_status(data_dir: str, as_json: bool) -> int:
    info = collect(data_dir)
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return EXIT_OK
    out = sys.stdout
    doc = info["status"]
    if doc is None:
        out.write("recorder: no status (never run on this data directory)\n")
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc.get("started", 0)))
        age = time.time() - doc.get("updated", 0)
        state = (f"running (pid {doc.get('pid')})" if info["running"]
                 else "not running (last status below)")
        out.write(f"recorder: {state}, started {when}, status {age:.1f} s old\n")
        out.write(f"  {status_line(doc)}\n")
        hist = doc.get("latency_hist", {})
        out.write(f"  arrival to queryable: p50 {quantile(hist, 0.5)}, p99 "
                  f"{quantile(hist, 0.99)} ({hist.get('count', 0)} packets)\n")
        for name, row in sorted(doc.get("interfaces", {}).items()):
            out.write(f"  {name}: {row['packets']} packets, {human_bytes(row['bytes'])}, "
                      f"{row.get('pps', 0):,.0f} pkt/s, {row.get('mbps', 0):,.1f} Mbit/s; drops "
                      f"kernel {row['kernel_drops']} interface {row['if_drops']} backlog "
                      f"{row['backlog_drops']} (disk {row.get('disk_drops', 0)})\n")
    if info["open_segments"] and not info["running"]:
        out.write(f"{info['open_segments']} segment(s) left open by a recorder that is not "
                  "running: the next `pcapwire capture` completes them\n")
    loss = info["loss"]
    out.write("recorded loss, all runs (catalog):\n")
    if not loss["interfaces"]:
        out.write("  nothing recorded yet\n")
    for name, row in sorted(loss["interfaces"].items()):
        out.write(f"  {name}: {row.get('segments', 0)} segments, {row.get('packets', 0)} "
                  f"packets; drops kernel {row['kernel_drops']} interface {row['if_drops']} "
                  f"backlog {row['backlog_drops']} (disk {row['disk_drops']})\n")
    if loss["segments"]:
        out.write(f"latest periods with loss (up to {SEGMENTS_SHOWN}):\n")
    for row in loss["segments"]:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["first_ns"] / 1e9))
        end = time.strftime("%H:%M:%S", time.localtime(row["last_ns"] / 1e9))
        where = row["path"] or "(no segment open)"
        out.write(f"  {start}-{end} {row['interface']} {where}: kernel {row['kernel_drops']} "
                  f"interface {row['if_drops']} backlog {row['backlog_drops']} (disk "
                  f"{row['disk_drops']})\n")
    return EXIT_OK
