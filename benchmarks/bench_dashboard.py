"""Dashboard benchmark: time to first render of a case of more than a million packets.

    python benchmarks/bench_dashboard.py [--size-mib 1024] [--rounds 3]

The generated capture (``benchmarks/data/synth-<size>m.pcap``; 1024 MiB holds 1,300,817
packets) is ingested once into the tenant ``bench`` of a data directory kept under
``benchmarks/data/dashboard-<size>m/``. A ``pcapwire serve`` process of this script on
127.0.0.1 runs one query with no filter into the case ``everything`` (kept too, with its
result downloaded to ``dashboard-<size>m-result.pcap``), so the case holds every packet.

Each round, a fresh headless Chromium context (Playwright) logs in with a token and opens
``/ui/cases/everything``. The page sets a performance mark when uPlot first draws the
timeline (``pcapwire:timeline-drawn``) and when cytoscape first renders the connections
graph (``pcapwire:graph-drawn``); their ``startTime`` is the time from navigation start.
The round then checks what was drawn: the timeline's bins add up to the case's packets
and the graph has nodes. Side by side, what a responder would otherwise run on the same
result: ``tshark -q -z io,stat,1`` (packets and bytes per second) and ``tshark -q -z
conv,ip`` (conversations), each as a whole process. Rounds alternate
(:func:`benchdata.alternate`). Results go to benchmarks/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchdata import DATA, RESULTS, alternate, synth_capture

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from chromiumutil import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

PCAPWIRE = [sys.executable, "-m", "pcapwire.cli"]
TENANT = "bench"
CASE = "everything"
MARKS = ("pcapwire:timeline-drawn", "pcapwire:graph-drawn")
PAGE_TIMEOUT_MS = 600_000  # one page load (the server reads every record header)
START_TIMEOUT_S = 60.0
VIEWPORT = {"width": 1280, "height": 900}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(url: str, token: str, method: str = "GET", body: dict[str, Any] | None = None
         ) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("pcapwire serve exited during start-up")
        try:
            with urllib.request.urlopen(f"{url}/api/v1/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)  # the port is not open yet: poll the condition
    raise SystemExit("pcapwire serve did not start")


def tenant_store(capture: Path, data: Path) -> None:
    """The capture ingested into the bench tenant, once (``ready`` marks a whole ingest)."""
    store, ready = data / "tenants" / TENANT, data / "tenants" / f"{TENANT}.ready"
    if ready.exists():
        return
    print(f"ingesting {capture} into {store} ...", file=sys.stderr)
    store.mkdir(parents=True, exist_ok=True)
    subprocess.run([*PCAPWIRE, "--data-dir", str(store), "ingest", "--progress", "none",
                    str(capture)], check=True, stdout=subprocess.DEVNULL)
    ready.touch()


def case_result(url: str, token: str, result: Path) -> dict[str, Any]:
    """The case's one query of everything (submitted and downloaded on the first run)."""
    status, case = call(f"{url}/api/v1/cases/{CASE}?format=native", token)
    queries = case.get("queries", []) if status == 200 else []
    if not queries:
        status, q = call(f"{url}/api/v1/queries", token, "POST", {"case": CASE, "event": "all"})
        if status != 202:
            raise SystemExit(f"query refused: {status} {q}")
        result.unlink(missing_ok=True)
    else:
        q = queries[0]
    if not result.exists():
        print(f"downloading the result to {result} ...", file=sys.stderr)
        part = result.with_suffix(".part")
        req = urllib.request.Request(f"{url}{q['links']['pcap']}",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=3600) as r, open(part, "wb") as f:
            while block := r.read(4 << 20):
                f.write(block)
        part.rename(result)
    status, q = call(f"{url}/api/v1/queries/{q['id']}", token)
    if status != 200 or q["status"] != "done":
        raise SystemExit(f"the case's query is not done: {status} {q}")
    return dict(q)


def open_case(browser: Any, url: str, token: str) -> dict[str, float]:
    """One fresh context: log in, open the case page, wait for both marks; milliseconds
    from navigation start, and what the page drew."""
    ctx = browser.new_context(viewport=VIEWPORT)
    try:
        page = ctx.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.goto(f"{url}/ui/login")
        page.fill("#token", token)
        page.click("#login-submit")
        page.wait_for_url(f"{url}/ui/")
        page.goto(f"{url}/ui/cases/{CASE}", wait_until="commit")
        page.wait_for_function(
            "names => names.every(n => performance.getEntriesByName(n).length)", arg=list(MARKS),
            timeout=PAGE_TIMEOUT_MS, polling=50)
        return dict(page.evaluate("""marks => {
          const at = (n) => performance.getEntriesByName(n)[0].startTime;
          const done = (part) => performance.getEntriesByType("resource")
            .find((r) => r.name.includes(part))?.responseEnd ?? NaN;
          return {timeline_ms: at(marks[0]), graph_ms: at(marks[1]),
            timeline_api_ms: done("/timeline"), flows_api_ms: done("/flows"),
            canvases: document.querySelectorAll("#timeline canvas").length,
            timeline_packets: CHARTS.timeline.data[1].reduce((a, b) => a + b, 0),
            timeline_bins: CHARTS.timeline.data[0].length,
            graph_nodes: CHARTS.graph.nodes().length, graph_edges: CHARTS.graph.edges().length,
            graph_canvases: document.querySelectorAll("#connections canvas").length};
        }""", list(MARKS)))
    finally:
        ctx.close()


def tshark(result: Path, stat: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(["tshark", "-r", str(result), "-q", "-z", stat], check=True,
                         capture_output=True, text=True).stdout
    return time.perf_counter() - t0, out


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pcapwire.api.authdb import AuthDB
    from playwright.sync_api import sync_playwright

    capture = synth_capture(args.size_mib)
    data = DATA / f"dashboard-{args.size_mib}m"
    result = DATA / f"dashboard-{args.size_mib}m-result.pcap"
    tenant_store(capture, data)
    db = AuthDB(data / "auth.sqlite")
    token, _ = db.create_token(TENANT, "analyst")
    db.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*PCAPWIRE, "--data-dir", str(data), "serve", "--listen",
                               f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, server)
        query = case_result(url, token, result)
        pages: list[dict[str, float]] = []
        io_s: list[float] = []
        conv_s: list[float] = []
        outputs: dict[str, str] = {}

        def ours() -> float:
            pages.append(open_case(browser, url, token))
            return max(pages[-1]["timeline_ms"], pages[-1]["graph_ms"]) / 1000

        def theirs() -> float:
            t_io, outputs["io"] = tshark(result, "io,stat,1")
            t_conv, outputs["conv"] = tshark(result, "conv,ip")
            io_s.append(t_io)
            conv_s.append(t_conv)
            return t_io + t_conv

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                both, tsharks = alternate(args.rounds, ours, theirs)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(30)
    last = pages[-1]
    conversations = sum(1 for line in outputs["conv"].splitlines() if "<->" in line)
    return {
        "capture": capture.name, "capture_bytes": capture.stat().st_size,
        "result_bytes": result.stat().st_size, "case_packets": query["packets"],
        "rounds": args.rounds,
        "timeline_drawn_s": summary([r["timeline_ms"] / 1000 for r in pages]),
        "graph_drawn_s": summary([r["graph_ms"] / 1000 for r in pages]),
        "both_drawn_s": summary(both),
        "timeline_api_done_s": summary([r["timeline_api_ms"] / 1000 for r in pages]),
        "flows_api_done_s": summary([r["flows_api_ms"] / 1000 for r in pages]),
        "tshark_io_stat_1_s": summary(io_s), "tshark_conv_ip_s": summary(conv_s),
        "tshark_both_s": summary(tsharks),
        "ratio_both_vs_tshark_both": round(statistics.median(both)
                                           / statistics.median(tsharks), 3),
        "timeline_packets_drawn": last["timeline_packets"], "timeline_bins": last["timeline_bins"],
        "timeline_canvases": last["canvases"], "graph_nodes": last["graph_nodes"],
        "graph_edges": last["graph_edges"], "graph_canvases": last["graph_canvases"],
        "tshark_conversations": conversations,
        "timeline_complete": last["timeline_packets"] == query["packets"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024,
                    help="generated capture (1024 MiB = 1,300,817 packets)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    out = run(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dashboard.json").write_text(json.dumps(out, indent=1) + "\n")
    width = max(len(k) for k in out)
    for k, v in out.items():
        if isinstance(v, dict):
            v = f"median {v['median']}  range {v['min']} .. {v['max']}"
        print(f"{k:<{width}}  {v}")
    if not out["timeline_complete"] or not out["graph_nodes"]:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
