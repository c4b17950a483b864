"""FTP control/data pairing (pcapwire.extract.ftp), fed as byte streams."""

from __future__ import annotations

from pcapwire.extract.buffer import CarvedFile
from pcapwire.extract.ftp import (
    FtpControlSession,
    FtpDataSession,
    FtpRegistry,
    parse_eprt,
    parse_host_port,
)
from pcapwire.records import FlowKey

CTRL = FlowKey(6, "10.0.0.1", 40000, "10.0.0.2", 21)


def converse(session: FtpControlSession, pairs: list[tuple[bytes, bytes]]) -> None:
    """(client line, server reply) in time order, as a capture delivers them."""
    for cmd, reply in pairs:
        if cmd:
            session.feed("orig", cmd, 0.0)
        if reply:
            session.feed("resp", reply, 0.0)


def data_conn(reg: FtpRegistry, flow: FlowKey, payload: bytes, direction: str
              ) -> list[CarvedFile]:
    ch = reg.match(flow)
    assert ch is not None, f"no channel announced for {flow}"
    d = FtpDataSession(ch, flow)
    d.feed(direction, payload, 1.0)
    d.close(2.0)
    return [f for f in d.take() if isinstance(f, CarvedFile)]


def test_parsers() -> None:
    assert parse_host_port("227 Entering Passive Mode (10,0,0,2,195,80).") == ("10.0.0.2", 50000)
    assert parse_host_port("1,2,3,999,0,1") is None
    assert parse_eprt("|2|2001:db8::1|49189|") == ("2001:db8::1", 49189)
    assert parse_eprt("!1!10.0.0.1!5000!") == ("10.0.0.1", 5000)
    assert parse_eprt("|1|x") is None


def test_passive_retr_and_active_stor_are_named() -> None:
    reg = FtpRegistry()
    s = FtpControlSession(CTRL, reg)
    converse(s, [(b"", b"220-Welcome\r\n220 FTP ready\r\n"), (b"USER bob\r\n", b"331 pw\r\n"),
                 (b"PASS hunter2\r\n", b"230 ok\r\n"), (b"TYPE I\r\n", b"200 ok\r\n"),
                 (b"PASV\r\n", b"227 Entering Passive Mode (192,168,1,9,195,80)\r\n"),
                 (b"RETR /pub/a.tar.gz\r\n", b"150 opening\r\n"), (b"", b"226 done\r\n"),
                 (b"PORT 10,0,0,1,156,65\r\n", b"200 PORT ok\r\n"),
                 (b"STOR up.txt\r\n", b"150 ok\r\n226 stored\r\n")])
    # passive: the announced private address is NATed; the control server address matches
    down = data_conn(reg, FlowKey(6, "10.0.0.1", 40001, "10.0.0.2", 50000), b"TARBALL", "resp")
    up = data_conn(reg, FlowKey(6, "10.0.0.2", 20, "10.0.0.1", 40001), b"upload", "resp")
    assert [(f.filename, f.data, f.direction, f.extra["ftp"]["command"]) for f in down + up] == [
        ("a.tar.gz", b"TARBALL", "resp", "RETR"), ("up.txt", b"upload", "orig", "STOR")]
    assert down[0].extra["ftp"]["user"] == "bob" and down[0].extra["ftp"]["reply"] == 226
    assert "hunter2" not in repr(down[0].extra) + repr(s.log)
    assert down[0].flow == FlowKey(6, "10.0.0.1", 40001, "10.0.0.2", 50000)


def test_epsv_eprt_ipv6_and_listing() -> None:
    ctrl = FlowKey(6, "2001:db8::1", 49185, "2001:db8::21", 21)
    reg = FtpRegistry()
    s = FtpControlSession(ctrl, reg)
    converse(s, [(b"", b"220 ready\r\n"),
                 (b"EPSV\r\n", b"229 Entering Extended Passive Mode (|||57086|)\r\n"),
                 (b"LIST\r\n", b"150 here\r\n226 ok\r\n"),
                 (b"EPRT |2|2001:db8::1|49189|\r\n", b"200 ok\r\n"),
                 (b"RETR robots.txt\r\n", b"150 ok\r\n226 ok\r\n")])
    listing = data_conn(reg, FlowKey(6, "2001:db8::1", 49186, "2001:db8::21", 57086),
                        b"-rw-r--r-- robots.txt\r\n", "resp")
    assert listing == []
    got = data_conn(reg, FlowKey(6, "2001:db8::21", 55785, "2001:db8::1", 49189), b"User-agent",
                    "orig")
    assert [(f.filename, f.data, f.direction) for f in got] == [("robots.txt", b"User-agent",
                                                                 "resp")]
    assert [x["command"] for x in s.log] == ["LIST", "RETR"]


def test_unannounced_connection_is_not_a_data_channel() -> None:
    reg = FtpRegistry()
    assert reg.match(FlowKey(6, "1.1.1.1", 1, "2.2.2.2", 2)) is None


def test_data_with_gap_is_incomplete() -> None:
    reg = FtpRegistry()
    s = FtpControlSession(CTRL, reg)
    converse(s, [(b"", b"220 hi\r\n"), (b"PASV\r\n", b"227 ok (10,0,0,2,0,80)\r\n"),
                 (b"RETR f\r\n", b"150 ok\r\n")])
    flow = FlowKey(6, "10.0.0.1", 5, "10.0.0.2", 80)
    d = FtpDataSession(reg.match(flow), flow)  # type: ignore[arg-type]
    d.feed("resp", b"abc", 0)
    d.gap("resp", 10, 0)
    d.feed("resp", b"def", 0)
    d.close(1)
    (f,) = d.take()
    assert isinstance(f, CarvedFile)
    assert (f.data, f.incomplete, f.missing_ranges) == (b"abcdef", True, [(3, 10)])


def test_binding_holds_when_directions_are_fed_one_after_the_other() -> None:
    """A reassembler may hand over a whole direction at once: commands first, replies
    after. Channels are bound by command index, so the result is the same."""
    reg = FtpRegistry()
    s = FtpControlSession(CTRL, reg)
    s.feed("orig", b"USER u\r\nPASS p\r\nPASV\r\nRETR one\r\nPORT 10,0,0,1,0,99\r\nRETR two\r\n"
                   b"EPSV\r\nSTOR three\r\nQUIT\r\n", 0.0)
    s.feed("resp", b"220 hi\r\n331 pw\r\n230 ok\r\n227 ok (10,0,0,2,0,80)\r\n150 a\r\n226 b\r\n"
                   b"200 ok\r\n150 a\r\n226 b\r\n229 ok (|||81|)\r\n150 a\r\n226 b\r\n221 bye\r\n",
           0.0)
    assert [(x["command"], x["argument"], x["data_port"], x["passive"]) for x in s.log] == [
        ("RETR", "one", 80, True), ("RETR", "two", 99, False), ("STOR", "three", 81, True)]
    assert [reg.match(f) is not None for f in (
        FlowKey(6, "10.0.0.1", 2, "10.0.0.2", 80), FlowKey(6, "10.0.0.2", 20, "10.0.0.1", 99),
        FlowKey(6, "10.0.0.1", 3, "10.0.0.2", 81))] == [True, True, True]
    assert s.notes == []
