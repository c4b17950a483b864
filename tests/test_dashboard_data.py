"""What the dashboard's pictures and views are made of, without a browser: the timeline's
block-wise record walk (records across READ_BLOCK boundaries, a cut last record, the
packet limit) and the email view's header limits."""

from __future__ import annotations

import struct
from pathlib import Path

from pcapwire.api import emailview, timeline


def _pcap(path: Path, sizes: list[int], cut: int = 0) -> list[tuple[float, int]]:
    out, data = [], bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for i, n in enumerate(sizes):
        data += struct.pack("<IIII", 1_000 + i, 500_000, n, n + 4) + bytes(n)
        out.append((1_000 + i + 0.5, n + 4))
    path.write_bytes(bytes(data[:len(data) - cut]))
    return out


def test_records_across_blocks_and_a_cut_last_record(tmp_path, monkeypatch):
    monkeypatch.setattr(timeline, "READ_BLOCK", 64)  # every record crosses a block
    want = _pcap(tmp_path / "a.pcap", [10, 200, 0, 63, 1000])
    assert list(timeline.packet_records(tmp_path / "a.pcap")) == want
    _pcap(tmp_path / "cut.pcap", [10, 200, 30], cut=5)
    assert list(timeline.packet_records(tmp_path / "cut.pcap")) == want[:2]


def test_histogram_bytes_and_the_packet_limit(tmp_path, monkeypatch):
    _pcap(tmp_path / "a.pcap", [10, 20, 30, 40])
    t = timeline.timeline([tmp_path / "a.pcap"], buckets=3)
    assert (t["start"], t["end"], t["packets"], t["bytes"], t["truncated"]) == (
        1000.5, 1003.5, [1, 1, 2], [14, 24, 34 + 44], False)
    monkeypatch.setattr(timeline, "TIMELINE_MAX_PACKETS", 3)
    times, sizes, truncated = timeline.collect([tmp_path / "a.pcap"],
                                               timeline.TIMELINE_MAX_PACKETS)
    assert (list(sizes), truncated) == ([14, 24, 34], True)
    assert timeline.histogram(times[:0], sizes[:0]) == {
        "start": None, "end": None, "bucket_s": None, "packets": [], "bytes": []}


def test_email_headers_decoded_and_cut(tmp_path, monkeypatch):
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nX-Long: " + b"a" * 50
                    + b"\r\nTo: a@b\r\n\r\nbody: not a header\r\n")
    monkeypatch.setattr(emailview, "MAX_HEADER_CHARS", 10)
    assert emailview.headers(eml) == ([{"name": "Subject", "value": "Grüße"},
                                       {"name": "X-Long", "value": "a" * 10},
                                       {"name": "To", "value": "a@b"}], False)
    monkeypatch.setattr(emailview, "MAX_EMAIL_HEADERS", 2)
    fields, cut = emailview.headers(eml)
    assert [f["name"] for f in fields] == ["Subject", "X-Long"] and cut is True
