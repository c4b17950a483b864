"""Following queries over a store that is being recorded (``pcapwire query --follow`` and
:class:`pcapwire.query.follow.Follow`): the packets that exist, then every packet
committed after, exactly once, byte for byte what tcpdump reads of the same packets; a
stop ends it with a valid capture. The recorder is stood in for by :mod:`liveutil`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from liveutil import (
    FAULTHANDLER_ENV,
    WAIT_S,
    Collector,
    FakeRecorder,
    communicate_or_dump,
    packets,
    read_until,
)
from pcaputil import pcapng_records, read_records, tcpdump
from pcapwire.errors import QueryError
from pcapwire.query import QuerySpec
from pcapwire.query import follow as follow_module
from pcapwire.query.follow import Follow
from pcapwire.records import PcapChunk
from pcapwire.store import Store
from pcapwire.synth import generate

TIMEOUT_S = WAIT_S


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """A generated capture (many flows) and its packets."""
    path = tmp_path_factory.mktemp("traffic") / "t.pcap"
    generate(path, 400_000, seed=7)
    return path, packets(path)


def capture_of(path: Path, pkts: list, out: Path) -> Path:
    """A capture of ``pkts`` with ``path``'s file header (what tcpdump reads as oracle)."""
    out.write_bytes(path.read_bytes()[:24] + b"".join(p[0] for p in pkts))
    return out


def new_store(tmp_path: Path) -> Path:
    Store(tmp_path / "store").close()
    return tmp_path / "store"


def cli(store: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(store),
                             "query", "--follow", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=FAULTHANDLER_ENV)


def test_cli_follow_streams_new_packets_once_and_ends_on_sigint(traffic, tmp_path):
    src, pkts = traffic
    store = new_store(tmp_path)
    rec = FakeRecorder(store, "eth0", snaplen=65535)
    third = len(pkts) // 3
    rec.write(pkts[:third])
    rec.commit()
    rec.write_partial(pkts[third][0])  # a record being written: never read before its commit
    proc = cli(store, "--bpf", "tcp", "-w", "-")
    out = bytearray()
    initial = tcpdump(capture_of(src, pkts[:third], tmp_path / "a.pcap"), "tcp")
    read_until(proc, out, len(initial))
    assert bytes(out) == initial
    for i in range(third, len(pkts), 40):  # committed after the follow started
        rec.write(pkts[i:i + 40])
        rec.commit()
    expected = tcpdump(src, "tcp")
    read_until(proc, out, len(expected))
    proc.send_signal(signal.SIGINT)
    rest, err = communicate_or_dump(proc)
    assert (proc.returncode, err) == (0, b"")
    assert bytes(out) + rest == expected  # each packet once, as tcpdump reads them
    with Store(store) as s:
        (row,) = s.cases.search_queries()
        assert (row["status"], row["packets"]) == ("done", len(read_records(expected)[1]))
        assert row["spec"]["follow"] is True


def test_sigterm_ends_a_follow_into_a_file_with_a_valid_capture(traffic, tmp_path):
    """-w FILE (a FIFO here, read as it grows): SIGTERM ends it, exit 0, the capture whole."""
    src, pkts = traffic
    store = new_store(tmp_path)
    rec = FakeRecorder(store, "eth0", snaplen=65535)
    rec.write(pkts[:50])
    rec.commit()
    target = tmp_path / "out.pcap"
    os.mkfifo(target)
    proc = cli(store, "--bpf", "udp", "-w", str(target))
    fd = os.open(target, os.O_RDONLY)
    reader = subprocess.Popen(["cat"], stdin=fd, stdout=subprocess.PIPE)  # read as it grows
    os.close(fd)
    out = bytearray()
    read_until(reader, out, len(tcpdump(capture_of(src, pkts[:50], tmp_path / "a.pcap"),
                                        "udp")))
    rec.write(pkts[50:80])
    rec.commit()
    expected = tcpdump(capture_of(src, pkts[:80], tmp_path / "b.pcap"), "udp")
    read_until(reader, out, len(expected))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT_S) == 0
    rest, _ = reader.communicate(timeout=TIMEOUT_S)
    assert bytes(out) + rest == expected
    copy = tmp_path / "copy.pcap"
    copy.write_bytes(expected)
    check = subprocess.run(["tcpdump", "-r", str(copy)], capture_output=True, check=False)
    assert check.returncode == 0 and b"truncated" not in check.stderr


def test_follow_ends_when_its_reader_leaves(traffic, tmp_path):
    """``pcapwire query --follow -w - | head -c 24``: the idle follow notices the closed
    pipe and ends (exit 0) without waiting for another packet."""
    store = new_store(tmp_path)
    FakeRecorder(store, "eth0", snaplen=65535).commit()
    proc = cli(store, "--host", "198.18.0.1", "-w", "-")
    out = bytearray()
    read_until(proc, out, 24)
    proc.stdout.close()
    assert proc.wait(TIMEOUT_S) == 0


@pytest.mark.parametrize("lookup_max", [follow_module.FLOW_LOOKUP_MAX, 0])
def test_two_recorders_explicit_filter_every_packet_once(traffic, tmp_path, monkeypatch,
                                                         lookup_max):
    """Two interfaces record at once; a host filter (flows from the index, their new
    offsets per commit, looked up per flow or from the segment's flow rows) delivers each
    matching packet once."""
    monkeypatch.setattr(follow_module, "FLOW_LOOKUP_MAX", lookup_max)
    src, pkts = traffic
    store = new_store(tmp_path)
    eth0, eth1 = (FakeRecorder(store, n, snaplen=65535) for n in ("eth0", "eth1"))
    head = len(pkts) // 4
    for i, p in enumerate(pkts[:head]):
        (eth0 if i % 2 else eth1).write([p])
    eth0.commit()
    eth1.commit()
    host = _busiest_host(pkts)
    wanted = read_records(tcpdump(src, f"host {host}"))[1]
    before = read_records(tcpdump(capture_of(src, pkts[:head], tmp_path / "h.pcap"),
                                  f"host {host}"))[1]
    with Store(store) as s:
        follow = Follow(s.query_engine(), QuerySpec(hosts=[host], follow=True))
        run = Collector(follow)
        run.until_packets(len(before))  # the initial scan is out (a header at least)
        for i in range(head, len(pkts), 25):
            for j, p in enumerate(pkts[i:i + 25], i):
                (eth0 if j % 2 else eth1).write([p])
            eth0.commit()
            eth1.commit()
        run.until_packets(len(wanted))
        assert run.finish() is None
    _, got = read_records(run.capture())
    assert sorted(got) == sorted(wanted) and len(got) == len(set(got)) == len(wanted)
    assert 0 < len(before) < len(wanted)
    assert follow.rounds >= 1 and follow.snaplens == {1: 65535}


def _busiest_host(pkts: list) -> str:
    """The IPv4 address in most packets (Ethernet, IPv4 source or destination)."""
    import ipaddress
    from collections import Counter

    seen = Counter(rec[at:at + 4] for rec, _m, _k in pkts if rec[28:30] == b"\x08\x00"
                   for at in (42, 46))
    return str(ipaddress.IPv4Address(seen.most_common(1)[0][0]))


def test_sealed_segment_and_new_segment_are_followed(traffic, tmp_path):
    """Rotation: the recorder seals a segment (renamed from .live) and opens the next."""
    src, pkts = traffic
    store = new_store(tmp_path)
    first = FakeRecorder(store, "eth0", snaplen=65535)
    first.write(pkts[:30])
    first.commit()
    with Store(store) as s:
        run = Collector(Follow(s.query_engine(), QuerySpec(follow=True)))
        run.until_packets(30)
        first.write(pkts[30:60])
        first.seal()
        second = FakeRecorder(store, "eth0", snaplen=65535)
        second.write(pkts[60:90])
        second.commit()
        run.until_packets(90)
        assert run.finish() is None
    assert run.capture() == tcpdump(capture_of(src, pkts[:90], tmp_path / "r.pcap"))


def test_a_link_type_the_output_cannot_carry_ends_the_follow(traffic, tmp_path):
    src, pkts = traffic
    store = new_store(tmp_path)
    eth = FakeRecorder(store, "eth0", snaplen=65535)
    eth.write(pkts[:10])
    eth.commit()
    with Store(store) as s:
        run = Collector(Follow(s.query_engine(), QuerySpec(bpf="ip", follow=True)))
        run.until_packets(10)
        raw_pkts = packets(capture_of(src, pkts[10:20], tmp_path / "e.pcap"))
        raw = FakeRecorder(store, "tun0", linktype=101, snaplen=65535)
        raw.write([_as_raw(p) for p in raw_pkts])
        raw.commit()
        end = run.take()
        while isinstance(end, PcapChunk):
            end = run.take()
    assert isinstance(end, QueryError)
    assert "link type 101" in str(end) and "cannot carry" in str(end)
    assert read_records(run.capture())[1] == read_records(tcpdump(
        capture_of(src, pkts[:10], tmp_path / "f.pcap"), "ip"))[1]


def _as_raw(p: tuple) -> tuple:
    """An Ethernet packet of :func:`liveutil.packets` as LINKTYPE_RAW (its meta's offsets
    are not used by the index beyond rec_off, which stays 0)."""
    import struct

    rec, meta, (_lt, snaplen, tsprec) = p
    sec, usec, caplen, origlen = struct.unpack_from("<IIII", rec)
    return (struct.pack("<IIII", sec, usec, caplen - 14, origlen - 14) + rec[30:], meta,
            (101, snaplen, tsprec))


def test_a_query_never_reads_past_the_committed_size(traffic, tmp_path):
    src, pkts = traffic
    store = new_store(tmp_path)
    rec = FakeRecorder(store, "eth0", snaplen=65535)
    rec.write(pkts[:40])
    rec.commit()
    rec.write(pkts[40:60])  # written, not committed
    rec.write_partial(pkts[60][0])
    with Store(store) as s:
        got = s.query_engine().to_bytes(QuerySpec())
    assert got == tcpdump(capture_of(src, pkts[:40], tmp_path / "c.pcap"))


def test_a_follow_has_no_end():
    with pytest.raises(QueryError, match="a follow has no end time"):
        QuerySpec(end_ns=10, follow=True)


def test_the_segments_being_recorded_decide_the_format_with_the_initial_result(traffic,
                                                                                tmp_path):
    """History of one link type (ingested Ethernet), a recorder writing raw IP: the follow
    carries both from the start (pcapng), so live raw packets keep coming."""
    src, pkts = traffic
    store = new_store(tmp_path)
    with Store(store) as s:
        s.ingest([capture_of(src, pkts[:40], tmp_path / "old.pcap")])
    raw = FakeRecorder(store, "tun0", linktype=101, snaplen=65535)
    raw.write([_as_raw(p) for p in pkts[40:50]])
    raw.commit()
    with Store(store) as s:
        run = Collector(Follow(s.query_engine(), QuerySpec(bpf="ip", follow=True)))
        run.until_packets(50)
        raw.write([_as_raw(p) for p in pkts[50:70]])
        raw.commit()
        run.until_packets(70)
        assert run.finish() is None
    assert run.follow.snaplens == {1: 65535, 101: 65535}
    got = pcapng_records(run.capture())
    want_eth = read_records(tcpdump(capture_of(src, pkts[:40], tmp_path / "e.pcap"), "ip"))[1]
    assert got[1] == want_eth and len(got[101]) == 30
    assert [r[:8] for r in got[101]] == [p[0][:8] for p in pkts[40:70]]  # their timestamps


def test_a_query_says_what_its_window_lost(traffic, tmp_path):
    from pcapwire.capture.ledger import LossDelta, add_loss
    from pcapwire.store.catalog import Catalog

    src, _pkts = traffic
    store = new_store(tmp_path)
    with Store(store) as s:
        s.ingest([src])
    catalog = Catalog(store / "catalog.sqlite")
    add_loss(catalog, 1, 0, LossDelta("eth0", 0, 2**62, kernel_drops=4, if_drops=1,
                                      backlog_drops=2, disk_drops=2))
    catalog.close()
    done = subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(store),
                           "query", "--bpf", "tcp", "-w", str(tmp_path / "q.pcap")],
                          capture_output=True, check=False)
    assert done.returncode == 0
    assert done.stderr.decode() == (
        "pcapwire: warning: this window had 7 drops: 4 kernel ring, 1 interface, 2 own "
        "backlog (2 of them not written: disk); by interface: eth0 7\n")


def test_now_is_a_time():
    from pcapwire.query.spec import parse_time_ns

    before = time.time_ns()
    assert before <= parse_time_ns("now") <= time.time_ns()
