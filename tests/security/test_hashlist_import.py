"""Security finding 9.5: an uploaded NSRL RDSv3 (SQLite) file whose ``FILE`` view never
ends (a recursive query, a join that spins) must not run forever. The reader opens it
read-only under SQLite limits, an authorizer refuses what a plain view never does, a
progress handler enforces the time and SQLite-step budgets and cancellation, a row limit
caps ``FILE``; an import over a limit, failed or cancelled (also: the API client left)
keeps nothing -- no half list, no space, no upload -- and the tenant's next import runs.

Every wait is bounded (:data:`BOUND`), so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from apiutil import Tokens, bearer
from pcapwire.api import ApiConfig, create_app
from pcapwire.api import limits as api_limits
from pcapwire.hashlist import DB_NAME, HashListError, HashListStore, Source, rds3
from pcapwire.hashlist import limits as hl_limits
from pcapwire.hashlist import store as store_module
from pcapwire.hashlist.formats import Reader
from pcapwire.hashlist.limits import ImportCancelled, ImportLimits, LimitExceeded

#: Seconds any one step may take before the test fails (today's code never ends).
BOUND = 60.0
SQLITE_TYPE = "application/vnd.sqlite3"
ZEROS = "0" * 64


def sha256(i: int) -> str:
    return hashlib.sha256(b"%d" % i).hexdigest()


def sqlite_file(path: Path, script: str, rows: int = 0) -> Path:
    """A database made by ``script``; ``rows`` rows (n, sha256 hex) in its table ``T``."""
    db = sqlite3.connect(path)
    db.executescript(script)
    if rows:
        db.executemany("INSERT INTO T VALUES (?, ?)", ((i, sha256(i)) for i in range(rows)))
    db.commit()
    db.close()
    return path


def recursive_rds3(path: Path) -> Path:
    """The finding's file: ``FILE`` counts 1, 2, 3... for ever, each a valid SHA-256."""
    return sqlite_file(path, f"""
        CREATE TABLE METADATA (sha256 VARCHAR);
        CREATE VIEW FILE AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r)
            SELECT substr('{ZEROS}' || n, -64, 64) AS sha256, NULL AS sha1, NULL AS md5,
            'x' AS file_name FROM r;""")


def spinning_rds3(path: Path, first: int = 0) -> Path:
    """No recursion: ``first`` rows of ``T``, then a triple join of 1,000 rows that never
    matches (10^9 combinations: hours of SQLite work, no row)."""
    return sqlite_file(path, """
        CREATE TABLE T (n INTEGER, h TEXT);
        CREATE TABLE S (n INTEGER);
        CREATE VIEW FILE AS SELECT h AS sha256, NULL AS sha1, NULL AS md5 FROM T
            UNION ALL SELECT NULL, NULL, NULL FROM S a, S b, S c WHERE a.n + b.n + c.n < 0;
        WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < 999)
            INSERT INTO S SELECT n FROM k;""", rows=first)


def table_rds3(path: Path, rows: int) -> Path:
    """A minimal release: a ``FILE`` table of ``rows`` distinct SHA-256 and MD5."""
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE FILE (sha256 VARCHAR, sha1 VARCHAR, md5 VARCHAR, "
               "file_name VARCHAR, file_size INTEGER, package_id INTEGER)")
    db.executemany("INSERT INTO FILE VALUES (?, NULL, ?, ?, 1, 1)",
                   ((sha256(i).upper(), hashlib.md5(b"%d" % i).hexdigest(),  # noqa: S324
                     f"f{i}.dll") for i in range(rows)))
    db.commit()
    db.close()
    return path


def full_rds3(path: Path, rows: int) -> Path:
    """NIST's layout: ``FILE`` a view joining METADATA and PACKAGE_OBJECT, upper-casing."""
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE PACKAGE_OBJECT (package_object_id INTEGER UNIQUE NOT NULL,
            package_id INTEGER NOT NULL, object_id INTEGER UNIQUE NOT NULL);
        CREATE TABLE METADATA (metadata_id NUMERIC UNIQUE NOT NULL, object_id INTEGER,
            file_name VARCHAR NOT NULL, extension VARCHAR DEFAULT '' NOT NULL,
            bytes INTEGER NOT NULL, crc32 VARCHAR NOT NULL, md5 VARCHAR NOT NULL,
            sha1 VARCHAR NOT NULL, sha256 VARCHAR NOT NULL);
        CREATE VIEW FILE AS SELECT UPPER(md.sha256) AS sha256, UPPER(md.sha1) AS sha1,
            UPPER(md.md5) AS md5, CASE md.extension WHEN '' THEN md.file_name
            ELSE md.file_name||'.'||md.extension END AS file_name, md.bytes AS file_size,
            po.package_id FROM METADATA AS md, PACKAGE_OBJECT AS po
            WHERE md.object_id = po.object_id;""")
    for i in range(rows):
        db.execute("INSERT INTO PACKAGE_OBJECT VALUES (?,?,?)", (i, 100 + i, i))
        db.execute("INSERT INTO METADATA VALUES (?,?,?,?,?,?,?,?,?)", (
            i, i, f"f{i}", "dll", 10, "0", hashlib.md5(b"%d" % i).hexdigest(),  # noqa: S324
            hashlib.sha1(b"%d" % i).hexdigest(), sha256(i)))  # noqa: S324
    db.commit()
    db.close()
    return path


def bounded(fn: Callable[[], Any], seconds: float = BOUND) -> Any:
    """``fn()`` in a thread; fails the test when it runs longer than ``seconds``."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"still running after {seconds} s (no limit stopped it)")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def read_all(path: Path, limits: ImportLimits | None = None) -> list[bytes]:
    from pcapwire.hashlist.limits import Budget

    reader = Reader(Source(path), lambda _: None, budget=Budget(limits or ImportLimits()))
    return [d for d, _ in reader]


def store_state(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, state) of every list row, and the per-list tables, of the store ``path``."""
    if not path.exists():
        return [], []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        lists = db.execute("SELECT name, state FROM lists ORDER BY id").fetchall()
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'h\\_%' "
            "ESCAPE '\\'")]
        return lists, tables
    finally:
        db.close()


def processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line holds ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


# ---- the reader and the store -----------------------------------------------------------

def test_the_recursive_view_is_refused_at_once(tmp_path: Path) -> None:
    bad = recursive_rds3(tmp_path / "RDS_hostile.db")
    t0 = time.monotonic()
    with pytest.raises(HashListError, match=r"RDS_hostile.db: not a plain NSRL RDSv3 "
                       r"database: FILE uses a recursive query \(WITH RECURSIVE\); refused"):
        bounded(lambda: read_all(bad))
    assert time.monotonic() - t0 < 10
    with HashListStore(tmp_path / DB_NAME) as store:
        with pytest.raises(HashListError, match="recursive query"):
            bounded(lambda: store.import_sources([Source(bad)], name="nsrl", kind="allow"))
        assert store.lists() == []
    assert store_state(tmp_path / DB_NAME) == ([], [])


def test_a_legitimate_rds3_still_imports_with_exact_counts(tmp_path: Path) -> None:
    path = full_rds3(tmp_path / "RDS_2024.03.1_modern_minimal.db", 500)
    with HashListStore(tmp_path / DB_NAME) as store:
        report = bounded(lambda: store.import_sources(
            [Source(path)], name="nsrl", kind="allow", limits=ImportLimits(max_rows=500)))
        assert (report.records, report.bad, dict(report.added)) == (
            500, 0, {"md5": 500, "sha1": 500, "sha256": 500})
        assert store.get("nsrl").counts == {"md5": 500, "sha1": 500, "sha256": 500}
        assert store.lookup([bytes.fromhex(sha256(499))])


def test_the_row_limit_refuses_a_file_one_row_over_it(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "BATCH_ROWS", 7)  # batches committed before the refusal
    at, over = table_rds3(tmp_path / "at.db", 50), table_rds3(tmp_path / "over.db", 51)
    limits = ImportLimits(max_rows=50)
    assert len(read_all(at, limits)) == 100
    with pytest.raises(LimitExceeded, match=r"over.db: FILE has more than 50 rows: over the "
                       r"import limit --max-rows 50; nothing was imported") as info:
        read_all(over, limits)
    assert (info.value.limit_name, info.value.limit) == ("max_rows", 50)
    with HashListStore(tmp_path / DB_NAME) as store:
        with pytest.raises(LimitExceeded, match="--max-rows 50"):
            store.import_sources([Source(over)], name="l", kind="allow", limits=limits)
        assert store_state(store.path) == ([], [])
        report = store.import_sources([Source(at)], name="l", kind="allow", limits=limits)
        assert (report.records, report.added_total) == (50, 100)
    assert ImportLimits().max_rows == hl_limits.RDS3_MAX_ROWS


def test_the_step_budget_stops_a_view_that_spins_without_rows(tmp_path: Path) -> None:
    spin = spinning_rds3(tmp_path / "spin.db")
    with pytest.raises(LimitExceeded, match=r"spin.db: reading FILE took more than 5000000 "
                       r"SQLite steps: over the import limit --max-steps 5000000") as info:
        bounded(lambda: read_all(spin, ImportLimits(max_steps=5_000_000)))
    assert info.value.limit_name == "max_steps"
    assert ImportLimits().max_steps == hl_limits.RDS3_MAX_STEPS


def test_the_time_limit_stops_the_import(tmp_path: Path) -> None:
    spin = spinning_rds3(tmp_path / "spin.db")
    t0 = time.monotonic()
    with HashListStore(tmp_path / DB_NAME) as store:
        with pytest.raises(LimitExceeded, match=r"spin.db: the import ran longer than 1 s: "
                           r"over the import limit --max-seconds 1;") as info:
            bounded(lambda: store.import_sources([Source(spin)], name="l", kind="deny",
                                                 limits=ImportLimits(max_seconds=1)))
    assert info.value.limit_name == "max_seconds"
    assert time.monotonic() - t0 < 1 + 10
    assert store_state(tmp_path / DB_NAME) == ([], [])
    assert ImportLimits().max_seconds == hl_limits.IMPORT_MAX_SECONDS
    with pytest.raises(HashListError, match="max_seconds must be positive"):
        ImportLimits(max_seconds=0)


def test_progress_handler_runs_every_interval(tmp_path: Path) -> None:
    """The budget is checked every RDS3_PROGRESS_INTERVAL SQLite instructions: a budget
    of one interval stops the read at the second check."""
    spin = spinning_rds3(tmp_path / "spin.db")
    interval = hl_limits.RDS3_PROGRESS_INTERVAL
    with pytest.raises(LimitExceeded, match=f"more than {interval} SQLite steps"):
        bounded(lambda: read_all(spin, ImportLimits(max_steps=interval)))


def test_cancelling_stops_the_import_and_keeps_nothing(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "BATCH_ROWS", 1000)
    spin = spinning_rds3(tmp_path / "spin.db", first=20_500)  # 20 batches, then spins
    path = tmp_path / DB_NAME
    with HashListStore(path) as store:
        store.import_sources([Source(table_rds3(tmp_path / "one.db", 1))], name="keep",
                             kind="allow")
        size = path.stat().st_size
        cancel = threading.Event()
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                store.import_sources([Source(spin)], name="keep", kind="allow",
                                     mode="append", cancel=cancel)
            except BaseException as exc:  # noqa: BLE001
                outcome.append(exc)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        deadline = time.monotonic() + BOUND
        while not any(state == "importing" for _, state in store_state(path)[0]) or \
                _rows(path) < 20_000:
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.05)
        cancel.set()
        worker.join(BOUND)
        assert not worker.is_alive()
        assert isinstance(outcome[0], ImportCancelled), outcome
        assert str(outcome[0]) == "spin.db: import cancelled; nothing was imported".replace(
            "spin.db", str(spin))
        # the append was all or nothing: the list is as it was, its space given back
        assert store_state(path) == ([("keep", "ready")], [f"h_{store.get('keep').id}"])
        assert store.get("keep").counts == {"md5": 1, "sha1": 0, "sha256": 1}
        assert path.stat().st_size <= size + 64 * 1024
        wal = path.with_name(DB_NAME + "-wal")
        assert not wal.exists() or wal.stat().st_size <= store_module.WAL_SIZE_LIMIT


def _rows(path: Path) -> int:
    """Entries in the store's lists being imported (0 when there is none yet)."""
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ids = [r[0] for r in db.execute("SELECT id FROM lists WHERE state='importing'")]
        return sum(db.execute(f"SELECT count(*) FROM h_{i}").fetchone()[0] for i in ids)
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_a_killed_import_is_discarded_at_once(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    with HashListStore(path) as store:
        db = store._db
        assert db is not None
        db.execute("INSERT INTO lists (name, kind, severity, state, created, updated) "
                   "VALUES ('ghost', 'deny', 'high', 'importing', 0, 0)")
        ghost = db.execute("SELECT id FROM lists WHERE name='ghost'").fetchone()[0]
        db.execute(f"CREATE TABLE h_{ghost} (digest BLOB PRIMARY KEY, label TEXT) WITHOUT ROWID")
        db.executemany(f"INSERT INTO h_{ghost} VALUES (?, NULL)",
                       ((os.urandom(32),) for _ in range(50_000)))
        big = path.stat().st_size
        assert store.discard_interrupted() == 1
    assert store_state(path) == ([], [])
    assert path.stat().st_size < big / 10


def test_reclaiming_space_does_not_wait_for_busy_readers(tmp_path: Path) -> None:
    """A reader in the middle of a read keeps the WAL; the removal does not stall for
    the writer's busy timeout (CHECKPOINT_WAIT_MS, not BUSY_TIMEOUT_MS)."""
    path = tmp_path / DB_NAME
    with HashListStore(path) as store:
        store.import_sources([Source(table_rds3(tmp_path / "a.db", 2000))], name="a",
                             kind="deny")
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM lists").fetchall()  # holds a read snapshot
        t0 = time.monotonic()
        assert store.remove("a")
        waited = time.monotonic() - t0
        reader.close()
        assert waited < store_module.BUSY_TIMEOUT_MS / 1000 / 3
        assert store_module.CHECKPOINT_WAIT_MS < store_module.BUSY_TIMEOUT_MS
        assert store._db is not None
        assert store._db.execute("PRAGMA busy_timeout").fetchone() == (
            store_module.BUSY_TIMEOUT_MS,)


@pytest.mark.parametrize(("limit", "script", "message"), [
    (sqlite3.SQLITE_LIMIT_LENGTH,
     "CREATE TABLE FILE (sha256, sha1, md5); INSERT INTO FILE VALUES (zeroblob(2000000), "
     "NULL, NULL);", "string or blob too big"),
    (sqlite3.SQLITE_LIMIT_SQL_LENGTH,
     "CREATE TABLE FILE (sha256, sha1, md5); CREATE VIEW V AS SELECT 1 AS x "
     + "/* padding */" * 10_000 + ";", "string or blob too big"),
    (sqlite3.SQLITE_LIMIT_COLUMN,
     "CREATE TABLE FILE (sha256, sha1, md5, " + ", ".join(f"c{i}" for i in range(100))
     + ");", "too many columns on FILE"),
    (sqlite3.SQLITE_LIMIT_EXPR_DEPTH,
     "CREATE TABLE M (h); CREATE VIEW FILE AS SELECT h" + " || h" * 60
     + " AS sha256, NULL AS sha1, NULL AS md5 FROM M;", "Expression tree is too large"),
    (sqlite3.SQLITE_LIMIT_COMPOUND_SELECT,
     "CREATE TABLE M (h); CREATE VIEW FILE AS "
     + " UNION ALL ".join(["SELECT h AS sha256, NULL AS sha1, NULL AS md5 FROM M"] * 10)
     + ";", "too many terms in compound SELECT"),
    (sqlite3.SQLITE_LIMIT_VDBE_OP,
     "CREATE TABLE M (h); CREATE VIEW FILE AS SELECT h AS sha256, NULL AS sha1, NULL AS md5 "
     "FROM M WHERE h NOT IN (" + ",".join("0" * 20_000) + ");", "SQLITE_LIMIT_VDBE_OP"),
    (sqlite3.SQLITE_LIMIT_FUNCTION_ARG,
     "CREATE TABLE M (h); CREATE VIEW FILE AS SELECT coalesce(" + ", ".join(["h"] * 9)
     + ") AS sha256, NULL AS sha1, NULL AS md5 FROM M;", "too many arguments"),
])
def test_sqlite_limits_refuse_what_no_release_has(tmp_path: Path, limit: int, script: str,
                                                  message: str) -> None:
    path = sqlite_file(tmp_path / "x.db", script)
    with pytest.raises(HashListError, match=message):
        bounded(lambda: read_all(path))
    assert limit in rds3.SQLITE_LIMITS


def test_every_sqlite_limit_is_set_on_the_connection(tmp_path: Path) -> None:
    path = table_rds3(tmp_path / "ok.db", 1)
    db = rds3.connect(path)
    try:
        for limit, value in rds3.SQLITE_LIMITS.items():
            assert db.getlimit(limit) == value, limit
        assert rds3.SQLITE_LIMITS[sqlite3.SQLITE_LIMIT_ATTACHED] == 0
        with pytest.raises(sqlite3.OperationalError, match="too many attached databases"):
            db.execute("ATTACH ':memory:' AS other")
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            db.execute("DELETE FROM FILE")
    finally:
        db.close()


@pytest.mark.parametrize(("view", "message"), [
    ("SELECT printf('%064d', n) AS sha256, NULL AS sha1, NULL AS md5 FROM M",
     r"not a plain NSRL RDSv3 database: FILE calls the function printf\(\), not one of "
     r"coalesce, hex, "),
    ("SELECT h AS sha256, NULL AS sha1, NULL AS md5 FROM M WHERE "  # trusted_schema=OFF
     "(SELECT count(*) FROM pragma_table_info('M')) > 0",
     'unsafe use of virtual table "pragma_table_info"'),
])
def test_a_view_may_only_read_its_tables(tmp_path: Path, view: str, message: str) -> None:
    path = sqlite_file(tmp_path / "v.db", f"CREATE TABLE M (n, h); CREATE VIEW FILE AS {view};")
    with pytest.raises(HashListError, match=message):
        bounded(lambda: read_all(path))


def test_the_cli_refuses_the_recursive_view_with_exit_2(tmp_path: Path) -> None:
    bad = recursive_rds3(tmp_path / "RDS_hostile.db")
    spin = spinning_rds3(tmp_path / "spin.db")
    base = [sys.executable, "-m", "pcapwire.cli", "--data-dir", str(tmp_path / "data"),
            "hashlist", "import", "--name", "nsrl", "--kind", "allow"]
    done = subprocess.run([*base, str(bad)], capture_output=True, text=True, timeout=BOUND,
                          check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"pcapwire: error: {bad}: not a plain NSRL RDSv3 database: "
                                   "FILE uses a recursive query (WITH RECURSIVE); refused")
    done = subprocess.run([*base, "--max-steps", "1000000", str(spin)], capture_output=True,
                          text=True, timeout=BOUND, check=False)
    assert done.returncode == 2 and "over the import limit --max-steps 1000000" in done.stderr
    done = subprocess.run([*base, "--max-rows", "0", str(spin)], capture_output=True,
                          text=True, timeout=BOUND, check=False)
    assert done.returncode == 2 and "--max-rows: must be positive" in done.stderr
    assert store_state(tmp_path / "data" / DB_NAME) == ([], [])


def test_sigterm_stops_the_cli_import_which_keeps_nothing(tmp_path: Path) -> None:
    spin = spinning_rds3(tmp_path / "spin.db", first=150_000)  # one batch, then spins
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data),
                             "hashlist", "import", "--name", "l", "--kind", "deny", str(spin)],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + BOUND
        while not (data / DB_NAME).exists() or _rows(data / DB_NAME) == 0:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        proc.terminate()
        _, err = proc.communicate(timeout=BOUND)
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    assert "import cancelled" in err
    assert store_state(data / DB_NAME) == ([], [])


# ---- the API ----------------------------------------------------------------------------

async def _upload(client: Any, token: str, path: Path, timeout: float = BOUND,
                  **params: str) -> tuple[int, dict[str, Any]]:
    async def go() -> tuple[int, dict[str, Any]]:
        resp = await client.post("/api/v1/hashlists", data=path.read_bytes(),
                                 params={"kind": "allow", **params},
                                 headers={**bearer(token), "Content-Type": SQLITE_TYPE})
        return resp.status, await resp.json()

    try:
        return await asyncio.wait_for(go(), timeout)
    except TimeoutError:
        pytest.fail(f"the import was still running after {timeout} s")


def _leftovers(data: Path) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    tenant = ApiConfig(data_dir=data).tenant_dir("acme")
    lists, tables = store_state(tenant / DB_NAME)
    return lists, tables, sorted(p.name for p in (tenant / "uploads").iterdir())


async def test_api_refuses_the_recursive_view_and_keeps_nothing(aiohttp_client,
                                                                tmp_path: Path) -> None:
    data = tmp_path / "data"
    client = await aiohttp_client(create_app(ApiConfig(data_dir=data)))
    analyst = Tokens(data)["acme", "analyst"]
    bad = recursive_rds3(tmp_path / "hostile.db")
    status, body = await _upload(client, analyst, bad, name="nsrl", filename="RDS.db")
    assert (status, body["code"]) == (400, "invalid_hashlist"), body
    assert body["message"] == ("RDS.db: not a plain NSRL RDSv3 database: FILE uses a "
                               "recursive query (WITH RECURSIVE); refused")
    assert _leftovers(data) == ([], [], [])
    good = full_rds3(tmp_path / "good.db", 20)
    status, body = await _upload(client, analyst, good, name="nsrl")
    assert status == 201, body
    assert body["list"]["counts"] == {"md5": 20, "sha1": 20, "sha256": 20}
    assert body["report"]["records"] == 20


async def test_api_limits_refuse_with_413_naming_them(aiohttp_client, tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = ApiConfig(data_dir=data, max_hashlist_rows=30, max_hashlist_steps=2_000_000,
                       hashlist_import_timeout_s=30)
    client = await aiohttp_client(create_app(config))
    analyst = Tokens(data)["acme", "analyst"]
    status, body = await _upload(client, analyst, table_rds3(tmp_path / "over.db", 31),
                                 name="l", filename="over.db")
    assert (status, body["code"], body["details"]) == (
        413, "hashlist_limit_exceeded", {"limit": 30, "limit_name": "max_hashlist_rows"})
    assert body["message"].startswith("over.db: FILE has more than 30 rows: over the "
                                      "server's limit max_hashlist_rows (30)")
    assert str(tmp_path) not in body["message"]
    status, body = await _upload(client, analyst, spinning_rds3(tmp_path / "spin.db"),
                                 name="l", filename="spin.db")
    assert (status, body["code"], body["details"]) == (
        413, "hashlist_limit_exceeded", {"limit": 2_000_000, "limit_name":
                                         "max_hashlist_steps"})
    assert _leftovers(data) == ([], [], [])
    status, body = await _upload(client, analyst, table_rds3(tmp_path / "at.db", 30),
                                 name="l")
    assert status == 201 and body["list"]["counts"] == {"md5": 30, "sha1": 0, "sha256": 30}
    assert (ApiConfig(data_dir=data).max_hashlist_rows,
            ApiConfig(data_dir=data).max_hashlist_steps,
            ApiConfig(data_dir=data).hashlist_import_timeout_s) == (
        api_limits.MAX_HASHLIST_ROWS, api_limits.MAX_HASHLIST_SQLITE_STEPS,
        api_limits.HASHLIST_IMPORT_TIMEOUT_S)


async def test_api_time_limit_stops_the_import(aiohttp_client, tmp_path: Path) -> None:
    data = tmp_path / "data"
    client = await aiohttp_client(create_app(ApiConfig(data_dir=data,
                                                       hashlist_import_timeout_s=2)))
    analyst = Tokens(data)["acme", "analyst"]
    t0 = time.monotonic()
    status, body = await _upload(client, analyst, spinning_rds3(tmp_path / "spin.db"),
                                 name="l", filename="spin.db")
    assert (status, body["code"], body["details"]) == (
        413, "hashlist_limit_exceeded", {"limit": 2, "limit_name": "hashlist_import_timeout_s"})
    assert time.monotonic() - t0 < 2 + api_limits.HASHLIST_IMPORT_KILL_GRACE_S + 20
    assert _leftovers(data) == ([], [], [])


async def test_the_time_limit_covers_text_imports(aiohttp_client, tmp_path: Path) -> None:
    """Gigabytes of blank lines (gzip-compressed) never make a batch: the text reader
    checks the time limit every BUDGET_CHECK_MASK + 1 lines all the same."""
    bomb = tmp_path / "blank.txt.gz"
    with gzip.open(bomb, "wb", compresslevel=6) as gz:
        block = b"\n" * 2**20
        for _ in range(512):
            gz.write(block)
    data = tmp_path / "data"
    client = await aiohttp_client(create_app(ApiConfig(data_dir=data,
                                                       hashlist_import_timeout_s=1)))
    analyst = Tokens(data)["acme", "analyst"]
    resp = await asyncio.wait_for(client.post(
        "/api/v1/hashlists", data=bomb.read_bytes(), params={"name": "b", "kind": "deny"},
        headers={**bearer(analyst), "Content-Type": "application/gzip"}), BOUND)
    body = await resp.json()
    assert (resp.status, body["code"], body["details"]) == (
        413, "hashlist_limit_exceeded", {"limit": 1, "limit_name": "hashlist_import_timeout_s"})
    assert body["message"].startswith("upload: the import ran longer than 1 s: over the "
                                      "server's limit hashlist_import_timeout_s (1)")
    assert _leftovers(data) == ([], [], [])


async def test_the_server_kills_an_import_that_overstays(aiohttp_client, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A child that ignores SIGTERM and its own limits is killed after the grace period,
    and what a killed import leaves in the store is removed."""
    from pcapwire.api import hashlists
    from pcapwire.jobs import local

    stubborn = tmp_path / "stubborn"
    stubborn.write_text(f"#!{sys.executable}\nimport signal, time\n"
                        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n")
    stubborn.chmod(0o755)
    monkeypatch.setattr(local, "sys", SimpleNamespace(executable=str(stubborn)))  # the worker
    monkeypatch.setattr(hashlists, "HASHLIST_IMPORT_KILL_GRACE_S", 1.0)
    data = tmp_path / "data"
    client = await aiohttp_client(create_app(ApiConfig(data_dir=data,
                                                       hashlist_import_timeout_s=1)))
    analyst = Tokens(data)["acme", "analyst"]
    with HashListStore(ApiConfig(data_dir=data).tenant_dir("acme") / DB_NAME) as store:
        assert store._db is not None  # what a killed import leaves: a list 'importing'
        store._db.execute("INSERT INTO lists (name, kind, severity, state, created, "
                          "updated) VALUES ('l', 'deny', 'high', 'importing', 0, 0)")
    t0 = time.monotonic()
    request = asyncio.ensure_future(_upload(client, analyst, table_rds3(tmp_path / "ok.db", 1),
                                            name="l"))
    while not processes_naming(str(stubborn)):
        assert time.monotonic() - t0 < BOUND and not request.done()
        await asyncio.sleep(0.05)
    status, body = await request
    assert (status, body["code"], body["details"]) == (
        413, "hashlist_limit_exceeded", {"limit": 1, "limit_name": "hashlist_import_timeout_s"})
    assert time.monotonic() - t0 < 1 + 1 + 20
    assert not processes_naming(str(stubborn))
    assert _leftovers(data) == ([], [], [])


async def test_a_client_leaving_cancels_the_import(aiohttp_client, tmp_path: Path) -> None:
    data = tmp_path / "data"
    client = await aiohttp_client(create_app(ApiConfig(data_dir=data)))
    analyst = Tokens(data)["acme", "analyst"]
    tenant = ApiConfig(data_dir=data).tenant_dir("acme")
    spin = spinning_rds3(tmp_path / "spin.db", first=150_000)  # one batch, then spins
    request = asyncio.ensure_future(_upload(client, analyst, spin, name="l"))
    deadline = time.monotonic() + BOUND
    uploads: list[Path] = []
    while not (uploads and _rows(tenant / DB_NAME) > 0):  # half a list written
        assert time.monotonic() < deadline and not request.done()
        await asyncio.sleep(0.1)
        uploads = uploads or list((tenant / "uploads").glob("*"))
    child = processes_naming(str(tenant))  # the job's worker: `--data-dir <tenant> worker`
    assert child, "the import runs in a child process"
    request.cancel()  # the client leaves
    with contextlib.suppress(asyncio.CancelledError):
        await request
    while _leftovers(data) != ([], [], []) or processes_naming(str(tenant)):
        assert time.monotonic() < deadline, _leftovers(data)
        await asyncio.sleep(0.1)
    status, body = await _upload(client, analyst, full_rds3(tmp_path / "next.db", 10),
                                 name="l")
    assert status == 201, body  # the tenant's next import runs at once
    assert body["list"]["counts"] == {"md5": 10, "sha1": 10, "sha256": 10}


def test_serve_flags_set_the_import_limits(tmp_path):
    from pcapwire.cli import build_parser
    from pcapwire.cli.serve import config_from

    argv = ["--data-dir", str(tmp_path), "serve", "--max-hashlist-rows", "5",
            "--hashlist-import-timeout", "2.5"]
    config = config_from(build_parser(argv).parse_args(argv))
    assert (config.max_hashlist_rows, config.hashlist_import_timeout_s) == (5, 2.5)
