"""Following what the real recorder (:mod:`pcapwire.capture`) records from a pcap stream:
the follow delivers the packets written after it started, each once, and the whole is
byte for byte what tcpdump reads of the same packets (in process, and as two commands:
``pcapwire capture --from -`` and ``pcapwire query --follow``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from liveutil import WAIT_S, Collector, packets, read_until
from pcaputil import read_records, tcpdump
from pcapwire.capture.config import RecorderConfig
from pcapwire.capture.recorder import Recorder
from pcapwire.capture.sources import StreamSource
from pcapwire.query import QuerySpec
from pcapwire.query.follow import Follow
from pcapwire.store import Store
from pcapwire.synth import generate


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    path = tmp_path_factory.mktemp("traffic") / "t.pcap"
    generate(path, 300_000, seed=5)
    return path, packets(path)


def records(pkts: list) -> bytes:
    return b"".join(p[0] for p in pkts)


def test_follow_over_the_recorder(traffic, tmp_path):
    src, pkts = traffic
    root = tmp_path / "store"
    read_end, write_end = os.pipe()
    recorder = Recorder(root, RecorderConfig(commit_interval=0.05, fsync=False))
    recorder.start([StreamSource("feed", read_end)])
    half = len(pkts) // 2
    try:
        os.write(write_end, src.read_bytes()[:24] + records(pkts[:half]))
        with Store(root) as store:
            run = Collector(Follow(store.query_engine(), QuerySpec(bpf="tcp", follow=True)))
            run.until_packets(0)  # it has started: what comes next is followed
            view = memoryview(records(pkts[half:]))
            while view:
                view = view[os.write(write_end, view):]
            expected = tcpdump(src, "tcp")
            run.until_packets(len(read_records(expected)[1]))
            assert run.finish() is None
    finally:
        os.close(write_end)
        recorder.stop()
    assert run.capture() == expected
    assert run.follow.rounds >= 1


def test_capture_and_follow_commands(traffic, tmp_path):
    src, pkts = traffic
    root = tmp_path / "store"
    Store(root).close()
    pw = [sys.executable, "-m", "pcapwire.cli", "--data-dir", str(root)]
    capture = subprocess.Popen([*pw, "capture", "--from", "-", "--commit-interval", "0.05",
                                "--no-fsync", "--progress", "none"], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    follow = subprocess.Popen([*pw, "query", "--follow", "--bpf", "udp or icmp", "-w", "-"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    half = len(pkts) // 2
    try:
        capture.stdin.write(src.read_bytes()[:24] + records(pkts[:half]))
        capture.stdin.flush()
        out = bytearray()
        read_until(follow, out, 24)  # the header: the follow runs, over a recorded segment
        capture.stdin.write(records(pkts[half:]))
        capture.stdin.close()
        expected = tcpdump(src, "udp or icmp")
        read_until(follow, out, len(expected))
        follow.send_signal(signal.SIGINT)
        rest, err = follow.communicate(timeout=WAIT_S)
        assert (follow.returncode, err) == (0, b"")
        assert bytes(out) + rest == expected
        assert capture.wait(WAIT_S) == 0, capture.stderr.read()
    finally:
        for proc in (capture, follow):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert len(read_records(expected)[1]) > 0
    assert len(pkts) > len(read_records(expected)[1])
