"""Regenerate input.pcap of the golden case hashlist-triage (deterministic: running it
again writes the same bytes; tests/test_golden.py checks that).

    .venv/bin/python tests/golden/hashlist-triage/make_input.py [OUT]

Six HTTP downloads by 10.3.0.5 from 192.0.2.30:80, one connection each (client ports
43001-43006), and where each file's digests are listed (deny.txt, the IR feed; NSRLFile.txt,
the allow list):

=====  ============  ========================================  ==========
port   file          lists                                     verdict
=====  ============  ========================================  ==========
43001  dropper.exe   deny.txt by SHA-256                        known-bad
43002  invoice.doc   deny.txt by MD5                            known-bad
43003  readme.txt    NSRLFile.txt by SHA-1                      known-good
43004  updater.bin   deny.txt by SHA-256 and NSRLFile.txt       known-bad (deny wins)
43005  random.dat    none                                       unknown
43006  dropper.exe   (again, on another connection)             known-bad
=====  ============  ========================================  ==========

``python make_input.py --lists`` prints the digests the two list files hold.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from goldencraft import Capture, write  # noqa: E402

FILES = {
    "dropper.exe": b"MZ\x90\x00\x03\x00\x00\x00" + b"golden dropper, not a real program\n" * 8,
    "invoice.doc": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"golden macro document\n" * 8,
    "readme.txt": b"This is the readme of a well-known, allow-listed package.\n" * 4,
    "updater.bin": b"\x7fELF" + b"golden updater, on both lists\n" * 8,
    "random.dat": bytes((i * 73 + 11) % 256 for i in range(600)),
}
DOWNLOADS = ["dropper.exe", "invoice.doc", "readme.txt", "updater.bin", "random.dat",
             "dropper.exe"]


def main() -> None:
    if sys.argv[1:] == ["--lists"]:
        for name, data in FILES.items():
            print(name, "sha256", hashlib.sha256(data).hexdigest(), "md5",
                  hashlib.md5(data).hexdigest(), "sha1",  # noqa: S324
                  hashlib.sha1(data).hexdigest())  # noqa: S324
        return
    cap = Capture()
    for i, name in enumerate(DOWNLOADS):
        body = FILES[name]
        cap.wait(250_000)
        cap.tcp("10.3.0.5", 43001 + i, "192.0.2.30", 80, [
            ("c", f"GET /dl/{name} HTTP/1.1\r\nHost: dl.example\r\n\r\n".encode()),
            ("s", b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)],
            isn=(1000 + 100_000 * i, 5000 + 100_000 * i))
    write(cap.pcap(), __file__)


if __name__ == "__main__":
    main()
