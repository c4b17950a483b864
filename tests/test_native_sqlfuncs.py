"""pcapwire._native's SQL functions (core/native/sqlfuncs.c), registered for every SQLite
connection opened after :func:`pcapwire._native.sqlite_functions`:
``pcapwire_ip_text(ipver, addr)`` makes the text :func:`socket.inet_ntop` (and so
:func:`pcapwire.triggers.match_index.address_text`, its Python form) makes, for every
address the flow index can hold, and refuses an address too short for its version."""

from __future__ import annotations

import random
import sqlite3

import pytest
from pcapwire import _native as N
from pcapwire.triggers.match_index import address_text

EDGES = [(4, bytes(16)), (4, b"\xff" * 4 + bytes(12)), (4, bytes([1, 10, 100, 255]) + bytes(12)),
         (4, bytes([9, 99, 199, 0]) + bytes(12)), (6, bytes(16)), (6, bytes(15) + b"\x01"),
         (6, bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1])),  # IPv4-mapped
         (6, bytes.fromhex("20010db8000000000001000000000001")),
         (6, bytes.fromhex("fe800000000000000000000000000000")),
         (6, bytes.fromhex("00010000000000000000000000000000")),
         (0, bytes(16)), (41, b"\x01" * 16)]


@pytest.fixture(scope="module")
def db() -> sqlite3.Connection:
    N.sqlite_functions()
    return sqlite3.connect(":memory:")


def test_ip_text_equals_inet_ntop_for_every_kind_of_address(db: sqlite3.Connection) -> None:
    rng = random.Random(5)
    cases = EDGES + [(v, bytes(rng.choice([0, 1, 255, rng.randrange(256)])
                               for _ in range(16)))
                     for v in (4, 6) for _ in range(20_000)]
    got = [db.execute("SELECT pcapwire_ip_text(?, ?)", c).fetchone()[0] for c in cases]
    assert got == [address_text(v, a) for v, a in cases]
    assert got[:12] == ["0.0.0.0", "255.255.255.255", "1.10.100.255", "9.99.199.0", "::",
                        "::1", "::ffff:192.0.2.1", "2001:db8::1:0:0:1", "fe80::", "1::", "", ""]


def test_ip_text_of_null_is_null_and_a_short_address_an_error(db: sqlite3.Connection) -> None:
    assert db.execute("SELECT pcapwire_ip_text(4, NULL), pcapwire_ip_text(4, x'01020304')"
                      ).fetchone() == (None, "1.2.3.4")
    for version, blob, what in [(4, b"\x01\x02\x03", "IPv4 address needs 4 bytes"),
                                (6, bytes(15), "IPv6 address needs 16 bytes"),
                                (6, bytes(17), "IPv6 address needs 16 bytes")]:
        with pytest.raises(sqlite3.OperationalError, match=what):
            db.execute("SELECT pcapwire_ip_text(?, ?)", (version, blob)).fetchone()
        with pytest.raises(ValueError):  # the Python form refuses it too
            address_text(version, blob)
