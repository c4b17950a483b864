"""Stream inputs of the recorder (issue 11): a pcap stream on stdin, a PCAP-over-IP client
(reconnecting) and server, all on 127.0.0.1. The packets recorded are the input's, byte
for byte: ``pcapwire query -w -`` equals ``tcpdump -r INPUT -w -``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from captureutil import wait_for
from conftest import corpus_file
from pcaputil import read_records, tcpdump
from pcapwire import _native
from pcapwire.capture import Recorder, RecorderConfig
from pcapwire.capture.sources import (
    AfPacketSource,
    PcapOverIpClient,
    PcapOverIpListener,
    StreamSource,
    parse_from,
)
from pcapwire.capture.status import read_status
from pcapwire.errors import ConfigError
from pcapwire.store import Store
from pcapwire.synth import generate

STREAMED = ["zeek-http-get", "zeek-pcap-nanosecond-http-to-ssh", "zeek-linux-sll2",
            "arkime-pcap-big-endian", "zeek-ipv4-fragmented-tcp", "zeek-smtp-two-messages"]


def cli(data_dir: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data_dir),
                           *args], capture_output=True, **kw)


def queried(data_dir: Path) -> bytes:
    out = cli(data_dir, "query", "-w", "-")
    assert out.returncode == 0, out.stderr
    return out.stdout


def packets(data_dir: Path) -> int:
    with Store(data_dir) as store:
        return store.catalog.stats()["packets"]


def config(**kw) -> RecorderConfig:
    return RecorderConfig(**{"commit_interval": 0.05, "status_interval": 0.1,
                             "rotate_seconds": 0, "disk_reserve": 0, **kw})


@pytest.fixture(scope="module")
def synths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("streams")
    a, b = d / "a.pcap", d / "b.pcap"
    generate(a, 1_500_000, seed=11, start_s=1_700_000_000)
    generate(b, 1_000_000, seed=12, start_s=1_700_100_000)
    return a, b


@pytest.mark.parametrize("case_id", STREAMED)
def test_stdin_records_the_stream_byte_for_byte(tmp_path: Path, case_id: str) -> None:
    src = corpus_file(case_id)
    with src.open("rb") as stdin:
        rec = cli(tmp_path, "capture", "--from", "-", "--progress", "none", stdin=stdin)
    assert rec.returncode == 0, rec.stderr
    assert b"stdin: " in rec.stderr and b"drops: kernel 0" in rec.stderr
    assert queried(tmp_path) == tcpdump(src)
    doc = read_status(tmp_path / "capture" / "status.json")
    assert doc is not None and doc["state"] == "stopped"
    assert doc["interfaces"]["stdin"]["packets"] == len(read_records(tcpdump(src))[1])


def test_stdin_from_a_pipe_of_tcpdump(tmp_path: Path, synths: tuple[Path, Path]) -> None:
    """``tcpdump -w - … | pcapwire capture --from -`` (tcpdump reads a file here: the
    netns tests capture from interfaces)."""
    src = synths[0]
    dump = subprocess.Popen(["tcpdump", "-r", str(src), "-w", "-", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    rec = cli(tmp_path, "capture", "--from", "-", "--progress", "lines", stdin=dump.stdout)
    assert dump.wait() == 0
    assert rec.returncode == 0, rec.stderr
    assert queried(tmp_path) == tcpdump(src, "tcp")


def test_garbage_on_stdin_is_reported_and_nothing_is_stored(tmp_path: Path) -> None:
    rec = cli(tmp_path, "capture", "--from", "-", "--progress", "none",
              input=b"GET / HTTP/1.1\r\n\r\n" * 10)
    assert rec.returncode == 1  # an input error, reported
    assert b"not a pcap" in rec.stderr and b"input errors 1" in rec.stderr
    assert packets(tmp_path) == 0


def _serve(server: socket.socket, payloads: list[bytes]) -> threading.Thread:
    """Serve one payload per accepted connection, then close it (a PCAP-over-IP server)."""

    def run() -> None:
        for data in payloads:
            conn, _ = server.accept()
            with conn:
                conn.sendall(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_pcap_over_ip_client_reconnects_and_records_each_stream(
        tmp_path: Path, synths: tuple[Path, Path]) -> None:
    a, b = synths
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        serving = _serve(server, [a.read_bytes(), b.read_bytes()])
        client = PcapOverIpClient("127.0.0.1", port, backoff=0.05)
        rec = Recorder(tmp_path, config())
        rec.start([client])
        try:
            expected = len(read_records(tcpdump(a))[1]) + len(read_records(tcpdump(b))[1])
            wait_for(lambda: packets(tmp_path) == expected, what="both streams recorded")
            assert client.connections >= 2
        finally:
            rec.stop()
        serving.join(5)
    assert queried(tmp_path) == tcpdump(a) + tcpdump(b)[24:]
    with Store(tmp_path) as store:
        segs = store.catalog.segments()
        ifaces = {r[0] for r in store.catalog.db.execute(
            "SELECT interface FROM capture_segments")}
    assert len(segs) == 1 and ifaces == {f"pcap-over-ip://127.0.0.1:{port}"}  # one source


def test_pcap_over_ip_client_from_the_command_line(tmp_path: Path,
                                                   synths: tuple[Path, Path]) -> None:
    a = synths[0]
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        _serve(server, [a.read_bytes()])
        proc = subprocess.Popen(
            [sys.executable, "-m", "pcapwire.cli", "--data-dir", str(tmp_path), "capture",
             "--from", f"pcap-over-ip://127.0.0.1:{port}", "--commit-interval", "0.1",
             "--progress", "none"], stderr=subprocess.PIPE)
        try:
            status = tmp_path / "capture" / "status.json"
            count = len(read_records(tcpdump(a))[1])
            wait_for(lambda: (d := read_status(status)) and d["pid"] == proc.pid
                     and d["interfaces"][f"pcap-over-ip://127.0.0.1:{port}"]["packets"] == count,
                     what="the stream recorded")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert queried(tmp_path) == tcpdump(a)
    assert not list(tmp_path.rglob("*.live"))


def test_pcap_over_ip_server_records_each_connection(tmp_path: Path,
                                                     synths: tuple[Path, Path]) -> None:
    """Two senders at once and one that is not pcap: each stream its own segments,
    the garbage reported, queries merge the streams by time."""
    a, b = synths
    listener = PcapOverIpListener("127.0.0.1", 0)
    rec = Recorder(tmp_path, config())
    rec.start([], [listener])
    try:
        doc = wait_for(lambda: read_status(tmp_path / "capture" / "status.json"),
                       what="the status file")
        assert doc["listening"] == [f"127.0.0.1:{listener.port}"]

        def send(data: bytes) -> None:
            with socket.create_connection(("127.0.0.1", listener.port)) as s:
                s.sendall(data)

        senders = [threading.Thread(target=send, args=(data,)) for data in
                   (a.read_bytes(), b.read_bytes(), b"not a capture at all" * 100)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        expected = len(read_records(tcpdump(a))[1]) + len(read_records(tcpdump(b))[1])
        wait_for(lambda: packets(tmp_path) == expected, what="both streams recorded")
        name = listener.interface
        wait_for(lambda: rec.totals()[name]["input_errors"] == 1, what="the garbage reported")
    finally:
        rec.stop()
    assert queried(tmp_path) == tcpdump(a) + tcpdump(b)[24:]
    with Store(tmp_path) as store:
        assert len(store.catalog.segments()) == 2
        assert {r[0] for r in store.catalog.db.execute(
            "SELECT interface FROM capture_segments")} == {name}
    out = cli(tmp_path, "capture", "status", "--json")
    info = json.loads(out.stdout)
    assert info["status"]["interfaces"][name]["packets"] == expected
    assert info["loss"]["interfaces"][name]["segments"] == 2
    text = cli(tmp_path, "capture", "status")
    assert text.returncode == 0 and name.encode() in text.stdout


def test_pcap_over_ip_server_from_the_command_line(tmp_path: Path,
                                                   synths: tuple[Path, Path]) -> None:
    a = synths[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pcapwire.cli", "--data-dir", str(tmp_path), "capture",
         "--listen-pcap-over-ip", "127.0.0.1:0", "--commit-interval", "0.1",
         "--progress", "none"], stderr=subprocess.PIPE)
    try:
        status = tmp_path / "capture" / "status.json"
        doc = wait_for(lambda: (d := read_status(status)) and d["pid"] == proc.pid and d,
                       what="the listener")
        port = int(doc["listening"][0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(a.read_bytes())
        wait_for(lambda: packets(tmp_path) == len(read_records(tcpdump(a))[1]),
                 what="the stream committed")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert queried(tmp_path) == tcpdump(a)


def test_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for args, message in [((), b"nothing to record"),
                          (("--from", "http://x"), b"expected - (stdin) or pcap-over-ip"),
                          (("--listen-pcap-over-ip", "nohost"), b"expected HOST:PORT"),
                          (("--from", "-", "--filter", "tcp"), b"apply to -i only"),
                          (("--from", "-", "--segment-size", "5000"), b"--segment-size")]:
        out = cli(tmp_path, "capture", *args, input=b"")
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
    with pytest.raises(ConfigError, match="pcap-over-ip"):
        parse_from("tcp://127.0.0.1:1")
    monkeypatch.delattr(_native, "Capture", raising=False)
    with pytest.raises(ConfigError, match="native capture core"):
        AfPacketSource("lo")


def test_a_stream_may_wait_instead_of_dropping(tmp_path: Path,
                                               synths: tuple[Path, Path]) -> None:
    """``--backlog-full wait``: with the writer held and a one-byte backlog, the stream's
    sender is slowed down (the pipe fills), nothing is dropped."""
    a = synths[0]
    read_end, write_end = os.pipe()
    gate = threading.Event()
    rec = Recorder(tmp_path, config(queue_bytes=1, backlog_policy="wait", writer_gate=gate))
    rec.start([StreamSource("pipe", read_end)])
    data = a.read_bytes()
    sent = threading.Event()

    def send() -> None:
        with os.fdopen(write_end, "wb") as f:
            f.write(data)
        sent.set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        wait_for(lambda: len(rec._running[0].backlog) == 1, what="the backlog full")
        assert not sent.is_set()  # 1.5 MB cannot all sit in a pipe and a one-byte backlog
        gate.set()
        wait_for(lambda: rec.inputs_ended, what="the stream recorded")
    finally:
        gate.set()
        rec.stop()  # closes read_end (the source owns it)
    sender.join(5)
    totals = rec.totals()["pipe"]
    assert totals["backlog_drops"] == 0
    assert totals["packets"] == len(read_records(tcpdump(a))[1])
    assert queried(tmp_path) == tcpdump(a)
