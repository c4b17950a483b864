"""The hash-list store (real SQLite): counts per algorithm, duplicates, bad lines with file
and line, create/replace/append/remove, readers in other connections, the one-import
lock, what an interrupted import leaves, and allow/deny classification across tenant and
global stores."""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path

import pytest
from pcapwire.api import ApiConfig
from pcapwire.hashlist import (
    DB_NAME,
    HashListError,
    HashListSet,
    HashListStore,
    ImportBusy,
    ImportFailed,
    ListExists,
    ListNotFound,
    Source,
    classify,
    databases_for,
)
from pcapwire.hashlist import store as store_module


def h(kind: str, data: bytes) -> str:
    return hashlib.new(kind, data).hexdigest()


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def db(tmp_path: Path):
    with HashListStore(tmp_path / DB_NAME) as s:
        yield s


def test_import_counts_duplicates_and_bad_lines(db: HashListStore, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "BATCH_ROWS", 3)  # several batches (transactions)
    a = write(tmp_path / "a.txt", "# feed", h("md5", b"1"), h("sha1", b"1"),
              h("sha256", b"1"), h("sha256", b"1").upper(), "g" * 64, h("md5", b"2"))
    b = write(tmp_path / "b.txt", h("md5", b"2"), "", "12345", h("sha256", b"3"))
    report = db.import_sources([Source(a), Source(b)], name="ioc", kind="deny",
                               description="test feed")
    assert dict(report.added) == {"md5": 2, "sha1": 1, "sha256": 2}
    assert (report.added_total, report.duplicates, report.records, report.bad) == (5, 2, 9, 2)
    assert [str(e) for e in report.errors] == [
        f"{a}:6: {'g' * 64!r} is not a hex digest (MD5: 32, SHA-1: 40, SHA-256: 64 hex digits)",
        f"{b}:3: '12345' has 5 hex digits; MD5 has 32, SHA-1 40, SHA-256 64"]
    assert [(f["file"], f["records"], f["bad_lines"]) for f in report.files] == [
        (str(a), 6, 1), (str(b), 3, 1)]
    (hl,) = db.lists()
    assert (hl.name, hl.kind, hl.severity, hl.description, hl.counts, hl.total, hl.format) == (
        "ioc", "deny", "critical", "test feed", {"md5": 2, "sha1": 1, "sha256": 2}, 5, "text")
    found = db.lookup([bytes.fromhex(h("sha256", b"1")), bytes.fromhex(h("md5", b"9"))])
    assert list(found) == [bytes.fromhex(h("sha256", b"1"))]


def test_create_replace_append_and_remove(db: HashListStore, tmp_path: Path) -> None:
    one = write(tmp_path / "one.txt", h("md5", b"old"))
    two = write(tmp_path / "two.txt", h("md5", b"new"), h("sha1", b"new"))
    db.import_sources([Source(one)], name="l", kind="allow")
    with pytest.raises(ListExists, match="a list named 'l' already exists"):
        db.import_sources([Source(two)], name="l", kind="allow")
    report = db.import_sources([Source(two)], name="l", kind="allow", mode="replace",
                               severity="low")
    assert report.added_total == 2
    assert db.get("l").counts == {"md5": 1, "sha1": 1, "sha256": 0}
    assert db.get("l").severity == "low"
    assert db.lookup([bytes.fromhex(h("md5", b"old"))]) == {}
    report = db.import_sources([Source(one), Source(two)], name="l", kind="allow",
                               mode="append")
    assert (report.added_total, report.duplicates, report.severity) == (1, 2, "low")
    assert db.get("l").counts == {"md5": 2, "sha1": 1, "sha256": 0}
    with pytest.raises(HashListError, match="list 'l' is a allow list; cannot append deny"):
        db.import_sources([Source(one)], name="l", kind="deny", mode="append")
    with pytest.raises(ListNotFound, match="no list named 'nope' to append to"):
        db.import_sources([Source(one)], name="nope", kind="deny", mode="append")
    assert db.remove("l") is True and db.remove("l") is False
    assert db.lists() == []
    tables = db._db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'h\\_%' "
                            "ESCAPE '\\'").fetchall()
    assert tables == []


def test_nothing_valid_imports_nothing_and_keeps_the_old_list(db: HashListStore,
                                                             tmp_path: Path) -> None:
    good = write(tmp_path / "good.txt", h("sha256", b"keep"))
    junk = write(tmp_path / "junk.txt", "not a hash", "still not")
    db.import_sources([Source(good)], name="keep", kind="deny")
    with pytest.raises(ImportFailed, match=rf"{junk}: no valid hash to import \(2 bad line"
                       rf"\(s\)\); first problem: {junk}:1: ") as info:
        db.import_sources([Source(junk)], name="keep", kind="deny", mode="replace")
    assert [e.line for e in info.value.report.errors] == [1, 2]
    assert db.get("keep").total == 1
    assert db.lookup([bytes.fromhex(h("sha256", b"keep"))])
    with pytest.raises(ImportFailed, match="no hashes to import"):
        db.import_sources([Source(write(tmp_path / "empty.txt", "# nothing"))], name="e",
                          kind="deny")
    assert [x.name for x in db.lists()] == ["keep"]


def test_an_import_that_fails_midway_leaves_nothing_behind(db: HashListStore,
                                                          tmp_path: Path) -> None:
    good = write(tmp_path / "good.txt", h("md5", b"1"))
    nocol = write(tmp_path / "x.csv", "name,size", "a,1")
    with pytest.raises(HashListError, match=r"x.csv:1: no hash column found"):
        db.import_sources([Source(good), Source(nocol)], name="half", kind="deny")
    assert db.lists() == []
    assert db._db.execute("SELECT count(*) FROM lists").fetchone() == (0,)
    # a list an import killed outright left 'importing' is dropped by the next import
    db._db.execute("INSERT INTO lists (name, kind, severity, state, created, updated) "
                   "VALUES ('ghost', 'deny', 'high', 'importing', 0, 0)")
    ghost = db._db.execute("SELECT id FROM lists WHERE name='ghost'").fetchone()[0]
    db._db.execute(f"CREATE TABLE h_{ghost} (digest BLOB PRIMARY KEY, label TEXT) WITHOUT ROWID")
    db.import_sources([Source(good)], name="next", kind="deny")
    assert [r[0] for r in db._db.execute("SELECT name FROM lists")] == ["next"]
    assert db._db.execute("SELECT count(*) FROM sqlite_master WHERE name=?",
                          (f"h_{ghost}",)).fetchone() == (0,)


def test_one_import_at_a_time(db: HashListStore, tmp_path: Path) -> None:
    src = Source(write(tmp_path / "a.txt", h("md5", b"1")))
    with open(db.path.with_name(DB_NAME + ".lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ImportBusy, match="another import into .* is running"):
            db.import_sources([src], name="a", kind="deny")
    assert db.import_sources([src], name="a", kind="deny").added_total == 1


def test_readers_in_other_connections_follow_imports_replaces_and_removals(
        tmp_path: Path) -> None:
    path = tmp_path / "sub" / DB_NAME
    reader = HashListStore(path, readonly=True)
    assert reader.lists() == [] and not path.exists()  # a reader never creates the store
    writer = HashListStore(path)
    digest = bytes.fromhex(h("sha1", b"x"))
    writer.import_sources([Source(write(tmp_path / "a.txt", digest.hex()))], name="a",
                          kind="deny")
    assert [m.list.name for m in reader.lookup([digest])[digest]] == ["a"]
    writer.import_sources([Source(write(tmp_path / "b.txt", h("md5", b"y")))], name="a",
                          kind="deny", mode="replace")
    assert reader.lookup([digest]) == {}
    assert reader.get("a").counts["md5"] == 1
    writer.remove("a")
    assert reader.lists() == []
    with pytest.raises(HashListError, match="is open read-only"):
        reader.remove("a")
    writer.close()
    reader.close()


def test_batch_lookup_beyond_one_in_clause(db: HashListStore, tmp_path: Path) -> None:
    digests = [h("sha256", str(i).encode()) for i in range(1200)]
    db.import_sources([Source(write(tmp_path / "many.txt", *digests[::2]))], name="half",
                      kind="deny")
    found = db.lookup([bytes.fromhex(d) for d in digests])
    assert len(found) == 600
    assert all(bytes.fromhex(d) in found for d in digests[::2])


def test_invalid_names_kinds_severities_and_modes(db: HashListStore, tmp_path: Path) -> None:
    src = Source(write(tmp_path / "a.txt", h("md5", b"1")))
    for kw, msg in (({"name": "Bad Name"}, "invalid list name 'Bad Name'"),
                    ({"name": "-x"}, "invalid list name '-x'"),
                    ({"kind": "block"}, "kind must be allow or deny, not 'block'"),
                    ({"severity": "severe"}, "severity 'severe' is not one of"),
                    ({"mode": "merge"}, "mode must be one of create, replace, append")):
        args = {"name": "ok", "kind": "deny", **kw}
        with pytest.raises(HashListError, match=msg):
            db.import_sources([src], **args)
    with pytest.raises(HashListError, match="unknown format 'xml'"):
        Source(Path("x"), format="xml")


def test_deny_wins_highest_severity_and_scopes(tmp_path: Path) -> None:
    config = ApiConfig(data_dir=tmp_path / "server")
    tenant = config.tenant_dir("acme")
    assert databases_for(tenant) == [("tenant", tenant / DB_NAME),
                                     ("global", config.data_dir / DB_NAME)]
    assert databases_for(tmp_path / "standalone") == [("tenant",
                                                       (tmp_path / "standalone") / DB_NAME)]
    both, good, bad = (h("sha256", b"both"), h("sha256", b"good"), h("sha256", b"bad"))
    with HashListStore(config.data_dir / DB_NAME) as glob:
        glob.import_sources([Source(write(tmp_path / "nsrl.txt", both, good))], name="nsrl",
                            kind="allow")
        glob.import_sources([Source(write(tmp_path / "g.txt", bad))], name="vendor",
                            kind="deny", severity="high")
    with HashListStore(tenant / DB_NAME) as own:
        own.import_sources([Source(write(tmp_path / "t.txt", both, f"{bad}  Emotet"))],
                           name="acme-ioc", kind="deny")
    view = HashListSet.for_data_dir(tenant)
    try:
        assert [(x.name, x.scope) for x in view.lists()] == [
            ("acme-ioc", "tenant"), ("nsrl", "global"), ("vendor", "global")]
        res = {r["hash"]: r for r in view.triage_hex([both, good, bad, h("md5", b"none")])}
        assert (res[both]["verdict"], res[both]["severity"]) == ("known-bad", "critical")
        assert [(m["list"], m["kind"]) for m in res[both]["matches"]] == [
            ("acme-ioc", "deny"), ("nsrl", "allow")]
        assert (res[good]["verdict"], res[good]["severity"]) == ("known-good", "info")
        assert (res[bad]["verdict"], res[bad]["severity"]) == ("known-bad", "critical")
        assert [(m["list"], m["scope"], m["label"]) for m in res[bad]["matches"]] == [
            ("acme-ioc", "tenant", "Emotet"), ("vendor", "global", None)]
        assert res[h("md5", b"none")] == {"hash": h("md5", b"none"), "algorithm": "md5",
                                          "verdict": "unknown", "severity": "info",
                                          "matches": []}
        assert view.triage([bytes.fromhex(good)], names={"vendor"}).verdict == "unknown"
        with pytest.raises(ValueError, match="'xyz' is not a hex digest"):
            view.triage_hex(["xyz"])
    finally:
        view.close()
    other = HashListSet.for_data_dir(config.tenant_dir("globex"))
    try:  # another tenant sees the global lists, never acme's
        assert [x.name for x in other.lists()] == ["nsrl", "vendor"]
        assert other.triage([bytes.fromhex(both)]).verdict == "known-good"
    finally:
        other.close()
    assert classify([]).verdict == "unknown"


def test_a_store_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(HashListError, match=f"hash-list store {path}: file is not a database"):
        HashListStore(path)
    reader = HashListStore(path, readonly=True)
    with pytest.raises(HashListError, match=f"hash-list store {path}: file is not a database"):
        reader.lists()
    with pytest.raises(HashListError, match="file is not a database"):
        reader.lookup([b"\0" * 16])
    reader.close()
