"""Compressed segments benchmark: ratio, CPU and query times, beside zstd and gzip.

    python benchmarks/bench_compression.py [--size-mib 128] [--flows 20] [--rounds 3]

1. Ratio (plain bytes / stored bytes) of the same segment files, three inputs: the corpus
   captures (one store of all of them), generated traffic with realistic payloads (HTTP
   text pages and JSON, TLS records, DNS; sessions interleaved; ``--size-mib``), and
   ``pcapwire.synth`` traffic (its bodies repeat a marker: an upper bound). pcapwire is
   the seekable layout at level 3 and 1 MiB frames (the defaults); beside it ``zstd -3``
   and ``gzip -6`` of each segment file as one stream.
2. CPU seconds per GiB of plain segment compressed: pcapwire's compressing thread
   (compression, read-back verification and hashing included); the zstd and gzip
   processes (user + system).
3. Query time compressed vs uncompressed, whole CLI processes (``pcapwire query … -w
   FILE``) on two stores of the same realistic capture, one compressed: narrow 5-tuple
   queries (``--flows`` flows, the two stores alternating from flow to flow; a round's
   figure is the ratio of its medians) and a non-indexable BPF expression (every record
   is read). ``--rounds`` rounds, the order alternating; median and range of the per-round
   ratios (compressed time / uncompressed time: target <= 1.5 for 5-tuple queries).
   Every compressed answer is checked byte for byte against the uncompressed one.
Results are printed as a table and written to benchmarks/results/compression.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchdata import DATA, RESULTS, synth_capture

PCAPWIRE = [sys.executable, "-m", "pcapwire.cli"]
BPF = "tcp[13] & 2 != 0"
FRAME_BYTES = 2**20
LEVEL = 3

WORDS = ("the of and to in is for on that with as by this from at are be or an was it have "
         "not which more all can about other their has will new one page home search news "
         "service time information contact product business online use price view help "
         "account data report support policy privacy security network system user email "
         "download free order shipping review best research community member message "
         "company customer software website management update project public local city "
         "state world market health school group program content design development "
         "international").split()
DOMAINS = ("example.com", "cdn.example.net", "api.example.org", "static.example.com",
           "mail.example.net", "news.example.org", "shop.example.com", "login.example.net")
AGENTS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36",
          "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")


# -- generated traffic with realistic payloads ---------------------------------------------
def _text(rng: random.Random, n: int) -> bytes:
    out: list[str] = []
    size = 0
    while size < n:
        tag = rng.choice(("p", "li", "h2", "td", "span", "a"))
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 30)))
        attr = f' href="/{rng.choice(WORDS)}/{rng.randrange(10**6)}"' if tag == "a" else \
            f' class="{rng.choice(WORDS)}-{rng.choice(WORDS)}"'
        piece = f"<{tag}{attr}>{words.capitalize()}.</{tag}>\n"
        out.append(piece)
        size += len(piece)
    return ("<!DOCTYPE html>\n<html><head><title>" + " ".join(rng.sample(WORDS, 4))
            + "</title></head><body>\n" + "".join(out) + "</body></html>\n").encode()[:n]


def _json(rng: random.Random, n: int) -> bytes:
    items = []
    size = 0
    while size < n:
        item = json.dumps({"id": rng.randrange(10**9), "name": rng.choice(WORDS).title(),
                           "price": round(rng.uniform(1, 999), 2),
                           "tags": rng.sample(WORDS, 3), "stock": rng.randrange(500),
                           "updated": f"2024-{rng.randrange(1, 13):02d}-"
                                      f"{rng.randrange(1, 29):02d}T12:00:00Z"})
        items.append(item)
        size += len(item) + 1
    return ("[" + ",".join(items) + "]").encode()


def _http(rng: random.Random, cap: object, cli: str, srv: str) -> None:
    from pcapwire.testing.craft import http_request, http_response

    host = rng.choice(DOMAINS)
    turns = []
    for _ in range(rng.randrange(1, 4)):
        path = f"/{rng.choice(WORDS)}/{rng.choice(WORDS)}-{rng.randrange(10**5)}"
        js = rng.random() < 0.3
        req = http_request(path + (".json" if js else ".html"), host, headers={
            "User-Agent": rng.choice(AGENTS), "Accept": "text/html,application/json;q=0.9",
            "Accept-Language": "en-US,en;q=0.5",
            "Cookie": f"session={rng.getrandbits(128):032x}; theme=dark"})
        body = (_json if js else _text)(rng, rng.randrange(2_000, 60_000))
        turns += [("c", req), ("s", http_response(
            body, content_type="application/json" if js else "text/html; charset=utf-8",
            headers={"Server": "nginx", "Cache-Control": "max-age=600"}))]
    cap.tcp(cli, rng.randrange(1024, 65535), srv, 80, turns)  # type: ignore[attr-defined]


def _tls_record(rng: random.Random, ctype: int, n: int) -> bytes:
    return struct.pack("!BHH", ctype, 0x0303, n) + rng.randbytes(n)


def _tls(rng: random.Random, cap: object, cli: str, srv: str) -> None:
    host = rng.choice(DOMAINS).encode()
    hello = _tls_record(rng, 0x16, 200)
    hello = hello[:120] + b"\x00\x00" + struct.pack("!H", len(host)) + host + hello[124:]
    turns = [("c", hello), ("s", _tls_record(rng, 0x16, rng.randrange(2_500, 4_500))),
             ("c", _tls_record(rng, 0x17, rng.randrange(200, 900)))]
    left = rng.randrange(5_000, 200_000)
    while left > 0:
        n = min(left, 16_384)
        turns.append(("s", _tls_record(rng, 0x17, n)))
        left -= n
    cap.tcp(cli, rng.randrange(1024, 65535), srv, 443, turns)  # type: ignore[attr-defined]


def _dns(rng: random.Random, cap: object, cli: str, _srv: str) -> None:
    from pcapwire.testing.craft import dns_query

    name = f"{rng.choice(WORDS)}{rng.randrange(100)}.{rng.choice(DOMAINS)}"
    qid = rng.getrandbits(16)
    sport = rng.randrange(1024, 65535)
    cap.udp(cli, sport, "10.0.0.53", 53, dns_query(qid, name))  # type: ignore[attr-defined]
    cap.udp("10.0.0.53", 53, cli, sport,  # type: ignore[attr-defined]
            dns_query(qid, name, f"203.0.113.{rng.randrange(1, 255)}"))


def realistic_capture(path: Path, target_bytes: int, seed: int = 16) -> dict[str, float]:
    """About ``target_bytes`` of interleaved sessions: by count 40 % TLS, 25 % HTTP (HTML
    and JSON), 35 % DNS; returns the sessions of each kind and the packets."""
    from pcapwire.pcapformat import RECORD, pcap_header
    from pcapwire.testing.craft import Capture

    rng = random.Random(seed)
    kinds: dict[str, Callable[[random.Random, object, str, str], None]] = {
        "tls": _tls, "http": _http, "dns": _dns}
    counts = dict.fromkeys(kinds, 0)
    volume = dict.fromkeys(kinds, 0)

    def session() -> tuple[str, Iterator[bytes]]:
        kind = rng.choices(list(kinds), (40, 25, 35))[0]
        counts[kind] += 1
        cap = Capture(step_us=1)
        cli = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        srv = f"{rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{rng.randrange(1, 255)}"
        kinds[kind](rng, cap, cli, srv)
        return kind, (rec[16:] for rec in cap.records)

    size, packets, ts_us = 24, 0, 1_700_000_000 * 10**6
    active: list[tuple[str, Iterator[bytes]]] = []
    with open(path, "wb") as out:
        out.write(pcap_header(1, 65535))
        while size < target_bytes:
            while len(active) < 64:
                active.append(session())
            i = rng.randrange(len(active))
            frame = next(active[i][1], None)
            if frame is None:
                active.pop(i)
                continue
            ts_us += rng.randrange(1, 40)
            out.write(RECORD.pack(ts_us // 10**6, ts_us % 10**6, len(frame), len(frame)) + frame)
            size += 16 + len(frame)
            volume[active[i][0]] += 16 + len(frame)
            packets += 1
    return {"packets": packets, **{f"{k}_sessions": n for k, n in counts.items()},
            **{f"{k}_bytes_pct": round(100 * v / size, 1) for k, v in volume.items()}}


# -- measuring -----------------------------------------------------------------------------
def _run(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of a child process, after a sync."""
    os.sync()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return wall, usage.ru_utime + usage.ru_stime


def _segment_files(root: Path) -> list[Path]:
    from pcapwire.store import Store

    with Store(root) as store:
        return [root / s.path for s in store.catalog.segments()]


def ratios(root: Path) -> dict[str, float]:
    """Compress the store at ``root`` in place; sizes, ratios and CPU of pcapwire, and of
    zstd -3 and gzip -6 on the same segment files (run first, on the plain files)."""
    from pcapwire.store.compression import compress_eligible

    files = _segment_files(root)
    plain = sum(p.stat().st_size for p in files)
    res: dict[str, float] = {"plain_bytes": plain, "segments": len(files)}
    tmp = DATA / "one-stream.out"
    for tool, cmd in (("zstd-3", ["zstd", "-3", "-q", "-f", "-c"]),
                      ("gzip-6", ["gzip", "-6", "-c"])):
        size = cpu = 0.0
        for p in files:
            with open(tmp, "wb") as out:
                cpu += _run([*cmd, str(p)], stdout=out.fileno())[1]
            size += tmp.stat().st_size
        res[f"{tool}_bytes"] = size
        res[f"{tool}_ratio"] = round(plain / size, 2)
        res[f"{tool}_cpu_s_per_gib"] = round(cpu / (plain / 2**30), 2)
    tmp.unlink()
    done = compress_eligible(root, level=LEVEL, frame_bytes=FRAME_BYTES)
    cpu = sum(d.cpu_seconds for d in done)
    stored = sum(d.stored_size for d in done)
    res["pcapwire_bytes"] = stored
    res["pcapwire_ratio"] = round(plain / stored, 2)
    res["pcapwire_cpu_s_per_gib"] = round(cpu / (plain / 2**30), 2)
    return res


def _ratio(packed: list[float], plain: list[float]) -> dict[str, float]:
    """Compressed / uncompressed per round: median and range (< 1.5: the target)."""
    r = [a / b for a, b in zip(packed, plain, strict=True)]
    return {"median": round(statistics.median(r), 2), "min": round(min(r), 2),
            "max": round(max(r), 2), "compressed_s": round(statistics.median(packed), 4),
            "uncompressed_s": round(statistics.median(plain), 4)}


def query_times(plain: Path, packed: Path, flows: int, rounds: int) -> dict[str, object]:
    from pcapwire.query.flows import flow_dict
    from pcapwire.store import Store

    with Store(plain) as store:
        rows = list(store.catalog.flows("proto = 6"))
    step = max(1, len(rows) // flows)
    picks = [flow_dict(r) for r in rows[::step][:flows]]
    out = {plain: DATA / "q-plain.pcap", packed: DATA / "q-packed.pcap"}

    def five(root: Path, f: dict) -> float:
        return _run([*PCAPWIRE, "--data-dir", str(root), "query", "--five-tuple",
                     f"tcp:{f['src_ip']}:{f['src_port']}:{f['dest_ip']}:{f['dest_port']}",
                     "-w", str(out[root])])[0]

    def bpf(root: Path) -> float:
        return _run([*PCAPWIRE, "--data-dir", str(root), "query", "--bpf", BPF, "-w",
                     str(out[root])])[0]

    five_rounds: tuple[list[float], list[float]] = ([], [])
    bpf_rounds: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds):
        a_s, b_s = [], []
        for i, f in enumerate(picks):
            order = (packed, plain) if (i + r) % 2 else (plain, packed)
            t = {root: five(root, f) for root in order}
            a_s.append(t[packed])
            b_s.append(t[plain])
            assert out[plain].read_bytes() == out[packed].read_bytes(), "5-tuple differs"
        five_rounds[0].append(statistics.median(a_s))
        five_rounds[1].append(statistics.median(b_s))
        order = (packed, plain) if r % 2 else (plain, packed)
        t = {root: bpf(root) for root in order}
        bpf_rounds[0].append(t[packed])
        bpf_rounds[1].append(t[plain])
        assert out[plain].read_bytes() == out[packed].read_bytes(), "BPF result differs"
    for p in out.values():
        p.unlink()
    return {"flows": len(picks), "five_tuple": _ratio(*five_rounds), "bpf": _ratio(*bpf_rounds)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=128, help="realistic traffic generated")
    ap.add_argument("--synth-mib", type=int, default=64)
    ap.add_argument("--flows", type=int, default=20, help="5-tuple queries per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import CASES, corpus_file
    from pcapwire.store import Store

    DATA.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    real = DATA / f"realistic-{args.size_mib}m.pcap"
    print(f"generating {real} ...", file=sys.stderr)
    mix = realistic_capture(real, args.size_mib * 2**20)
    inputs = {"corpus": [corpus_file(c) for c in CASES], "realistic": [real],
              "synth": [synth_capture(args.synth_mib, seed=42)]}
    res: dict[str, object] = {"level": LEVEL, "frame_bytes": FRAME_BYTES, "rounds": args.rounds,
                              "realistic_mix": mix}
    plain_dir = DATA / "cz-plain"
    for name, files in inputs.items():
        root = DATA / f"cz-{name}"
        shutil.rmtree(root, ignore_errors=True)
        with Store(root) as store:
            store.ingest(files)
        if name == "realistic":  # the uncompressed twin for the query times
            shutil.rmtree(plain_dir, ignore_errors=True)
            shutil.copytree(root, plain_dir)
        res[name] = ratios(root)
    res["queries"] = query_times(plain_dir, DATA / "cz-realistic", args.flows, args.rounds)
    for name in inputs:
        shutil.rmtree(DATA / f"cz-{name}", ignore_errors=True)
    shutil.rmtree(plain_dir, ignore_errors=True)
    real.unlink()
    (RESULTS / "compression.json").write_text(json.dumps(res, indent=1) + "\n")

    print(f"realistic traffic: {mix}")
    print("| input | plain MiB | pcapwire (seekable, -3, 1 MiB frames) | `zstd -3` | "
          "`gzip -6` |")
    print("|---|---|---|---|---|")
    for name in inputs:
        r = res[name]
        assert isinstance(r, dict)
        print(f"| {name} ({r['segments']} segments) | {r['plain_bytes'] / 2**20:.1f} | "
              f"{r['pcapwire_ratio']}x, {r['pcapwire_cpu_s_per_gib']} CPU s/GiB | "
              f"{r['zstd-3_ratio']}x, {r['zstd-3_cpu_s_per_gib']} CPU s/GiB | "
              f"{r['gzip-6_ratio']}x, {r['gzip-6_cpu_s_per_gib']} CPU s/GiB |")
    q = res["queries"]
    assert isinstance(q, dict)
    print(f"\nqueries on the realistic store, whole processes, {args.rounds} alternating rounds; "
          "ratio = compressed time / uncompressed time, median [range]")
    print("| query | compressed (median s) | uncompressed (median s) | ratio |")
    print("|---|---|---|---|")
    for label, r in ((f"5-tuple ({q['flows']} flows)", q["five_tuple"]),
                     (f"`{BPF}` (every record)", q["bpf"])):
        print(f"| {label} | {r['compressed_s']} | {r['uncompressed_s']} | "
              f"{r['median']}x [{r['min']}-{r['max']}] |")


if __name__ == "__main__":
    main()
