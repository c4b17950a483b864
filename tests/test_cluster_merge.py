"""The merge of sensors' answers (:mod:`pcapwire.cluster.merge`) against the real
``mergecap -F pcap``: corpus captures split into parts (by time, and record by record at
random so the parts interleave), re-encoded big-endian or with nanoseconds, fed in random
small pieces; ties; header-only and empty inputs; an input that raises or breaks off
mid-record; link types that differ; the record-size limit; the output piece size. And the
native record loop (``_native.merge_records``) against a Python statement of the same
step on random records of every format, ties, truncated and over-long records."""

from __future__ import annotations

import asyncio
import random
import struct
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from conftest import corpus_file
from pcaputil import read_records
from pcapwire import _native
from pcapwire.cluster.merge import MAX_RECORD_BYTES, OUTPUT_SNAPLEN, merge_streams
from pcapwire.errors import CaptureFormatError
from pcapwire.query.spec import DEFAULT_CHUNK_BYTES

# -- inputs -------------------------------------------------------------------------------
US, NS = 0xA1B2C3D4, 0xA1B23C4D


def pcap(records: Sequence[bytes], header: bytes, order: str = "<", ns: bool = False) -> bytes:
    """A classic pcap of ``records`` (little-endian, in the precision of ``header``) under
    ``header``'s snaplen and link type, written in byte order ``order``; with ``ns``,
    microsecond timestamps become nanoseconds."""
    magic, snaplen, linktype = struct.unpack_from("<I12xII", header)
    scale = 1000 if ns and magic == US else 1
    out = [struct.pack(order + "IHHiIII", NS if ns else magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        sec, frac, caplen, origlen = struct.unpack_from("<IIII", rec)
        out.append(struct.pack(order + "IIII", sec, frac * scale, caplen, origlen) + rec[16:])
    return b"".join(out)


def split_by_time(data: bytes, parts: int) -> list[bytes]:
    """``parts`` captures of consecutive time ranges (as many records each)."""
    header, recs = read_records(data)
    size = -(-len(recs) // parts)
    return [pcap(recs[i * size:(i + 1) * size], header) for i in range(parts)]


def split_at_random(data: bytes, parts: int, seed: int) -> list[bytes]:
    """``parts`` captures, each record going to one picked at random (so they interleave)."""
    header, recs = read_records(data)
    rng = random.Random(seed)
    out: list[list[bytes]] = [[] for _ in range(parts)]
    for rec in recs:
        out[rng.randrange(parts)].append(rec)
    return [pcap(r, header) for r in out]


async def pieces(data: bytes, seed: int, fail: Exception | None = None
                 ) -> AsyncIterator[bytes]:
    """``data`` in random pieces of 1..700 bytes, then ``fail`` raised if given."""
    rng, pos = random.Random(seed), 0
    while pos < len(data):
        n = rng.randint(1, 700)
        yield data[pos:pos + n]
        pos += n
    if fail is not None:
        raise fail


def mergecap(tmp_path: Path, inputs: Sequence[bytes]) -> subprocess.CompletedProcess[bytes]:
    paths = []
    for i, data in enumerate(inputs):
        paths.append(tmp_path / f"in{i}.pcap")
        paths[-1].write_bytes(data)
    return subprocess.run(["mergecap", "-F", "pcap", "-w", "-", *map(str, paths)],
                          capture_output=True, check=False)


def merged_by_mergecap(tmp_path: Path, inputs: Sequence[bytes]) -> bytes:
    done = mergecap(tmp_path, inputs)
    assert done.returncode == 0, done.stderr
    return done.stdout


def merge(streams: Sequence[AsyncIterator[bytes]], chunk_bytes: int = DEFAULT_CHUNK_BYTES
          ) -> tuple[list[bytes], list[tuple[str, str]]]:
    """(output pieces, failures) of merging ``streams``, named s0, s1, …"""
    failures: list[tuple[str, str]] = []

    async def run() -> list[bytes]:
        names = [f"s{i}" for i in range(len(streams))]
        return [p async for p in merge_streams(streams, names, chunk_bytes=chunk_bytes,
                                               on_failure=lambda *f: failures.append(f))]

    return asyncio.run(run()), failures


def merge_bytes(inputs: Sequence[bytes], seed: int = 0, chunk_bytes: int = DEFAULT_CHUNK_BYTES
                ) -> bytes:
    out, failures = merge([pieces(d, seed + i) for i, d in enumerate(inputs)], chunk_bytes)
    assert failures == []
    return b"".join(out)


def corpus(case: str) -> bytes:
    return corpus_file(case).read_bytes()


# -- byte identity with mergecap ------------------------------------------------------------
CASES = ["zeek-http-206-ranges-two-connections", "suricata-http-pdf-filestore",
         "zeek-smtp-two-messages", "zeek-linux-sll2", "zeek-pcap-nanosecond-http-to-ssh"]


@pytest.mark.parametrize("case", CASES)
def test_parts_merge_as_mergecap_merges_them(tmp_path: Path, case: str) -> None:
    data = corpus(case)
    records = len(read_records(data)[1])
    for seed, parts in enumerate([split_by_time(data, 3), split_at_random(data, 3, seed=7),
                                  split_at_random(data, 5, seed=8)]):
        expected = merged_by_mergecap(tmp_path, parts)
        assert merge_bytes(parts, seed=seed) == expected
        assert len(read_records(expected)[1]) == records
        assert struct.unpack_from("<IHHiIII", expected) == (
            0xA1B2C3D4, 2, 4, 0, 0, OUTPUT_SNAPLEN, struct.unpack_from("<I", data, 20)[0])


def test_big_endian_and_nanosecond_inputs_are_written_little_endian_microseconds(
        tmp_path: Path) -> None:
    data = corpus("zeek-http-206-ranges-two-connections")
    header, recs = read_records(data)
    parts = split_at_random(data, 3, seed=3)
    parts = [parts[0], pcap(read_records(parts[1])[1], header, order=">"),
             pcap(read_records(parts[2])[1], header, ns=True)]
    out = merge_bytes(parts)
    assert out == merged_by_mergecap(tmp_path, parts)
    assert sorted(read_records(out)[1]) == sorted(recs)  # every record back as it was


def test_nanoseconds_order_the_merge_and_are_truncated_to_microseconds(tmp_path: Path) -> None:
    """A µs record (input 0) at the µs of a ns record 999 ns past it (input 1): the µs one
    is earlier, so it goes first although a tie at µs would have put input 1 first; the ns
    one is written truncated to the same µs."""
    data = corpus("zeek-pcap-nanosecond-http-to-ssh")
    header, recs = read_records(data)
    sec, ns = struct.unpack_from("<II", recs[0])
    late = struct.pack("<II", sec, ns + 999) + recs[0][8:]
    same_us = struct.pack("<II", sec, ns // 1000) + recs[1][8:]
    parts = [pcap([same_us], struct.pack("<I", US) + header[4:]), pcap([late, *recs[1:]], header)]
    out = merge_bytes(parts)
    assert out == merged_by_mergecap(tmp_path, parts)
    assert read_records(out)[1][:2] == [same_us, struct.pack("<II", sec, ns // 1000)
                                        + recs[0][8:]]


def test_ties_go_to_the_higher_input_first_and_keep_each_inputs_order(tmp_path: Path) -> None:
    """Three captures retimed onto the same two instants: every record of the last input
    at an instant comes before those of the one before it; inside one input, file order."""
    inputs, header = [], b""
    for case in ["zeek-http-get", "zeek-http-get-gzip", "zeek-smtp-bdat-png"]:
        header, recs = read_records(corpus(case))
        recs = [struct.pack("<II", 1_700_000_000 + (j >= 7), 0) + r[8:]
                for j, r in enumerate(recs[:10])]
        inputs.append(recs)
    parts = [pcap(r, header) for r in inputs]
    out = merge_bytes(parts)
    assert out == merged_by_mergecap(tmp_path, parts)
    a, b, c = inputs
    assert read_records(out)[1] == c[:7] + b[:7] + a[:7] + c[7:] + b[7:] + a[7:]


# -- empty, failing and refused inputs ----------------------------------------------------
def test_header_only_inputs_add_no_record(tmp_path: Path) -> None:
    data = corpus("zeek-smtp-two-messages")
    empty = pcap([], struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 70000, 1))
    parts = [empty, *split_at_random(data, 2, seed=1), empty]
    assert merge_bytes(parts) == merged_by_mergecap(tmp_path, parts)
    assert merge_bytes([empty, empty]) == merged_by_mergecap(tmp_path, [empty, empty])
    assert len(merged_by_mergecap(tmp_path, [empty])) == 24


def test_an_input_without_a_header_is_reported_and_the_rest_merged(tmp_path: Path) -> None:
    data = corpus("zeek-http-pipelined-5-files")
    a, b = split_by_time(data, 2)
    pcapng = corpus("zeek-pcapng-two-interfaces")
    out, failures = merge([pieces(a, 1), pieces(b"", 2), pieces(b[:23], 3),
                           pieces(pcapng, 4), pieces(b, 5)])
    assert b"".join(out) == merged_by_mergecap(tmp_path, [a, b])
    assert failures == [
        ("s1", "s1 at byte 0: 0 bytes is shorter than a pcap header (24 bytes)"),
        ("s2", "s2 at byte 0: 23 bytes is shorter than a pcap header (24 bytes)"),
        ("s3", "s3 at byte 0: pcapng; engine streams take classic pcap chunks (pcapwire "
               "queries emit classic pcap)")]
    assert merge([pieces(b"", 1)]) == ([], [(
        "s0", "s0 at byte 0: 0 bytes is shorter than a pcap header (24 bytes)")])


def cut_inside_record(data: bytes, nth: int) -> tuple[bytes, bytes, int]:
    """(data cut 5 bytes into record ``nth``, the capture of the records before it, the
    offset of record ``nth``)."""
    header, recs = read_records(data)
    at = 24 + sum(len(r) for r in recs[:nth])
    return data[:at + 5], pcap(recs[:nth], header), at


def test_an_input_that_raises_mid_stream_is_dropped_and_the_others_merged(
        tmp_path: Path) -> None:
    """A sensor gone mid-record: its whole records stay in the output, the rest of the
    merge equals mergecap over what it did deliver; the failure is reported once."""
    data = corpus("zeek-http-206-ranges-two-connections")
    parts = split_at_random(data, 3, seed=11)
    cut, delivered, _ = cut_inside_record(parts[1], 100)
    out, failures = merge([pieces(parts[0], 1),
                           pieces(cut, 2, fail=ConnectionResetError("sensor gone")),
                           pieces(parts[2], 3)], chunk_bytes=8192)
    assert failures == [("s1", "sensor gone")]
    expected = merged_by_mergecap(tmp_path, [parts[0], delivered, parts[2]])
    assert b"".join(out) == expected
    assert len(read_records(expected)[1]) == len(read_records(data)[1]) - (
        len(read_records(parts[1])[1]) - 100)


def test_an_input_that_ends_inside_a_record_is_reported_with_its_offset(
        tmp_path: Path) -> None:
    data = corpus("zeek-smtp-two-messages")
    parts = split_by_time(data, 2)
    cut, delivered, at = cut_inside_record(parts[0], 30)
    out, failures = merge([pieces(cut, 1), pieces(parts[1], 2)])
    assert failures == [("s0", f"s0 at byte {at}: stream ended inside a record (5 bytes of "
                               "it arrived)")]
    assert b"".join(out) == merged_by_mergecap(tmp_path, [delivered, parts[1]])
    # mergecap stops at the cut input altogether; the merge goes on with the others
    assert mergecap(tmp_path, [cut, parts[1]]).returncode != 0


def test_inputs_of_different_link_types_are_refused_naming_them(tmp_path: Path) -> None:
    eth, sll2 = corpus("zeek-http-get"), corpus("zeek-linux-sll2")
    assert mergecap(tmp_path, [eth, sll2]).returncode != 0
    out: list[bytes] = []

    async def run() -> None:
        async for piece in merge_streams([pieces(eth, 1), pieces(eth, 2), pieces(sll2, 3)],
                                         ["site-a", "site-b", "site-c"],
                                         on_failure=lambda *f: pytest.fail(str(f))):
            out.append(piece)

    with pytest.raises(CaptureFormatError) as err:
        asyncio.run(run())
    assert str(err.value) == (
        "site-c at byte 0: link type 276 differs from link type 1 of site-a; one classic "
        "pcap holds one link type (inputs: site-a: 1, site-b: 1, site-c: 276)")
    assert out == []  # refused before the first byte


def test_records_up_to_the_limit_merge_and_a_larger_one_is_reported(tmp_path: Path) -> None:
    """MAX_RECORD_BYTES is mergecap's own limit: a record of that size merges the same,
    one byte more is refused by both (here with the input's name and the offset)."""
    data = corpus("zeek-http-get")
    header, recs = read_records(data)
    sec, usec = struct.unpack_from("<II", recs[5])

    def big(size: int) -> bytes:
        return pcap([*recs[:3], struct.pack("<IIII", sec, usec, size, size) + b"\x01" * size],
                    header)

    fits = big(MAX_RECORD_BYTES)
    assert merge_bytes([data, fits]) == merged_by_mergecap(tmp_path, [data, fits])
    over = big(MAX_RECORD_BYTES + 1)
    assert b"bigger than maximum of 262144" in mergecap(tmp_path, [data, over]).stderr
    out, failures = merge([pieces(data, 1), pieces(over, 2)])
    at = 24 + sum(len(r) for r in recs[:3])
    assert failures == [("s1", f"s1 at byte {at}: record of {MAX_RECORD_BYTES + 1} captured "
                               f"bytes, over the limit of {MAX_RECORD_BYTES} (MAX_RECORD_BYTES)")]
    assert b"".join(out) == merged_by_mergecap(tmp_path, [data, pcap(recs[:3], header)])


# -- output pieces ------------------------------------------------------------------------
def test_pieces_hold_whole_records_within_chunk_bytes(tmp_path: Path) -> None:
    data = corpus("zeek-http-206-ranges-two-connections")
    parts = split_at_random(data, 3, seed=5)
    expected = merged_by_mergecap(tmp_path, parts)
    for chunk_bytes in (DEFAULT_CHUNK_BYTES, 4096, 100):
        out, failures = merge([pieces(p, 9) for p in parts], chunk_bytes)
        assert failures == [] and b"".join(out) == expected
        for i, piece in enumerate(out):
            recs = read_records(piece if i == 0 else b"\0" * 24 + piece)[1]  # whole records
            assert len(piece) <= chunk_bytes or len(recs) == 1
    # the pieces come as the inputs do, well before the end: more than size / chunk_bytes
    out, _ = merge([pieces(p, 9) for p in parts])
    assert len(out) > len(expected) // DEFAULT_CHUNK_BYTES + 1


def test_the_header_leaves_once_every_input_has_sent_its_header() -> None:
    """Inputs fed by hand: the header comes out before any record is asked for, and no
    record before every input holds one (here: before input b is asked for its first)."""
    data = corpus("zeek-http-get")
    header, recs = read_records(data)

    async def run() -> list[bytes]:
        queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue(), asyncio.Queue()]
        asked = [0, 0]
        b_waits = asyncio.Event()

        async def stream(i: int) -> AsyncIterator[bytes]:
            while True:
                asked[i] += 1
                if i == 1 and asked[i] == 2:
                    b_waits.set()
                if (piece := await queues[i].get()) is None:
                    return
                yield piece

        merged = merge_streams([stream(0), stream(1)], ["a", "b"], on_failure=print)
        for q in queues:
            q.put_nowait(header)
        first = await anext(merged)
        assert asked == [1, 1]  # each input was read for its header only
        queues[0].put_nowait(b"".join(recs))
        queues[0].put_nowait(None)
        rest = asyncio.ensure_future(anext(merged))
        await b_waits.wait()
        assert not rest.done()  # input b has no record yet: nothing is final
        queues[1].put_nowait(None)
        return [first, await rest] + [p async for p in merged]

    out = asyncio.run(run())
    assert out[0] == struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, OUTPUT_SNAPLEN, 1)
    assert b"".join(out[1:]) == b"".join(recs)


def test_names_must_match_streams() -> None:
    async def run() -> None:
        async for _ in merge_streams([pieces(b"", 1), pieces(b"", 2)], ["a"],
                                     on_failure=print):
            pass

    with pytest.raises(ValueError, match="2 streams but 1 names"):
        asyncio.run(run())


# -- the native record loop against a Python statement of it -------------------------------
Step = tuple[bytes, tuple[int, ...], int]


def reference_step(bufs: Sequence[bytes], positions: Sequence[int], formats: Sequence[int],
                   max_out: int, max_record: int) -> Step:
    """What ``_native.merge_records`` promises, written plainly: (seconds, ns) order, ties to
    the higher index, headers rewritten ``<IIII`` in µs, stop at the first input without a
    whole record within ``max_record`` (its index) or before the piece would pass
    ``max_out`` (-1; one record always goes)."""
    pos, out = list(positions), bytearray()

    def head(i: int) -> tuple[tuple[int, int], bytes] | None:
        buf, at = bufs[i], pos[i]
        if len(buf) - at < 16:
            return None
        order = ">" if formats[i] & _native.MERGE_SWAPPED else "<"
        sec, frac, caplen, origlen = struct.unpack_from(order + "IIII", buf, at)
        if caplen > max_record or at + 16 + caplen > len(buf):
            return None
        ns = frac if formats[i] & _native.MERGE_NANO else frac * 1000
        return (sec, ns), struct.pack("<IIII", sec, ns // 1000, caplen, origlen) + bytes(
            buf[at + 16:at + 16 + caplen])

    heads = [head(i) for i in range(len(bufs))]
    for i, h in enumerate(heads):
        if h is None:
            return b"", tuple(pos), i
    while True:
        m = min(range(len(bufs)), key=lambda i: (heads[i][0], -i))  # type: ignore[index]
        rec = heads[m][1]  # type: ignore[index]
        if out and len(out) + len(rec) > max_out:
            return bytes(out), tuple(pos), -1
        out += rec
        pos[m] += len(rec)
        heads[m] = head(m)
        if heads[m] is None:
            return bytes(out), tuple(pos), m


def random_input(rng: random.Random, fmt: int, max_record: int) -> bytes:
    """Records of a few seconds and fractions (so inputs tie, also across µs and ns, and
    fractions reach past one second), then maybe a truncated or over-long one."""
    order = ">" if fmt & _native.MERGE_SWAPPED else "<"
    ns = fmt & _native.MERGE_NANO
    fracs = [0, 1, 999, 1000, 1001, 999_999, 2**32 - 1] if ns else [0, 1, 999_999, 2**32 - 1]
    out = bytearray()
    for _ in range(rng.randint(0, 30)):
        caplen = rng.choice([0, 1, 7, rng.randint(0, max_record), max_record])
        out += struct.pack(order + "IIII", rng.choice([1, 2, 2**32 - 1]), rng.choice(fracs),
                           caplen, rng.getrandbits(32)) + rng.randbytes(caplen)
    end = rng.random()
    if end < 0.2:  # a header saying one byte too many
        out += struct.pack(order + "IIII", 1, 0, max_record + 1, 0) + b"\0" * (max_record + 1)
    elif end < 0.5:  # a record cut anywhere
        rec = struct.pack(order + "IIII", 1, 0, 9, 9) + b"x" * 9
        out += rec[:rng.randint(1, len(rec) - 1)]
    return bytes(out)


def test_native_merge_step_equals_its_python_statement_on_random_records() -> None:
    """Each input runs until the step stops at it (then it is dropped, as the merge drops
    an input that ends), every call compared: output, positions and the stopping input."""
    rng = random.Random(14)
    calls = 0
    for _ in range(300):
        max_record = rng.choice([0, 5, 64])
        formats = [rng.randrange(4) for _ in range(rng.randint(1, 5))]
        bufs = [random_input(rng, f, max_record) for f in formats]
        kinds = [bytes, bytearray, memoryview]
        live, pos = list(range(len(bufs))), [0] * len(bufs)
        max_out = rng.choice([1, 40, 200, 10**6])
        while live:
            args = ([kinds[i % 3](bufs[i]) for i in live], [pos[i] for i in live],
                    [formats[i] for i in live])
            got = _native.merge_records(*args, max_out=max_out, max_record=max_record)
            assert got == reference_step(*args, max_out, max_record)
            calls += 1
            for i, p in zip(live, got[1], strict=True):
                pos[i] = p
            if got[2] >= 0:
                del live[got[2]]
    assert calls > 1000


def test_native_merge_step_refuses_bad_arguments() -> None:
    rec = struct.pack("<IIII", 1, 2, 3, 3) + b"abc"
    step = _native.merge_records
    with pytest.raises(ValueError, match="2 bufs, 1 positions and 2 formats"):
        step([rec, rec], [0], [0, 0], max_out=100, max_record=10)
    with pytest.raises(ValueError, match=r"position 20 of input 1 outside its buffer \(0..19\)"):
        step([rec, rec], [0, 20], [0, 0], max_out=100, max_record=10)
    with pytest.raises(ValueError, match="position -1 of input 0"):
        step([rec], [-1], [0], max_out=100, max_record=10)
    with pytest.raises(ValueError, match="format 4 of input 0"):
        step([rec], [0], [4], max_out=100, max_record=10)
    with pytest.raises(ValueError, match="max_out must be positive, not 0"):
        step([rec], [0], [0], max_out=0, max_record=10)
    with pytest.raises(ValueError, match="max_record -1 outside"):
        step([rec], [0], [0], max_out=100, max_record=-1)
    with pytest.raises(TypeError):
        step(["text"], [0], [0], max_out=100, max_record=10)
    assert step([], [], [], max_out=1, max_record=10) == (b"", (), -1)
    # caplen 3: within a limit of 3, over one of 2 (stop at once, nothing taken)
    assert step([rec], [0], [0], max_out=100, max_record=3) == (rec, (19,), 0)
    assert step([rec], [0], [0], max_out=100, max_record=2) == (b"", (0,), 0)


def test_native_record_count_walks_headers_and_reports_where_the_next_starts() -> None:
    """``_native.count_records`` (the central's packet count of its merged stream): the
    records whose whole header is in the buffer, and where the next record starts, past the
    end when the last one continues in the next piece; either byte order."""
    count = _native.count_records
    recs = [struct.pack("<IIII", 1, 2, n, n) + bytes(n) for n in (3, 0, 10)]
    data = b"".join(recs)  # 19 + 16 + 26 = 61 bytes
    assert count(data, 0) == (3, 61)
    assert count(memoryview(data), 19) == (2, 61)  # from the second record's header
    assert count(bytearray(data[:-1]), 0) == (3, 61)  # the last record's bytes continue
    assert count(data[:35 + 15], 0) == (2, 35)  # 15 of the third header's 16 bytes
    assert count(data[:35 + 16], 0) == (3, 61)  # its header whole: counted
    assert count(data, 70) == (0, 70)  # a record continuing past this piece
    assert count(b"", 0) == (0, 0)
    big = b"".join(struct.pack(">IIII", 1, 2, n, n) + bytes(n) for n in (3, 0, 10))
    assert count(big, 0, swapped=True) == (3, 61)
    assert count(big, 0) == (1, 16 + 3 * 2**24)  # read little-endian: one huge record
    with pytest.raises(ValueError, match="start must not be negative, not -1"):
        count(data, -1)
    with pytest.raises(TypeError):
        count("text", 0)


def test_the_first_piece_of_records_keeps_to_its_own_limit() -> None:
    """A relay merging into large pieces still lets its first records go in a piece of the
    query's chunk size: ``first_chunk_bytes`` holds for the first piece of records only."""
    header, recs = read_records(corpus("zeek-http-206-ranges-two-connections"))

    def packed(first: int, rest: int) -> list[bytes]:  # greedy, as the merge cuts
        out, cur, limit = [], b"", first
        for rec in recs:
            if cur and len(cur) + len(rec) > limit:
                out, cur, limit = [*out, cur], b"", rest
            cur += rec
        return [*out, cur]

    async def whole() -> AsyncIterator[bytes]:  # never waits: only the limits cut pieces
        yield header + b"".join(recs)

    async def run(**limits: int) -> list[bytes]:
        return [p async for p in merge_streams([whole()], ["a"], on_failure=print, **limits)]

    out = asyncio.run(run(chunk_bytes=65536, first_chunk_bytes=4096))
    assert out[1:] == packed(4096, 65536) and len(out[1]) <= 4096 < len(out[2])
    assert len(out) == 1 + len(packed(4096, 65536)) > 3
    assert asyncio.run(run(chunk_bytes=4096))[1:] == packed(4096, 4096)
    for bad in ({"chunk_bytes": 0}, {"first_chunk_bytes": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be positive, not 0"):
            asyncio.run(run(**bad))
