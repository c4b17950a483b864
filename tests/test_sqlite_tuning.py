"""SQLite's memory statistics are off in every process that imports pcapwire
(:mod:`pcapwire.sqlite_tuning`): connections allocate without SQLite counting it, and
SQLite works as before. A process that opened a connection before importing pcapwire
keeps the statistics on (SQLite cannot be reconfigured under an open connection)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from pcapwire.sqlite_tuning import (
    SQLITE_CONFIG_MEMSTATUS,
    SQLITE_STATUS_MALLOC_COUNT,
    SQLITE_STATUS_MEMORY_USED,
)


def _use(db: sqlite3.Connection) -> int:
    """Work that allocates: a table of 2,000 rows, an index, a sum."""
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    db.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}" * 10,) for i in range(2000)])
    db.execute("CREATE INDEX t_v ON t(v)")
    return int(db.execute("SELECT sum(k) FROM t WHERE v LIKE 'row 1%'").fetchone()[0])


_AFTER = """
import json, sqlite3, sys
import pcapwire  # first: the statistics off
from pcapwire import sqlite_tuning as t
sys.path.insert(0, sys.argv[1])
from test_sqlite_tuning import _use
with sqlite3.connect(sys.argv[2]) as db, sqlite3.connect(":memory:") as mem:
    sums = [_use(db), _use(mem)]
    # connections open and holding pages, yet nothing counted
    counted = [t.status(t.SQLITE_STATUS_MEMORY_USED)[0], t.status(t.SQLITE_STATUS_MALLOC_COUNT)[0]]
    # again, with connections open: off already, nothing shut down
    again = t.memstatus_off()
    print(json.dumps([sums, counted, again, db.execute("SELECT count(*) FROM t").fetchone()[0]]))
"""


def test_the_statistics_are_off_and_sqlite_works(tmp_path: Path) -> None:
    assert (SQLITE_CONFIG_MEMSTATUS, SQLITE_STATUS_MEMORY_USED,
            SQLITE_STATUS_MALLOC_COUNT) == (9, 0, 9)
    out = subprocess.run([sys.executable, "-c", _AFTER, str(Path(__file__).parent),
                          str(tmp_path / "a.sqlite")], capture_output=True, text=True,
                         check=True).stdout
    # the rows whose text starts with "row 1": 1, 10-19, 100-199, 1000-1999
    want = sum(k + 1 for k in [1, *range(10, 20), *range(100, 200), *range(1000, 2000)])
    assert json.loads(out) == [[want, want], [0, 0], True, 2000]


_BEFORE = """
import json, sqlite3
db = sqlite3.connect(":memory:")
db.execute("CREATE TABLE t (v)")
db.executemany("INSERT INTO t VALUES (?)", [(str(i) * 50,) for i in range(500)])
import pcapwire  # too late: a connection is open
from pcapwire import sqlite_tuning as t
print(json.dumps([t.memstatus_off(), t.status(t.SQLITE_STATUS_MALLOC_COUNT)[0] > 0,
                  t.status(t.SQLITE_STATUS_MEMORY_USED)[0] > 0,
                  db.execute("SELECT count(*) FROM t").fetchone()[0]]))
"""


def test_a_connection_opened_before_keeps_the_statistics_on() -> None:
    out = subprocess.run([sys.executable, "-c", _BEFORE], capture_output=True, text=True,
                         check=True).stdout
    # refused (a connection is open), still counting, the connection unharmed
    assert json.loads(out) == [False, True, True, 500]
