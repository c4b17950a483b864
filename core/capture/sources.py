"""Inputs of the recorder. Every source yields batches in the shape
``_native.Reader.feed()`` returns (contract 1): ``(linktype, snaplen, tsprec, records,
meta, offset)``; the recorder does not care where they come from.

* :class:`AfPacketSource`: a thin adapter over the native capture core
  ``_native.Capture`` (AF_PACKET TPACKET_V3 rings, one per thread, in a fanout group);
* :class:`StreamSource`: a pcap or pcapng byte stream on a file descriptor (stdin, a
  pipe, one accepted PCAP-over-IP connection), parsed incrementally by ``_native.Reader``;
* :class:`PcapOverIpClient`: connects to a PCAP-over-IP server and reads its stream,
  reconnecting with exponential backoff;
* :class:`PcapOverIpListener`: accepts PCAP-over-IP connections (Arkime's pcap-over-ip:
  a TCP stream carrying a pcap file); each connection becomes a StreamSource of its own.
"""

from __future__ import annotations

import logging
import os
import re
import select
import socket
import time
from pathlib import Path
from typing import Any, Protocol

from pcapwire import _native
from pcapwire.errors import ConfigError

log = logging.getLogger(__name__)

#: (linktype, snaplen, tsprec, records, meta, offset): what _native.Reader.feed() returns
Batch = tuple[int, int, int, bytes, bytes, int]

READ_BYTES = 1 << 20  # one read() of a stream
READS_PER_CALL = 8  # reads of data already waiting that one batches() call makes
STREAM_BATCH_BYTES = 4 << 20  # max_batch_bytes of a stream's Reader
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0  # PCAP-over-IP client reconnects
CONNECT_TIMEOUT = 5.0
MAX_CONNECTIONS = 64  # PCAP-over-IP connections a listener serves at once
SYSFS_NET = Path("/sys/class/net")


class Source(Protocol):
    """What the recorder reads from. ``batches`` waits at most ``timeout`` seconds and
    returns what arrived (possibly nothing); ``stats`` returns cumulative counters
    (``kernel_drops``, ``if_drops``, ``input_errors``; absent keys count 0)."""

    name: str  # unique in a recorder; names the segment directory
    interface: str  # the loss-accounting key (several sources may share one)
    live_timestamps: bool  # packet times are arrival times (arrival-to-queryable latency)
    exhausted: bool  # the input has ended (EOF); the recorder seals and stops reading

    def batches(self, timeout: float) -> list[Batch]: ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def slug(name: str) -> str:
    """A source name as a directory name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:64] or "source"


# -- AF_PACKET -------------------------------------------------------------------------------
def native_capture() -> Any:
    """``_native.Capture``, or a ConfigError when this build has none."""
    cls = getattr(_native, "Capture", None)
    if cls is None:
        raise ConfigError("capturing from an interface (-i) needs the native capture core "
                          "(_native.Capture), which this build of pcapwire does not have; "
                          "rebuild it (pip install -e .) or record a stream with --from - / "
                          "--from pcap-over-ip://HOST:PORT / --listen-pcap-over-ip HOST:PORT")
    return cls


def interface_drops(ifname: str) -> int:
    """Packets the interface dropped before any capture saw them, as libpcap counts
    ``ps_ifdrop`` on Linux: ``rx_missed_errors + rx_fifo_errors`` (``rx_dropped`` also counts
    packets the stack drops *after* capture taps, e.g. unknown protocols)."""
    total = 0
    for name in ("rx_missed_errors", "rx_fifo_errors"):
        try:
            total += int((SYSFS_NET / ifname / "statistics" / name).read_text())
        except (OSError, ValueError):
            pass
    return total


class AfPacketSource:
    """One thread's AF_PACKET ring on an interface (``_native.Capture``). The interface's
    own drop counters are reported by its thread 0 only (they are per interface)."""

    live_timestamps = True
    exhausted = False

    def __init__(self, ifname: str, thread: int = 0, threads: int = 1, *, snaplen: int = 262144,
                 bpf: str = "", ring_bytes: int | None = None, fanout_group: int = 0,
                 promisc: bool = True) -> None:
        cls = native_capture()
        kwargs: dict[str, Any] = {"snaplen": snaplen, "bpf": bpf, "promisc": promisc,
                                  "fanout_group": fanout_group if threads > 1 else 0,
                                  # the kernel's defrag flag would hand on reassembled
                                  # datagrams that never crossed the wire: not lossless
                                  "fanout_mode": "hash-nodefrag"}
        if ring_bytes:
            kwargs["ring_bytes"] = ring_bytes
        try:
            self.cap = cls(ifname, **kwargs)
        except PermissionError as exc:
            raise ConfigError(f"cannot capture on {ifname}: {exc}; run as root or give the "
                              "program CAP_NET_RAW and CAP_NET_ADMIN (README, 'Live "
                              "recording')") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot capture on {ifname}: {exc}") from None
        self.name = ifname if threads == 1 else f"{ifname}#{thread}"
        self.interface = ifname
        self._primary = thread == 0
        self._if_base = interface_drops(ifname) if self._primary else 0

    def batches(self, timeout: float) -> list[Batch]:
        return list(self.cap.poll(max(0, int(timeout * 1000))))

    def stats(self) -> dict[str, int]:
        s = self.cap.stats()
        out = {"kernel_drops": int(s.get("kernel_drops", 0)), "if_drops": 0}
        if self._primary:
            now = interface_drops(self.interface)
            if now < self._if_base:  # the counters were reset (interface re-created)
                self._if_base = 0
            out["if_drops"] = now - self._if_base
        return out

    def close(self) -> None:
        self.cap.close()


# -- streams ---------------------------------------------------------------------------------
class StreamSource:
    """A pcap/pcapng stream on a file descriptor, parsed as it arrives. Damage is reported
    (logged, counted as ``input_errors``) and the valid records around it are kept; input
    that is no capture at all ends the stream."""

    live_timestamps = False

    def __init__(self, name: str, fd: int, interface: str | None = None,
                 owner: Any = None) -> None:
        self.name = name
        self.interface = interface or name
        self.fd = fd
        self._owner = owner  # a socket or file object that must outlive the fd's use
        self.reader = _native.Reader(name, max_batch_bytes=STREAM_BATCH_BYTES)
        self.exhausted = False
        self.input_errors = 0
        self._reported = 0

    def batches(self, timeout: float) -> list[Batch]:
        if self.exhausted:
            return []
        out: list[Batch] = []
        wait = timeout
        for _ in range(READS_PER_CALL):
            try:
                ready, _, _ = select.select([self.fd], [], [], wait)
                if not ready:
                    break
                data = os.read(self.fd, READ_BYTES)
            except OSError as exc:
                log.warning("%s: read failed (%s); the stream ends here", self.name, exc)
                data = b""
            if not data:
                out += self.reader.finish()
                self.exhausted = True
                break
            out += self.reader.feed(data)
            wait = 0.0
        self._check()
        return out

    def _check(self) -> None:
        errors = self.reader.errors
        for offset, message in errors[self._reported:]:
            self.input_errors += 1
            log.warning("%s: byte %d: %s", self.name, offset, message)
        self._reported = len(errors)
        if self.reader.format is None and errors and not self.exhausted:
            log.error("%s: not a pcap or pcapng stream; closed", self.name)
            self.exhausted = True

    def stats(self) -> dict[str, int]:
        return {"input_errors": self.input_errors}

    def close(self) -> None:
        self.exhausted = True
        if self._owner is not None:
            self._owner.close()
        elif self.fd > 2:
            os.close(self.fd)


def stdin_source() -> StreamSource:
    return StreamSource("stdin", 0)


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{what}: expected HOST:PORT, not {text!r}")
    return host, int(port)


class PcapOverIpClient:
    """Reads the pcap stream a PCAP-over-IP server sends; when it ends or fails, connects
    again after a backoff that doubles up to BACKOFF_MAX (reset by a stream that
    delivered packets). Each connection is a new pcap stream (its own header)."""

    live_timestamps = False
    exhausted = False

    def __init__(self, host: str, port: int, backoff: float = BACKOFF_FIRST,
                 backoff_max: float = BACKOFF_MAX) -> None:
        self.host, self.port = host, port
        self.name = self.interface = f"pcap-over-ip://{host}:{port}"
        self.backoff_first, self.backoff_max = backoff, backoff_max
        self.backoff = backoff
        self.retry_at = 0.0
        self.stream: StreamSource | None = None
        self.connections = 0
        self._errors_before = 0  # input errors of streams that have ended
        self._closed = False

    def batches(self, timeout: float) -> list[Batch]:
        if self._closed:
            return []
        if self.stream is None and not self._connect(timeout):
            return []
        assert self.stream is not None
        out = self.stream.batches(timeout)
        if self.stream.exhausted:
            delivered = self.stream.reader.packets > 0
            self._errors_before += self.stream.input_errors
            self.stream.close()
            self.stream = None
            if delivered:
                self.backoff = self.backoff_first
            log.info("%s: stream ended; connecting again in %.1f s", self.name, self.backoff)
            self._schedule()
        return out

    def _connect(self, timeout: float) -> bool:
        wait = self.retry_at - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))
            return False
        try:
            sock = socket.create_connection((self.host, self.port),
                                            timeout=min(CONNECT_TIMEOUT, max(timeout, 0.1)))
        except OSError as exc:
            log.warning("%s: cannot connect (%s); trying again in %.1f s", self.name, exc,
                        self.backoff)
            self._schedule()
            return False
        sock.setblocking(True)
        self.connections += 1
        self.stream = StreamSource(f"{self.name} (connection {self.connections})",
                                   sock.fileno(), self.interface, owner=sock)
        return True

    def _schedule(self) -> None:
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, self.backoff_max)

    def stats(self) -> dict[str, int]:
        now = self.stream.input_errors if self.stream is not None else 0
        return {"input_errors": self._errors_before + now}

    def close(self) -> None:
        self._closed = True
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class PcapOverIpListener:
    """A PCAP-over-IP server: every accepted TCP connection carries one pcap stream and
    becomes a :class:`StreamSource` (interface ``pcap-over-ip-listen://HOST:PORT``)."""

    def __init__(self, host: str, port: int) -> None:
        try:
            self.sock = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise ConfigError(f"cannot listen for PCAP-over-IP on {host}:{port}: {exc}") from None
        self.sock.settimeout(None)
        self.port = int(self.sock.getsockname()[1])
        self.host = host
        self.interface = f"pcap-over-ip-listen://{host}:{self.port}"
        self.accepted = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def accept(self, timeout: float) -> StreamSource | None:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return None
        try:
            conn, peer = self.sock.accept()
        except OSError as exc:
            log.warning("%s: accept failed: %s", self.interface, exc)
            return None
        conn.setblocking(True)
        self.accepted += 1
        name = f"{self.interface}<-{peer[0]}:{peer[1]}#{self.accepted}"
        return StreamSource(name, conn.fileno(), self.interface, owner=conn)

    def close(self) -> None:
        self.sock.close()


def parse_from(text: str) -> StreamSource | PcapOverIpClient:
    """``--from``: ``-`` (stdin) or ``pcap-over-ip://HOST:PORT``."""
    if text == "-":
        return stdin_source()
    prefix = "pcap-over-ip://"
    if text.startswith(prefix):
        return PcapOverIpClient(*parse_hostport(text[len(prefix):].rstrip("/"), "--from"))
    raise ConfigError(f"--from {text}: expected - (stdin) or pcap-over-ip://HOST:PORT")
