"""Compressed segments (issue 16): the seekable layout, `zstd -d` restoring the original,
and every query answering byte for byte what the same store answers uncompressed (the
corpus, generated edge cases, generated traffic)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
from array import array
from pathlib import Path

import pytest
from captureutil import with_times
from compressutil import compress_all, query_specs, records_at
from conftest import CASES, corpus_file
from pcaputil import tcpdump
from pcapwire.errors import QueryError
from pcapwire.query import QuerySpec
from pcapwire.store import Store
from pcapwire.store.reader import compressed_path, export_plain, segment_pieces
from pcapwire.store.zstdseek import (
    MAX_FRAMES,
    SEEKABLE_MAGIC,
    SKIPPABLE_MAGIC,
    SeekableReader,
    SeekableWriter,
    StoredSegmentError,
    read_seek_table,
)
from pcapwire.synth import generate
from pcapwire.testing.craft import Capture

CLI = [sys.executable, "-m", "pcapwire.cli"]


def _answers(store: Store, spec: QuerySpec) -> bytes | str:
    try:
        return store.query_engine().to_bytes(spec)
    except QueryError as exc:  # a BPF a link type refuses: refused the same way
        return f"QueryError: {exc}"


def _twins(tmp: Path, inputs: list[Path], frame_bytes: int, **ingest: object
           ) -> tuple[Store, Store, dict[str, str]]:
    """The same inputs ingested into a plain store and one compressed afterwards; the
    plain files' SHA-256 by catalog path."""
    plain, packed = Store(tmp / "plain"), Store(tmp / "packed")
    plain.ingest(inputs, **ingest)
    packed.ingest(inputs, **ingest)
    shas = {s.path: hashlib.sha256((packed.root / s.path).read_bytes()).hexdigest()
            for s in packed.catalog.segments()}
    done = compress_all(packed.root, frame_bytes)
    assert len(done) == len(shas) and all(d.sha256_plain == shas[d.path] for d in done)
    assert not list((packed.root / "segments").rglob("*.pcap"))
    return plain, packed, shas


def _compare(plain: Store, packed: Store) -> int:
    specs = query_specs(plain)
    def shape(store: Store) -> list[tuple[int, int, int, int]]:
        return [(s.linktype, s.first_ns, s.packets, s.size) for s in store.catalog.segments()]

    assert shape(plain) == shape(packed)
    for spec in specs:
        assert _answers(packed, spec) == _answers(plain, spec), spec
    return len(specs)


@pytest.fixture(scope="module")
def corpus_twins(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("corpus")
    plain, packed, shas = _twins(tmp, [corpus_file(c) for c in CASES], frame_bytes=4096)
    yield plain, packed, shas
    plain.close()
    packed.close()


def test_corpus_queries_are_byte_identical(corpus_twins) -> None:
    plain, packed, _ = corpus_twins
    assert _compare(plain, packed) >= 200
    # and the oracle's BPF queries (tcpdump's answers on the corpus) over the whole store
    for case in CASES.values():
        for q in case.get("computed", {}).get("bpf", {}).get("queries", []):
            spec = QuerySpec(bpf=q["bpf"])
            assert _answers(packed, spec) == _answers(plain, spec), q["bpf"]


def test_zstd_cli_restores_each_segment_byte_for_byte(corpus_twins, tmp_path: Path) -> None:
    _, packed, shas = corpus_twins
    for rel, sha in shas.items():
        out = tmp_path / "restored.pcap"
        subprocess.run(["zstd", "-q", "-f", "-d", str(compressed_path(packed.root, rel)),
                        "-o", str(out)], check=True)
        assert hashlib.sha256(out.read_bytes()).hexdigest() == sha, rel


def test_layout_is_the_zstd_seekable_format(corpus_twins) -> None:
    """Read with struct alone: frames, then a skippable frame holding 8-byte entries and
    the footer (frames, descriptor 0, seekable magic); frames are cut on records."""
    _, packed, _ = corpus_twins
    seg = max(packed.catalog.segments(), key=lambda s: s.size)
    data = compressed_path(packed.root, seg.path).read_bytes()
    nframes, descriptor, magic = struct.unpack("<IBI", data[-9:])
    assert (magic, descriptor) == (SEEKABLE_MAGIC, 0) and nframes > 10
    table_len = nframes * 8 + 9
    skip_magic, skip_len = struct.unpack_from("<II", data, len(data) - table_len - 8)
    assert (skip_magic, skip_len) == (SKIPPABLE_MAGIC, table_len)
    entries = [struct.unpack_from("<II", data, len(data) - table_len + 8 * i)
               for i in range(nframes)]
    assert sum(c for c, _ in entries) == len(data) - table_len - 8
    assert sum(d for _, d in entries) == seg.size
    plain = subprocess.run(["zstd", "-d", "-c"], input=data, capture_output=True,
                           check=True).stdout
    boundaries, at = set(records_at(plain)), 0
    for _c, d in entries[:-1]:
        at += d
        assert at in boundaries  # every frame ends where a record ends


def test_generated_traffic_store_is_byte_identical(tmp_path: Path) -> None:
    cap = tmp_path / "synth.pcap"
    generate(cap, 6 * 2**20, seed=16)
    plain, packed, _ = _twins(tmp_path, [cap], frame_bytes=64 * 2**10,
                              segment_max_bytes=2 * 2**20)
    with plain, packed:
        assert len(packed.catalog.segments()) == 3
        _compare(plain, packed)
        expr = "tcp[13] & 2 != 0"
        assert packed.query_engine().to_bytes(QuerySpec(bpf=expr)) == tcpdump(cap, expr)


def test_generated_edge_cases_are_byte_identical(tmp_path: Path) -> None:
    """Records larger than a frame (each is a frame of its own), nanosecond timestamps,
    two inputs whose times overlap (merged), a single-packet segment."""
    cap = Capture(step_us=7)
    for i in range(300):
        size = (60, 1400, 4000, 4200, 8900)[i % 5]
        cap.udp(f"10.9.0.{i % 7 + 1}", 5000 + i % 3, "10.9.1.1", 53, bytes([i % 251]) * size)
    jumbo = tmp_path / "jumbo.pcap"
    jumbo.write_bytes(cap.pcap())
    nano = tmp_path / "nano.pcap"
    with_times(jumbo, nano, 1_700_000_000 * 10**9 + 3, 5_003)  # overlaps jumbo.pcap's times
    one = tmp_path / "one.pcap"
    one.write_bytes(cap.pcap()[:24] + cap.records[1])
    plain, packed, _ = _twins(tmp_path, [jumbo, nano, one], frame_bytes=4096)
    with plain, packed:
        _compare(plain, packed)
        for seg in packed.catalog.segments():
            with SeekableReader(compressed_path(packed.root, seg.path)) as reader:
                frames = reader.table.frames
                plain_bytes = b"".join(reader.read_frame(f) for f in frames)
            starts = set(records_at(plain_bytes)) | {0}
            for f in frames:
                assert f.plain_offset in starts
                body = plain_bytes[f.plain_offset:f.plain_end]
                one_record = f.plain_offset + 16 + struct.unpack_from(
                    "<I", plain_bytes, max(f.plain_offset, 24) + 8)[0] + (
                        24 if f.plain_offset == 0 else 0) == f.plain_end
                assert len(body) <= 4096 or one_record


def test_seek_table_errors_name_the_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "x.zst"
    with open(path, "wb") as fh:
        w = SeekableWriter(fh, 3)
        w.add_frame(b"a" * 1000)
        w.add_frame(b"b" * 10)
        w.finish()
    good = path.read_bytes()
    with open(path, "rb") as fh:
        table = read_seek_table(fh, path)
    assert [(f.plain_offset, f.plain_size) for f in table.frames] == [(0, 1000), (1000, 10)]
    cases = {
        b"xyz": "too short for a seekable zstd file",
        good[:-4] + b"\0\0\0\0": "not the seekable magic",
        good[:-5] + b"\x04" + good[-4:]: "reserved bits set",
        good[:-9] + struct.pack("<IBI", MAX_FRAMES + 1, 0, SEEKABLE_MAGIC):
            f"more than the format's limit of {MAX_FRAMES}",
        good[:-9] + struct.pack("<IBI", 10**6, 0, SEEKABLE_MAGIC): "larger than the file",
        good[:3] + good: "the frames end at byte",
    }
    for data, reason in cases.items():
        path.write_bytes(data)
        with pytest.raises(StoredSegmentError) as err, open(path, "rb") as fh:
            read_seek_table(fh, path)
        assert str(path) in str(err.value) and reason in str(err.value)


def test_reader_pieces_from_any_start_and_offsets_in_any_order(corpus_twins) -> None:
    """What a follow (a scan from a byte on) and an indexed read (offsets, grouped by
    frame in their order) get from a compressed segment: the plain file's bytes."""
    _, packed, _ = corpus_twins
    seg = max(packed.catalog.segments(), key=lambda s: s.size)
    buf = io.BytesIO()
    export_plain(packed.root, seg, buf)
    plain = buf.getvalue()
    offsets = sorted(records_at(plain))
    for start in [*offsets[::max(1, len(offsets) // 7)], len(plain)]:
        got = b"".join(bytes(p.buf[p.start:p.end])
                       for p in segment_pieces(packed.root, seg, None, start))
        assert got == plain[start:]
    picks = offsets[5::11] + offsets[3::17][::-1]
    seen = []
    for p in segment_pieces(packed.root, seg, array("I", picks).tobytes()):
        rebased = array("I")
        rebased.frombytes(p.offsets or b"")
        seen += [p.base + x for x in rebased[p.start:p.end]]
        for x in rebased:
            assert p.buf[x:x + 16] == plain[p.base + x:p.base + x + 16]
    assert seen == picks


def test_extraction_and_hold_evidence_are_byte_identical(corpus_twins, tmp_path: Path) -> None:
    """Carving and a legal hold read the compressed store through the same engine: the
    same files, and evidence that is the same plain pcap."""
    plain, packed, _ = corpus_twins
    outs = []
    for store in (plain, packed):
        cwd = tmp_path / store.root.name
        cwd.mkdir()
        subprocess.run([*CLI, "--data-dir", str(store.root), "extract", "--port", "80",
                        "--out", "out"], cwd=cwd, check=True, capture_output=True)
        hold = json.loads(subprocess.run(
            [*CLI, "--data-dir", str(store.root), "hold", "create", "--case", "cz",
             "--reason", "test", "--port", "25", "--end", "2030-01-01", "--json"],
            check=True, capture_output=True, text=True).stdout)
        evidence = [(store.root / p["path"]).read_bytes() for p in hold["parts"]]
        outs.append(({str(p.relative_to(cwd)): p.read_bytes() for p in cwd.rglob("*")
                      if p.is_file()}, evidence))
    assert len(outs[0][0]) > 20 and outs[0][1] and outs[0][1][0][:4] == b"\xd4\xc3\xb2\xa1"
    assert outs[0] == outs[1]
