"""HTTP 206 ``multipart/byteranges``: every part is a range of the file, joined with the
ranges of other responses and connections (pcapwire.extract.byteranges, ranges).

Captures are written here, packet by packet (Ethernet/IPv4/TCP with real checksums),
without pcapwire's own code, then carved through pcapwire's reassembler; the last test
captures real traffic (a local server answering Range requests, urllib as the client,
tcpdump on loopback) and runs ``pcapwire extract`` on it.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import urllib.request
from pathlib import Path

import pytest
from e2e.capture import LoopbackCapture, tcpdump_available
from e2e.servers import BYTERANGES_BOUNDARY, HttpContent, http_server
from pcapwire.cli import main
from pcapwire.extract import byteranges
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.buffer import CarvedFile
from pcapwire.extract.carve import Carver, CarveResult
from pcapwire.extract.httpfiles import HttpSession
from pcapwire.extract.source import carve_pcap
from pcapwire.records import FileRecord, FlowKey
from pcapwire.testing.craft import inet_checksum

WHOLE = random.Random(7).randbytes(30_000)
SHA = hashlib.sha256(WHOLE).hexdigest()
BOUNDARY = "3d6b6a416f9b5"
ETAG = '"v1-30000"'
Events = list[tuple[str, bytes]]


# ---- HTTP bytes -------------------------------------------------------------------------
def request(path: str = "/file.bin", rng: str = "bytes=0-") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: files.example\r\nRange: {rng}\r\n\r\n".encode()


def part(first: int, last: int, total: int | str = len(WHOLE), data: bytes | None = None,
         headers: str | None = None) -> bytes:
    head = (headers if headers is not None
            else f"Content-Type: application/octet-stream\r\n"
                 f"Content-Range: bytes {first}-{last}/{total}\r\n")
    body = WHOLE[first:last + 1] if data is None else data
    return f"--{BOUNDARY}\r\n{head}\r\n".encode() + body + b"\r\n"


def multipart(*parts: bytes, close: bool = True, length: int | None = None) -> bytes:
    body = b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if close else b"")
    return (f"HTTP/1.1 206 Partial Content\r\nETag: {ETAG}\r\n"
            f"Content-Type: multipart/byteranges; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
            ).encode() + body


def plain(first: int, last: int) -> bytes:
    body = WHOLE[first:last + 1]
    return (f"HTTP/1.1 206 Partial Content\r\nETag: {ETAG}\r\n"
            f"Content-Range: bytes {first}-{last}/{len(WHOLE)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


# ---- a capture written by hand --------------------------------------------------------
def _packet(src: tuple[bytes, int], dst: tuple[bytes, int], seq: int, ack: int, flags: int,
            payload: bytes = b"") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", src[1], dst[1], seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = src[0] + dst[0] + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    tcp = tcp[:16] + struct.pack("!H", inet_checksum(pseudo + tcp + payload)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64,
                     6, 0, src[0], dst[0])
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + tcp + payload


def write_capture(path: Path, conns: list[Events], mss: int = 1400,
                  drop: set[tuple[int, int]] | None = None) -> Path:
    """One TCP connection per list of (direction, bytes): handshake, the bytes in
    ``mss``-sized segments, FIN both ways. ``drop`` holds (connection, segment number)
    pairs left out of the capture (a gap)."""
    frames: list[bytes] = []
    for n, events in enumerate(conns):
        cli, srv = (bytes([10, 0, 0, 1]), 40_000 + n), (bytes([10, 0, 0, 2]), 80)
        seq = {"orig": 1_000, "resp": 500_000}
        ends = {"orig": (cli, srv), "resp": (srv, cli)}
        frames += [_packet(cli, srv, seq["orig"] - 1, 0, 0x02),
                   _packet(srv, cli, seq["resp"] - 1, seq["orig"], 0x12),
                   _packet(cli, srv, seq["orig"], seq["resp"], 0x10)]
        segment = 0
        for direction, data in events:
            other = "resp" if direction == "orig" else "orig"
            for i in range(0, len(data), mss):
                piece = data[i:i + mss]
                if (n, segment) not in (drop or set()):
                    frames.append(_packet(*ends[direction], seq[direction], seq[other], 0x18,
                                          piece))
                seq[direction] += len(piece)
                segment += 1
        for direction in ("resp", "orig"):
            other = "resp" if direction == "orig" else "orig"
            frames.append(_packet(*ends[direction], seq[direction], seq[other], 0x11))
            seq[direction] += 1
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for i, frame in enumerate(frames):
        out += struct.pack("<IIII", 1_700_000_000 + i // 1000, i % 1000 * 1000, len(frame),
                           len(frame)) + frame
    path.write_bytes(bytes(out))
    return path


def carve(tmp_path: Path, conns: list[Events], mss: int = 1400,
          drop: set[tuple[int, int]] | None = None) -> CarveResult:
    pcap = write_capture(tmp_path / "in.pcap", conns, mss, drop)
    result, damage = carve_pcap(pcap, ArtifactStore(tmp_path / "out"))
    assert damage == []
    return result


def joined(result: CarveResult) -> list[FileRecord]:
    return [f for f in result.files if "assembled_from_ranges" in f.extra]


def session(*events: tuple[str, bytes | int]) -> tuple[HttpSession, list[CarvedFile]]:
    s = HttpSession()
    for direction, data in events:
        if isinstance(data, int):
            s.gap(direction, data, 0.0)
        else:
            s.feed(direction, data, 0.0)
    s.close(1.0)
    return s, [f for f in s.take() if isinstance(f, CarvedFile)]


def via_carver(tmp_path: Path, *conns: Events) -> CarveResult:
    c = Carver(ArtifactStore(tmp_path / "out"))
    for n, events in enumerate(conns):
        key = FlowKey(6, "10.0.0.1", 41_000 + n, "10.0.0.2", 80)
        c.open(key, 1.0)
        for direction, data in events:
            c.data(key, direction, data, 2.0)
        c.close(key, 3.0)
    return c.finish()


# ---- joining across responses and connections ------------------------------------------
SECOND = {
    "plain": [("orig", request(rng="bytes=10000-19999")), ("resp", plain(10_000, 19_999))],
    "multipart": [("orig", request(rng="bytes=10000-14999,15000-19999")),
                  ("resp", multipart(part(10_000, 14_999), part(15_000, 19_999)))],
}


@pytest.mark.parametrize("second", sorted(SECOND))
def test_parts_join_across_connections(tmp_path: Path, second: str) -> None:
    first = [("orig", request(rng="bytes=0-9999,20000-29999")),
             ("resp", multipart(part(0, 9_999), part(20_000, 29_999)))]
    result = carve(tmp_path, [first, SECOND[second]])
    (whole,) = joined(result)
    assert (whole.sha256, whole.size) == (SHA, len(WHOLE))
    assert hashlib.sha256(Path(whole.path).read_bytes()).hexdigest() == SHA
    assert (whole.incomplete, whole.missing_ranges) == (False, [])
    assert [f for f in result.files if f.sha256 == SHA] == [whole]  # one artifact
    info = whole.extra["assembled_from_ranges"]
    assert (info["total"], info["conflicting_overlaps"]) == (len(WHOLE), 0)
    assert sorted(p["first"] for p in info["parts"]) == (
        [0, 10_000, 20_000] if second == "plain" else [0, 10_000, 15_000, 20_000])
    assert len({p["flow"]["src_port"] for p in info["parts"]}) == 2  # two connections
    parts = [f for f in result.files if "content_range" in f.extra]
    for f in parts:  # each part is a file of its own, with its range
        r = f.extra["content_range"]
        assert f.sha256 == hashlib.sha256(WHOLE[r["first"]:r["last"] + 1]).hexdigest()
        assert f.filename == "file.bin" and not f.incomplete
    multi = [f for f in parts if "byteranges_part" in f.extra]
    assert [f.extra["byteranges_part"]["index"] for f in multi[:2]] == [1, 2]
    assert multi[0].extra["container"]["sha256"] == hashlib.sha256(
        multipart(part(0, 9_999), part(20_000, 29_999)).split(b"\r\n\r\n", 1)[1]).hexdigest()
    assert result.notes == []
    (t, *_) = result.http
    assert t["response"]["decoded_size"] == t["response"]["body_size"]


def test_range_never_fetched_is_missing(tmp_path: Path) -> None:
    result = carve(tmp_path, [[("orig", request(rng="bytes=0-9999,20000-29999")),
                               ("resp", multipart(part(0, 9_999), part(20_000, 29_999)))]])
    (whole,) = joined(result)
    assert whole.incomplete and whole.missing_ranges == [(10_000, 10_000)]
    assert Path(whole.path).read_bytes() == WHOLE[:10_000] + WHOLE[20_000:]  # not invented
    assert whole.size == 20_000


def test_lost_segment_inside_a_part(tmp_path: Path) -> None:
    """A TCP gap in the middle of part 2 of 3: part 1 whole, part 2 up to the gap (its
    tail missing), part 3 found again after the gap; the body is kept whole as well."""
    parts = (part(0, 4_999), part(10_000, 19_999), part(25_000, 29_999))
    body_start = len(multipart(*parts).split(b"\r\n\r\n", 1)[0]) + 4
    at = body_start + len(parts[0]) + 3_000  # inside part 2's data
    mss = 1_000
    conns = [[("orig", request(rng="bytes=0-4999,10000-19999,25000-29999")),
              ("resp", multipart(*parts))]]
    result = carve(tmp_path, conns, mss=mss, drop={(0, 1 + at // mss)})
    lost = at // mss * mss - body_start  # where the lost segment starts in the body
    head = len(parts[1]) - 10_000 - 2  # part 2's delimiter line and headers
    cut = lost - len(parts[0]) - head  # part 2's bytes before it
    (whole,) = joined(result)
    assert whole.missing_ranges == [(5_000, 5_000), (10_000 + cut, 15_000 - cut)]
    assert Path(whole.path).read_bytes() == (WHOLE[:5_000] + WHOLE[10_000:10_000 + cut]
                                             + WHOLE[25_000:])
    kept = [f for f in result.files if f.extra.get("byteranges_kept_whole")]
    assert len(kept) == 1 and kept[0].incomplete
    assert any("cannot be placed" in n for n in result.notes)
    assert any("part 2 (bytes 10000-19999/30000) cut short" in n for n in result.notes)


def test_truncated_prefix_of_a_plain_part_joins(tmp_path: Path) -> None:
    """A part whose tail was never seen gives the bytes it has (plain 206 alike)."""
    result = via_carver(tmp_path, [("orig", request()), ("resp", plain(0, 19_999)[:-4_000])],
                        [("orig", request()), ("resp", plain(20_000, 29_999))])
    (whole,) = joined(result)
    assert whole.missing_ranges == [(16_000, 4_000)]
    assert Path(whole.path).read_bytes() == WHOLE[:16_000] + WHOLE[20_000:]


# ---- malformed parts: reported, nothing valid lost -------------------------------------
def test_part_without_content_range(tmp_path: Path) -> None:
    odd = part(0, 0, data=b"no range here", headers="Content-Type: text/plain\r\n")
    result = via_carver(tmp_path, [("orig", request()), ("resp", multipart(
        part(0, 9_999), odd, part(10_000, 29_999)))])
    (whole,) = joined(result)
    assert (whole.sha256, whole.incomplete) == (SHA, False)
    (alone,) = [f for f in result.files if "byteranges_error" in f.extra]
    assert Path(alone.path).read_bytes() == b"no range here"
    assert "content_range" not in alone.extra and alone.mime_type == "text/plain"
    assert alone.extra["byteranges_part"]["index"] == 2
    (note,) = result.notes
    assert note.startswith("10.0.0.1:41000->10.0.0.2:80 http: 206 multipart/byteranges "
                           "response to GET /file.bin: part 2: no Content-Range; kept as a "
                           "file of its own, not joined")


def test_warnings_reach_the_extraction_report(tmp_path: Path) -> None:
    odd = part(0, 0, data=b"no range here", headers="Content-Type: text/plain\r\n")
    pcap = write_capture(tmp_path / "odd.pcap", [[("orig", request()), ("resp", multipart(
        part(0, 9_999), odd, part(10_000, 29_999, total=40_000)))]])
    assert main(["extract", "--pcap", str(pcap), "--out", str(tmp_path / "out")]) == 0
    notes = json.loads((tmp_path / "out" / "summary.json").read_text())["notes"]
    assert [n.split("GET /file.bin: ", 1)[1] for n in notes] == [
        "part 2: no Content-Range; kept as a file of its own, not joined",
        "parts disagree on the file size (30000, 40000); each part joins the ranges of the "
        "size it names"]
    records = (tmp_path / "out" / "files.jsonl").read_text().splitlines()
    assert len(records) == 3  # every part kept


def test_invalid_content_range_and_wrong_length(tmp_path: Path) -> None:
    bad = part(0, 0, data=b"xyz", headers="Content-Range: bytes 9-2/30000\r\n")
    long = part(10_000, 10_009, data=WHOLE[10_000:10_020])  # 20 bytes for a 10-byte range
    s, out = session(("orig", request()), ("resp", multipart(part(0, 9_999), bad, long)))
    assert [f.extra.get("byteranges_error") for f in out] == [
        None, "invalid Content-Range 'bytes 9-2/30000'",
        "20 bytes, but its Content-Range bytes 10000-10009/30000 says 10"]
    assert [f.data for f in out[1:]] == [b"xyz", WHOLE[10_000:10_020]]  # kept as carried
    assert ["content_range" in f.extra for f in out] == [True, False, False]
    assert len(s.notes) == 2 and all("not joined" in n for n in s.notes)


def test_overlapping_parts_that_disagree(tmp_path: Path) -> None:
    forged = WHOLE[5_000:15_000][:-1] + b"\0"  # one byte differs in the overlap
    result = via_carver(tmp_path, [("orig", request()), ("resp", multipart(
        part(0, 9_999), part(5_000, 14_999, data=forged), part(15_000, 29_999)))])
    (whole,) = joined(result)
    assert whole.extra["assembled_from_ranges"]["conflicting_overlaps"] == 0  # not in overlap
    assert whole.sha256 != SHA  # the forged byte at 14_999 is outside the overlap: kept
    forged = b"\0" + WHOLE[5_001:15_000]  # now the differing byte is in the overlap
    result = via_carver(tmp_path / "b", [("orig", request()), ("resp", multipart(
        part(0, 9_999), part(5_000, 14_999, data=forged), part(15_000, 29_999)))])
    (whole,) = joined(result)
    assert Path(whole.path).read_bytes() == WHOLE  # the first part's bytes are kept
    assert whole.incomplete and whole.extra["assembled_from_ranges"]["conflicting_overlaps"] == 1
    assert len([f for f in result.files if "content_range" in f.extra]) == 3  # all kept
    assert result.notes == [
        "range join of files.example/file.bin (total 30000): 1 overlapping range(s) "
        "disagree with bytes already placed; the bytes of the part that starts first are "
        "kept (every part is a file of its own), file marked incomplete"]


def test_boundary_never_closed(tmp_path: Path) -> None:
    # complete body, no close delimiter: the last part ends with the body (CRLF dropped)
    s, out = session(("orig", request()), ("resp", multipart(
        part(0, 14_999), part(15_000, 29_999), close=False)))
    assert [(f.data, f.missing_ranges) for f in out] == [(WHOLE[:15_000], []),
                                                         (WHOLE[15_000:], [])]
    assert [n.split(": ", 1)[1] for n in s.notes] == [
        f"boundary b'{BOUNDARY}' never closed (body truncated?); the last part ends where "
        "the body ends"]
    # the body truncated inside the last part: its tail is missing, the rest joins
    body = multipart(part(0, 14_999), part(15_000, 29_999))
    result = via_carver(tmp_path, [("orig", request()), ("resp", body[:-10_000])])
    (whole,) = joined(result)
    gone = 10_000 - len(f"\r\n--{BOUNDARY}--\r\n")
    assert whole.missing_ranges == [(len(WHOLE) - gone, gone)]
    assert Path(whole.path).read_bytes() == WHOLE[:-gone]
    assert any("never closed" in n for n in result.notes)


def test_totals_that_disagree(tmp_path: Path) -> None:
    result = via_carver(tmp_path, [("orig", request()), ("resp", multipart(
        part(0, 14_999), part(15_000, 29_999, total=40_000)))])
    assert joined(result) == []  # two files of one range each: nothing to join
    parts = [f for f in result.files if "content_range" in f.extra]
    assert [f.extra["content_range"]["total"] for f in parts] == [30_000, 40_000]
    assert [f.sha256 for f in parts] == [hashlib.sha256(WHOLE[:15_000]).hexdigest(),
                                         hashlib.sha256(WHOLE[15_000:]).hexdigest()]
    assert any("parts disagree on the file size (30000, 40000)" in n for n in result.notes)


@pytest.mark.parametrize("ctype", ["multipart/byteranges", "multipart/byteranges; boundary=nope",
                                   "multipart/byteranges; boundary*=*0x; boundary*1=y"])
def test_no_boundary_keeps_the_body_whole(ctype: str) -> None:
    body = part(0, 9)
    s, out = session(("orig", request()), ("resp", (
        f"HTTP/1.1 206 Partial Content\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n").encode() + body))
    (f,) = out
    assert f.data == body and "content_range" not in f.extra
    assert f.extra["byteranges_kept_whole"] in (
        "multipart/byteranges without a (readable) boundary parameter",
        "boundary b'nope' never found")
    assert "the body is kept whole" in s.notes[0]


def test_max_byteranges_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert byteranges.MAX_BYTERANGES_PARTS == 200
    monkeypatch.setattr(byteranges, "MAX_BYTERANGES_PARTS", 2)
    resp = multipart(part(0, 9), part(10, 19), part(20, 29))
    s, out = session(("orig", request()), ("resp", resp))
    assert [f.data for f in out] == [WHOLE[:10], WHOLE[10:20], resp.split(b"\r\n\r\n", 1)[1]]
    assert out[2].extra["byteranges_kept_whole"] == "MAX_BYTERANGES_PARTS=2 reached"
    assert any("MAX_BYTERANGES_PARTS=2 reached; the parts after it are not split" in n
               for n in s.notes)


def test_split_reuses_the_mime_delimiters() -> None:
    # LF-only line ends, a quoted boundary, a preamble, a nested multipart file's bytes
    inner = b"--inner\r\nnot a part of ours\r\n--inner--\r\n"
    body = (b"preamble\n--a:b\nContent-Range: bytes 0-%d/%d\n\n" % (len(inner) - 1, len(inner))
            + inner + b"\n--a:b--\n")
    found = byteranges.split(body, 'multipart/byteranges; boundary="a:b"')
    assert [(p.data, p.range, p.error) for p in found.parts] == [
        (inner, (0, len(inner) - 1, len(inner)), "")]
    assert found.notes == [] and found.keep_whole == ""


# ---- end to end: real traffic on loopback ------------------------------------------------
@pytest.mark.skipif(tcpdump_available() is not None, reason=str(tcpdump_available()))
def test_live_byteranges_then_pcapwire_extract(tmp_path: Path) -> None:
    files = {"/small.bin": random.Random(1).randbytes(300),
             "/big.bin": random.Random(2).randbytes(300_000),
             "/holey.bin": random.Random(3).randbytes(50_000)}
    asks = [("/small.bin", "bytes=0-99,200-299"), ("/small.bin", "bytes=100-199"),
            ("/big.bin", "bytes=0-99999,200000-299999"),
            ("/big.bin", "bytes=100000-149999,150000-199999"),
            ("/holey.bin", "bytes=0-9999,40000-49999")]
    content = HttpContent(files={p: (b, {"ranges": True}) for p, b in files.items()})
    with http_server(content) as port, LoopbackCapture(tmp_path / "ranges.pcap",
                                                       f"tcp port {port}") as cap:
        for path, rng in asks:  # urllib: one connection per request
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                         headers={"Range": rng})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 206
                assert (r.headers["Content-Type"] == "multipart/byteranges; boundary="
                        + BYTERANGES_BOUNDARY) is ("," in rng)
                r.read()
        pcap = cap.stop()

    out = tmp_path / "out"
    assert main(["extract", "--pcap", str(pcap), "--out", str(out)]) == 1  # holey: partial
    records = [json.loads(x) for x in (out / "files.jsonl").read_text().splitlines()]
    whole = {f["extra"]["http"]["uri"]: f for f in records
             if "assembled_from_ranges" in f["extra"]}
    assert sorted(whole) == sorted(files)
    for path in ("/small.bin", "/big.bin"):
        f = whole[path]
        assert (f["sha256"], f["size"]) == (hashlib.sha256(files[path]).hexdigest(),
                                            len(files[path]))
        assert Path(f["path"]).read_bytes() == files[path]
        assert (f["incomplete"], f["missing_ranges"]) == (False, [])
        assert len([g for g in records if g["sha256"] == f["sha256"]]) == 1
        assert len({p["flow"]["src_port"] for p in
                    f["extra"]["assembled_from_ranges"]["parts"]}) == 2
    holey = whole["/holey.bin"]
    assert holey["incomplete"] and holey["missing_ranges"] == [[10_000, 30_000]]
    body = files["/holey.bin"]
    assert Path(holey["path"]).read_bytes() == body[:10_000] + body[40_000:]
    parts = [f for f in records if "byteranges_part" in f["extra"]]
    assert len(parts) == 8 and all("content_range" in f["extra"] for f in parts)
    for f in whole.values():  # the joined file: no extras of one part
        assert not {"byteranges_part", "container", "content_range"} & set(f["extra"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["notes"] == [] and summary["input_damage"] == []


def test_gap_between_parts_loses_no_part() -> None:
    """A gap that swallowed whole parts: the parts either side are complete, nothing is
    unplaced (the walk after the gap starts at a delimiter)."""
    one, lost, two = part(0, 99), part(100, 199), part(200, 299)
    body = one + two + f"--{BOUNDARY}--\r\n".encode()  # ``lost`` never seen
    found = byteranges.split(body, f"multipart/byteranges; boundary={BOUNDARY}",
                             [(len(one), len(lost))])
    assert [(p.data, p.range, p.missing) for p in found.parts] == [
        (WHOLE[:100], (0, 99, 30_000), []), (WHOLE[200:300], (200, 299, 30_000), [])]
    assert (found.notes, found.keep_whole) == ([], "")


def test_body_past_max_body_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from pcapwire.extract import http

    one, two = part(0, 999), part(1_000, 1_999)
    monkeypatch.setattr(http, "MAX_BODY_SIZE", len(one) + 500)
    s, out = session(("orig", request()), ("resp", multipart(one, two)))
    kept = 500 - (len(two) - 1_002)  # part 2's bytes before the limit
    assert [(f.data, f.missing_ranges) for f in out] == [
        (WHOLE[:1_000], []), (WHOLE[1_000:1_000 + kept], [(kept, 1_000 - kept)])]
    assert any(f"MAX_BODY_SIZE={len(one) + 500} reached" in n for n in s.notes)
