"""Fuzz pcapwire._native with atheris (libFuzzer): Reader.feed/finish on arbitrary bytes,
SegmentIndexer on the meta it produces, scan() over the records (sequential, by index
offsets, with a BPF Filter and a time window), and scan() over the raw input as a corrupt
segment. Beyond "no crash", it checks invariants that must hold for ANY input:

- feeding the input whole or in small pieces gives the same records, meta, errors, warnings;
- records are back-to-back classic records whose headers agree with the meta;
- every packet lands in exactly one flow, with its own segment offset;
- scan() of the records (no filter) reproduces them, caplen cut to snaplen;
- index_add/key_order/doc_time_us (the search index's postings) on a document made of the
  input give what their Python statement gives (postings_check.py);
- merge_records() on the input cut into 1-4 record streams of fuzzer-chosen formats gives,
  call after call, what a plain Python statement of the merge step gives;
- the SQL function pcapwire_ip_text (sqlite_functions(), in a connection opened after it)
  on the input's first 0-23 bytes gives what socket.inet_ntop gives, or refuses what it
  refuses.

Usage (exit status 0 when nothing was found):
    .venv/bin/python tests/fuzz/fuzz_native.py -max_total_time=60 [libFuzzer flags] [CORPUS_DIR]
Without CORPUS_DIR the corpus is $TMPDIR/pcapwire-fuzz-corpus (kept between runs). The first
corpus directory always gets the seeds: corpus captures (first 4 KiB) and crafted files.

By default the harness compiles a coverage build of the extension (GCC
-fsanitize-coverage=trace-pc,trace-cmp + sancov_hook.c) into build/fuzz/coverage/ (rebuilt
when a source changes), so libFuzzer gets real coverage feedback from the C code. With
PCAPWIRE_FUZZ_ASAN=1 the build (build/fuzz/asan-ubsan/) also has AddressSanitizer and
UndefinedBehaviorSanitizer (-fsanitize=address,undefined -fno-sanitize-recover=undefined),
and the harness re-executes itself with GCC's ASan runtime preloaded (sanitizers.py): a
sanitizer report is a crash, its input saved under -artifact_prefix. scripts/test.sh runs
that build:
    PCAPWIRE_FUZZ_ASAN=1 .venv/bin/python tests/fuzz/fuzz_native.py -max_total_time=300
PCAPWIRE_FUZZ_BUILD=0 fuzzes the installed module instead (no C coverage feedback).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NATIVE_SRC = REPO / "core" / "native"
sys.path.insert(0, str(HERE))

import atheris  # noqa: E402
import craft  # noqa: E402
import postings_check  # noqa: E402
import sanitizers  # noqa: E402


def _point_hook_at_libfuzzer() -> None:
    """sancov_hook.c looks libFuzzer up in atheris's core library (loaded by Fuzz())."""
    core = next(Path(atheris.__file__).parent.glob("core_with_libfuzzer*.so"))
    os.environ["PCAPWIRE_FUZZ_LIBFUZZER"] = str(core)


ASAN = os.environ.get("PCAPWIRE_FUZZ_ASAN") == "1"
#: where the instrumented builds live (gitignored), one directory per flavour, rebuilt when
#: a source, the hook or the flags change (a stamp file holds their digest)
BUILD_ROOT = Path(os.environ.get("PCAPWIRE_FUZZ_BUILD_DIR", REPO / "build" / "fuzz"))
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]


def build_instrumented() -> Path:
    """Compile core/native/*.c with coverage (and sanitizers) into
    BUILD_ROOT/<flavour>/_native.so, a separate library: the normal extension is never
    touched. Concurrent runs build once (a lock file) and share the result."""
    sources = sorted(NATIVE_SRC.glob("*.c"))
    san = SANITIZE if ASAN else []
    common = ["-O1", "-g", "-fPIC", "-std=c11", "-fno-strict-aliasing", "-fno-omit-frame-pointer",
              f"-I{sysconfig.get_paths()['include']}", f"-I{NATIVE_SRC}", *san]
    h = hashlib.sha256(" ".join(common).encode())
    for p in [*sources, *sorted(NATIVE_SRC.glob("*.h")), HERE / "sancov_hook.c"]:
        h.update(p.name.encode() + p.read_bytes())
    out_dir = BUILD_ROOT / ("asan-ubsan" if ASAN else "coverage")
    so, stamp = out_dir / "_native.so", out_dir / "stamp"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if so.exists() and stamp.exists() and stamp.read_text() == h.hexdigest():
            return so
        stamp.unlink(missing_ok=True)
        objs = []
        for src in sources:
            obj = out_dir / (src.stem + ".o")
            subprocess.run(["gcc", *common, "-fsanitize-coverage=trace-pc,trace-cmp", "-c",
                            str(src), "-o", str(obj)], check=True)
            objs.append(str(obj))
        hook = out_dir / "sancov_hook.o"
        subprocess.run(["gcc", *common, "-c", str(HERE / "sancov_hook.c"), "-o", str(hook)],
                       check=True)
        tmp = out_dir / "_native.so.tmp"
        subprocess.run(["gcc", "-shared", *san, *objs, str(hook), "-lpcap", "-lsqlite3",
                        "-ldl", "-o", str(tmp)], check=True)
        tmp.rename(so)
        stamp.write_text(h.hexdigest())
    return so


def load_native():
    if os.environ.get("PCAPWIRE_FUZZ_BUILD", "1") == "0":
        from pcapwire import _native
        return _native
    so = build_instrumented()
    spec = importlib.util.spec_from_file_location("pcapwire_fuzz._native", so)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


N = None  # the extension, loaded by _init()
DB = None  # an SQLite connection with its SQL functions, opened by _init()
META: struct.Struct
PIECES = (1, 3, 7, 16, 61, 512)


def read(data: bytes, piece: int, skip: int, max_batch: int):
    r = N.Reader("fuzz", skip_packets=skip, max_batch_bytes=max_batch)
    batches = []
    if piece:
        for i in range(0, len(data), piece):
            batches += r.feed(data[i:i + piece])
    else:
        batches += r.feed(data)
    batches += r.finish()
    return r, batches


def flat(batches) -> tuple[bytes, list[tuple]]:
    recs, metas = [], []
    for _lt, _snap, _prec, records, meta, _off in batches:
        recs.append(records)
        for m in META.iter_unpack(meta):
            metas.append(m[:1] + (0,) + m[2:])  # rec_off is relative to the batch
    return b"".join(recs), metas


def check_batch(batch) -> None:
    lt, snap, prec, records, meta, _off = batch
    assert prec in (6, 9) and snap > 0 and len(meta) % N.META_SIZE == 0 and meta
    pos = 0
    for m in META.iter_unpack(meta):
        ts, rec_off, caplen, origlen = m[:4]
        assert rec_off == pos
        sec, frac, c, o = struct.unpack_from("<IIII", records, pos)
        assert (c, o) == (caplen, origlen)
        assert ts == sec * 10**9 + frac * (1000 if prec == 6 else 1)
        pos += 16 + caplen
    assert pos == len(records)


def _init() -> None:
    """Load the extension at the first input: only then has atheris.Fuzz() loaded libFuzzer,
    whose hooks the coverage build needs. libFuzzer accepts counters registered late (as for
    any dlopen()ed library)."""
    global N, META, DB
    if os.environ.get("PCAPWIRE_FUZZ_BUILD", "1") != "0":
        _point_hook_at_libfuzzer()
    N = load_native()
    META = struct.Struct(N.META_STRUCT)
    N.sqlite_functions()  # registered last: this build's function wins in DB
    DB = sqlite3.connect(":memory:")


#: IP versions given to pcapwire_ip_text (two that are neither 4 nor 6, and odd ints).
IP_VERSIONS = (4, 6, 4, 6, 0, 41, -4, 2**40 + 4)


def ip_text_reference(version: int, blob: bytes) -> str:
    """pcapwire_ip_text in Python: socket.inet_ntop of the index's form."""
    if version == 4:
        if len(blob) < 4:
            raise ValueError("short")
        return socket.inet_ntop(socket.AF_INET, blob[:4])
    if version == 6:
        return socket.inet_ntop(socket.AF_INET6, blob)  # ValueError unless 16 bytes
    return ""


def check_ip_text(mode: int, body: bytes) -> None:
    assert DB is not None
    version, blob = IP_VERSIONS[mode % 8], body[:(mode >> 3) % 24]
    try:
        want: str | None = ip_text_reference(version, blob)
    except ValueError:
        want = None
    try:
        (got,) = DB.execute("SELECT pcapwire_ip_text(?, ?)", (version, blob)).fetchone()
    except sqlite3.OperationalError as exc:
        assert want is None and "pcapwire_ip_text: an IPv" in str(exc), exc
        return
    assert got == want, (version, blob, got, want)


def merge_step(bufs, pos, fmts, max_out: int, max_record: int):
    """merge_records() in plain Python: (seconds, ns) order, ties to the higher index."""
    pos, out = list(pos), bytearray()

    def head(i):
        b, at = bufs[i], pos[i]
        if len(b) - at < 16:
            return None
        sec, frac, cap, orig = struct.unpack_from(">IIII" if fmts[i] & 2 else "<IIII", b, at)
        if cap > max_record or at + 16 + cap > len(b):
            return None
        ns = frac if fmts[i] & 1 else frac * 1000
        return (sec, ns, -i), struct.pack("<IIII", sec, ns // 1000, cap, orig) + \
            b[at + 16:at + 16 + cap]

    heads = [head(i) for i in range(len(bufs))]
    if None in heads:
        return b"", tuple(pos), heads.index(None)
    while True:
        m = -min(h[0] for h in heads)[2]
        if out and len(out) + len(heads[m][1]) > max_out:
            return bytes(out), tuple(pos), -1
        out += heads[m][1]
        pos[m] += len(heads[m][1])
        heads[m] = head(m)
        if heads[m] is None:
            return bytes(out), tuple(pos), m


def check_merge(mode: int, body: bytes) -> None:
    k = 1 + (mode >> 6)
    fmts, rest = [b & 3 for b in body[:k]], body[k:]
    bufs = [rest[i * len(rest) // k:(i + 1) * len(rest) // k] for i in range(len(fmts))]
    max_out, max_record = (1, 64, 4096, 1 << 20)[(mode >> 4) & 3], (64, 262144)[mode & 1]
    live, pos = list(range(len(bufs))), [0] * len(bufs)
    while live:
        args = [bufs[i] for i in live], [pos[i] for i in live], [fmts[i] for i in live]
        got = N.merge_records(*args, max_out=max_out, max_record=max_record)
        assert got == merge_step(*args, max_out, max_record), (got, args)
        for i, p in zip(live, got[1], strict=True):
            pos[i] = p
        if got[2] >= 0:
            del live[got[2]]


def TestOneInput(data: bytes) -> None:
    if N is None:
        _init()
    if not data:
        return
    mode, body = data[0], data[1:]
    check_merge(mode, body)
    check_ip_text(mode, body)
    postings_check.check(N, body)  # the search index's postings: tests/fuzz/postings_check.py
    skip = mode & 1
    max_batch = (0, 0, 64, 4096)[(mode >> 1) & 3]
    r1, b1 = read(body, 0, skip, max_batch)
    r2, b2 = read(body, PIECES[(mode >> 3) % len(PIECES)], skip, max_batch)
    assert flat(b1) == flat(b2)
    assert r1.errors == r2.errors and r1.warnings == r2.warnings
    assert r1.packets == r2.packets and r1.offset == r2.offset == len(body)
    for b in b1:
        check_batch(b)
    if not b1:
        return
    # one segment per batch key, as the store does
    lt, snap, prec = b1[0][:3]
    seg = bytearray(craft.pcap_header(lt, snap, ns=prec == 9))
    ix = N.SegmentIndexer()
    n = 0
    for b in b1:
        if b[:3] != (lt, snap, prec):
            continue
        ix.add(b[4], len(seg))
        seg += b[3]
        n += len(b[4]) // N.META_SIZE
    seg = bytes(seg)
    flows = ix.finish()
    offsets = sorted(o for f in flows for o in struct.unpack(f"<{len(f[13]) // 4}I", f[13]))
    assert len(offsets) == n == sum(f[9] + f[11] for f in flows)
    assert len(set(offsets)) == n
    out, ts, pos, _ = N.scan(seg, 24, len(seg), tsprec=prec, snaplen=snap, max_out=1 << 30)
    assert pos == len(seg) and len(ts) == 8 * n
    for expr in ("tcp or udp", "ip[0] & 0xf > 5", "vlan and ip6", ""):
        try:
            f = N.Filter(expr, lt, snap)
        except ValueError:
            continue
        done = 0
        while done < len(flows):
            idx = struct.pack("<I", 24) + flows[done][13]
            N.scan(seg, 0, len(idx) // 4, tsprec=prec, snaplen=snap, filter=f, offsets=idx,
                   t_start_ns=flows[done][7], t_end_ns=flows[done][8] + 1, max_out=mode * 64)
            done += 1
    try:  # the raw input as a (corrupt) segment
        N.scan(body, 0, len(body), tsprec=prec, snaplen=snap, max_out=4096)
    except ValueError:
        pass


def seeds(directory: Path) -> None:
    """Corpus captures (first 4 KiB) when the corpus is there, plus crafted ones."""
    corpus = Path(os.environ.get("PCAPWIRE_CORPUS", REPO.parent / "shared" / "corpus")) / "pcaps"
    if corpus.is_dir():
        for p in sorted(corpus.glob("*.pcap*")):
            if p.suffix != ".gz":
                (directory / p.name).write_bytes(b"\x10" + p.read_bytes()[:4096])
    c = craft
    pkt_tcp = c.eth(c.ipv4("10.0.0.1", "10.0.0.2", 6, c.tcp(1234, 80, 0x02)))
    pkt_q = c.eth(c.ipv6("2001:db8::1", "2001:db8::2", 0, c.ext6(44, b"\0" * 6)
                         + c.frag6(17, 0, True, 7) + c.udp(53, 5353, b"x" * 8)), 0x86DD,
                  ((0x88A8, 5), (0x8100, 6)))
    pkt_f = c.eth(c.ipv4("10.0.0.1", "10.0.0.2", 17, b"y" * 16, ident=9, frag=2))
    crafted = {
        "classic": c.pcap_file([pkt_tcp, pkt_q, pkt_f]),
        "big-ns": c.pcap_file([pkt_tcp, pkt_f], ns=True, big=True),
        "sll2": c.pcap_file([c.sll2(c.ipv4("1.1.1.1", "2.2.2.2", 132, c.sctp(1, 2)))], 276),
        "pcapng": c.shb() + c.idb(1, 0, tsresol=9) + c.idb(101, 128, tsresol=0x8A,
                                                           tsoffset=5)
        + c.epb(0, 10**18, pkt_tcp) + c.epb(1, 1 << 40, pkt_f[14:]) + c.spb(pkt_q)
        + c.opb(0, 7, pkt_f),
        "pcapng-be": c.shb(True) + c.idb(1, 65535, big=True) + c.epb(0, 5, pkt_tcp, big=True),
        "raw-ipv4-ipv6": c.pcap_file([pkt_f[14:]], 228) + c.pcap_file([pkt_q[22:]], 229)[24:],
        "vlan-deep": c.pcap_file([c.eth(pkt_tcp[14:], vlans=((0x8100, 1),) * 10)]),
        "pcapng-short-blocks": c.shb() + c.block(1, b"\0" * 4) + c.idb() + c.block(6, b"\0" * 8)
        + c.block(3, b"") + c.block(2, b"\0" * 12) + c.epb(0, 1, pkt_tcp, caplen=5000),
    }
    for name, blob in crafted.items():
        (directory / name).write_bytes(b"\x1a" + blob)
    # merge_records: 3 streams (µs, ns, big-endian µs) of 3 records each, ties included
    recs = [b"".join(struct.pack(o + "IIII", 7, f * m, 14, 60) + pkt_tcp[:14] for m in (1, 2, 2))
            for o, f in (("<", 5), ("<", 5000), (">", 5))]
    (directory / "merge").write_bytes(bytes([0xA0, 0, 1, 2]) + b"".join(recs))


def main() -> None:
    if ASAN and os.environ.get("PCAPWIRE_FUZZ_BUILD", "1") != "0":
        sanitizers.ensure_runtime()  # re-exec with the ASan runtime preloaded
    args = list(sys.argv)
    dirs = [a for a in args[1:] if not a.startswith("-")]
    if not dirs:
        # a corpus that persists between runs (libFuzzer adds what it finds)
        dirs = [str(Path(tempfile.gettempdir()) / "pcapwire-fuzz-corpus")]
        args.append(dirs[0])
    if not Path(dirs[0]).is_file():  # a file: run that input (e.g. a crash) and exit
        Path(dirs[0]).mkdir(parents=True, exist_ok=True)
        seeds(Path(dirs[0]))  # fixed names: re-seeding is idempotent
    if os.environ.get("PCAPWIRE_FUZZ_BUILD", "1") != "0":
        build_instrumented()  # compile before libFuzzer's clock starts
    atheris.Setup(args, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
