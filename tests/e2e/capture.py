"""Capture loopback traffic with tcpdump (libpcap), synchronised on events, not sleeps.

``LoopbackCapture`` starts ``tcpdump -i lo -U --immediate-mode -w -`` and waits for its
"listening on" line. ``stop()`` sends a UDP marker datagram after the client is done;
loopback packets are captured in order, so once the marker shows up in tcpdump's output
every earlier packet is there too. Then tcpdump gets SIGINT and the bytes go to a file.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

#: Kernel capture buffer (tcpdump -B, KiB): loopback bursts of 64 KiB packets, and other
#: processes' loopback traffic, must not overflow it.
BUFFER_KIB = 64 * 1024
#: Longest wait for tcpdump to start or to show the marker (a failure, not a pacing).
WAIT_SECONDS = 15.0


def tcpdump_available() -> str | None:
    """Why live capture cannot run here, or None when it can."""
    if shutil.which("tcpdump") is None:
        return "tcpdump is not installed"
    if os.geteuid() != 0:
        return "capturing on lo needs root (CAP_NET_RAW)"
    return None


class LoopbackCapture:
    def __init__(self, path: Path, bpf: str) -> None:
        self.path = path
        self.marker_port = _free_udp_port()
        self.marker = os.urandom(16).hex().encode()
        self.bpf = f"({bpf}) or (udp and port {self.marker_port})"
        self.data = bytearray()
        self._seen = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> LoopbackCapture:
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-B", str(BUFFER_KIB), "-n",
             "-s", "0", "-w", "-", self.bpf], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + WAIT_SECONDS
        err = b""
        while b"listening on" not in err:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stderr], [], [], max(0.0, left))
            if not ready:
                self.proc.kill()
                raise RuntimeError(f"tcpdump did not start: {err.decode(errors='replace')}")
            chunk = os.read(self.proc.stderr.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"tcpdump exited: {err.decode(errors='replace')}")
            err += chunk
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            self.data += chunk
            if self.marker in self.data[-(len(chunk) + 64):]:
                self._seen.set()

    def stop(self) -> Path:
        assert self.proc is not None and self._reader is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(self.marker, ("127.0.0.1", self.marker_port))
        if not self._seen.wait(WAIT_SECONDS):
            self.proc.kill()
            raise RuntimeError("tcpdump never showed the end-of-test marker")
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(WAIT_SECONDS)
        self._reader.join(WAIT_SECONDS)
        self.path.write_bytes(bytes(self.data))
        return self.path

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
