"""The carving driver fed connection events directly (pcapwire.extract.carve/detect)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pcapwire.extract import carve, detect
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.carve import Carver
from pcapwire.records import FlowKey


def conn(c: Carver, key: FlowKey, *events: tuple[str, bytes], syn: bool = True) -> None:
    if syn:
        c.open(key, 1.0)
    for direction, data in events:
        c.data(key, direction, data, 2.0)
    c.close(key, 3.0)


def get(path: str, body: bytes) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    return (("orig", f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode()),
            ("resp", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body))


@pytest.fixture
def carver(tmp_path: Path) -> Carver:
    return Carver(ArtifactStore(tmp_path))


def test_content_beats_port(carver: Carver) -> None:
    conn(carver, FlowKey(6, "10.0.0.1", 5000, "10.0.0.2", 22), *get("/on-ssh-port", b"x1"))
    conn(carver, FlowKey(6, "10.0.0.1", 5001, "10.0.0.2", 80),
         ("resp", b"SSH-2.0-OpenSSH_9.2\r\n"), ("orig", b"SSH-2.0-client\r\n" + b"\0" * 64))
    conn(carver, FlowKey(6, "10.0.0.1", 5002, "10.0.0.2", 443),
         ("orig", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))
    res = carver.finish()
    assert [(f.filename, f.size) for f in res.files] == [("on-ssh-port", 2)]
    # SSH on port 80: the content says nothing, so the port decided (HTTP) and the HTTP
    # parser found no message; TLS is recognised and left alone
    assert res.connections == {"http": 2, "other": 1}


def test_reversed_orientation_is_detected(carver: Carver) -> None:
    # capture without the handshake: the first packet seen came from the server
    (req, resp) = get("/late.js", b"console.log(1)")
    key = FlowKey(6, "10.0.0.2", 80, "10.0.0.1", 6000)
    conn(carver, key, ("orig", resp[1]), ("resp", req[1]), syn=False)
    (f,) = carver.finish().files
    assert f.flow == FlowKey(6, "10.0.0.1", 6000, "10.0.0.2", 80)
    assert (f.direction, f.filename) == ("resp", "late.js")


def test_sniff_waits_then_port_decides() -> None:
    assert detect.sniff(b"GE", b"", 1, 80).protocol is None
    assert detect.sniff(b"GE", b"", 1, 80, final=True).protocol == "http"
    assert detect.sniff(b"", b"220 mx.example.org ESMTP\r\n", 1, 2525).protocol == "smtp"
    assert detect.sniff(b"USER bob\r\n", b"220 hello\r\n", 1, 2121).protocol == "ftp"
    assert detect.sniff(b"", b"+OK POP3 ready\r\n", 1, 9999).protocol == "pop3"
    assert detect.sniff(b"", b"* OK IMAP4rev1\r\n", 1, 9999).protocol == "imap"
    assert detect.sniff(b"\x00" * 5000, b"", 1, 9999).protocol == ""
    assert detect.SNIFF_BYTES == 4096


def test_ftp_data_channel_through_the_driver(carver: Carver) -> None:
    ctrl = FlowKey(6, "10.0.0.1", 7000, "10.0.0.2", 21)
    carver.open(ctrl, 0.0)
    for d, data in (("resp", b"220 FTP server ready\r\n"), ("orig", b"USER anonymous\r\n"),
                    ("resp", b"331 ok\r\n"), ("orig", b"PASS x@y\r\n"), ("resp", b"230 ok\r\n"),
                    ("orig", b"PASV\r\n"), ("resp", b"227 Entering (10,0,0,2,4,1)\r\n"),
                    ("orig", b"RETR dir/file.dat\r\n"), ("resp", b"150 opening\r\n")):
        carver.data(ctrl, d, data, 1.0)
    data_key = FlowKey(6, "10.0.0.1", 7001, "10.0.0.2", 1025)
    conn(carver, data_key, ("resp", b"file bytes"))
    carver.data(ctrl, "resp", b"226 done\r\n", 4.0)
    res = carver.finish()
    (f,) = res.files
    assert (f.protocol, f.filename, f.flow, f.size) == ("ftp", "file.dat", data_key, 10)
    assert res.connections == {"ftp": 1, "ftp-data": 1}
    assert [t["command"] for t in res.ftp] == ["RETR"]


def test_max_files_per_connection(carver: Carver, monkeypatch: pytest.MonkeyPatch) -> None:
    assert carve.MAX_FILES_PER_CONNECTION == 10_000
    monkeypatch.setattr(carve, "MAX_FILES_PER_CONNECTION", 2)
    events = [e for i in range(4) for e in get(f"/f{i}", b"body%d" % i)]
    conn(carver, FlowKey(6, "10.0.0.1", 8000, "10.0.0.2", 80), *events)
    res = carver.finish()
    assert [f.filename for f in res.files] == ["f0", "f1"]
    assert any("MAX_FILES_PER_CONNECTION=2 reached; 2 more files not kept" in n
               for n in res.notes)


def test_callbacks_and_protocol_subset(tmp_path: Path) -> None:
    seen: list[str] = []
    c = Carver(ArtifactStore(tmp_path), protocols=("smtp",), on_file=lambda f: seen.append(
        f.filename), on_email=lambda e: seen.append(e.subject))
    conn(c, FlowKey(6, "10.0.0.1", 1, "10.0.0.2", 80), *get("/skipped", b"x"))
    conn(c, FlowKey(6, "10.0.0.1", 2, "10.0.0.2", 25), ("resp", b"220 mx ESMTP\r\n"),
         ("orig", b"HELO a\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
         ("resp", b"250 hi\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
         ("orig", b"Subject: s1\r\nContent-Type: text/plain\r\n\r\nhello\r\n.\r\nQUIT\r\n"))
    res = c.finish()
    assert seen == ["s1", ""] and len(res.emails) == 1 and len(res.files) == 1


@pytest.mark.parametrize("case", ["zeek-http-206-ranges-two-connections",
                                  "zeek-http-multipart-upload", "zeek-http-pipelined-5-files",
                                  "zeek-smtp-two-messages", "arkime-smtp-base64-zip",
                                  "zeek-pop3-retr-3-messages", "zeek-ftp-retr-passive"])
def test_storing_workers_give_the_same_records_and_store(tmp_path: Path, case: str) -> None:
    """Carver(workers=N) hashes, identifies and writes in threads and makes the records
    later: the records (ids included), their order, the callbacks and every file of the
    store (sightings included) are those of carving with workers=0."""
    from conftest import corpus_file
    from pcapwire.extract.source import dispatch_lists
    from pcapwire.reassembly import Reassembler

    def run(workers: int) -> tuple[list[Any], list[str], dict[str, bytes]]:
        root = tmp_path / f"w{workers}"
        seen: list[str] = []
        c = Carver(ArtifactStore(root), workers=workers, on_file=lambda f: seen.append(f.id),
                   on_email=lambda e: seen.append(e.id))
        dispatch_lists(c, Reassembler(udp=False).feed_file_lists(corpus_file(case)))
        res = c.finish()
        records = json.loads(json.dumps([r.to_dict() for r in [*res.files, *res.emails]],
                                        default=str).replace(str(root), "ROOT"))
        store = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
                 if p.is_file()}
        return records, seen, store

    inline, inline_seen, inline_store = run(0)
    assert inline and inline_seen
    for workers in (1, 3):
        records, seen, store = run(workers)
        assert records == inline and seen == inline_seen and store == inline_store


def test_storing_workers_keep_memory_bounded(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(carve, "MAX_PENDING_STORE_BYTES", 10)  # wait for every file
    c = Carver(ArtifactStore(tmp_path), workers=2)
    for i in range(5):
        conn(c, FlowKey(6, "10.0.0.1", 7000 + i, "10.0.0.2", 80),
             *get(f"/f{i}", b"%d" % i * 100))
        assert not c._pending  # the files of each connection were stored before the next
    assert [f.filename for f in c.finish().files] == [f"f{i}" for i in range(5)]
