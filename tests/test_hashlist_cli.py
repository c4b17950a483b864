"""``pcapwire hashlist import|list|lookup|remove``: outputs and exit codes (0 ok, 1 bad
lines skipped, 2 nothing imported / unknown list / invalid hash)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pcapwire.cli import main

BAD = hashlib.sha256(b"evil").hexdigest()
GOOD = hashlib.md5(b"calc").hexdigest()  # noqa: S324


def run(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str, str]:
    rc = main(["--data-dir", str(data), "hashlist", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_import_list_lookup_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    ioc = tmp_path / "ioc.txt"
    ioc.write_text(f"{BAD}  dropper.exe\nnot-a-hash\n")
    rc, out, err = run(capsys, data, "import", str(ioc), "--name", "ioc", "--kind", "deny",
                       "--description", "IR feed")
    assert rc == 1 and out == ""
    assert err.splitlines() == [
        "list ioc (deny, critical): 1 added (md5 0, sha1 0, sha256 1), 0 duplicate(s), "
        f"1 bad line(s), 2 record(s) read in {err.split(' read in ')[1].split()[0]} s",
        f"  {ioc}:2: 'not-a-hash' is not a hex digest (MD5: 32, SHA-1: 40, SHA-256: 64 hex "
        "digits)"]
    csv = tmp_path / "good.csv"
    csv.write_text(f"file,MD5\ncalc.exe,{GOOD}\n")
    rc, out, _ = run(capsys, data, "import", str(csv), "--name", "gold", "--kind", "allow",
                     "--label-column", "file", "--json")
    report = json.loads(out)
    assert rc == 0 and report["added"] == {"md5": 1, "sha1": 0, "sha256": 0}
    assert report["files"] == [{"file": str(csv), "format": "csv", "columns": ["MD5"],
                                "label_column": "file", "records": 1, "bad_lines": 0}]

    rc, out, _ = run(capsys, data, "list", "--json")
    lists = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and [(x["name"], x["kind"], x["severity"], x["total"], x["description"])
                        for x in lists] == [("gold", "allow", "info", 1, ""),
                                            ("ioc", "deny", "critical", 1, "IR feed")]
    rc, out, _ = run(capsys, data, "list")
    assert rc == 0 and out.splitlines()[1].split()[:7] == ["gold", "allow", "info", "tenant",
                                                           "1", "0", "0"]

    other = hashlib.sha1(b"x").hexdigest()  # noqa: S324
    rc, out, _ = run(capsys, data, "lookup", BAD.upper(), GOOD, other)
    assert rc == 0 and out.splitlines() == [
        f"{BAD}  known-bad  critical ioc (deny, tenant) 'dropper.exe'",
        f"{GOOD}  known-good info     gold (allow, tenant) 'calc.exe'",
        f"{other}  unknown    info     "]
    hashes = tmp_path / "q.txt"
    hashes.write_text(f"# from the case\n{GOOD}  calc.exe\n")
    rc, out, _ = run(capsys, data, "lookup", "-f", str(hashes), "--json")
    assert rc == 0 and [json.loads(line)["verdict"] for line in out.splitlines()] == [
        "known-good"]

    rc, _, err = run(capsys, data, "remove", "ioc", "nope")
    assert rc == 2 and "removed ioc" in err and "no list 'nope'" in err
    rc, out, _ = run(capsys, data, "lookup", BAD)
    assert rc == 0 and "unknown" in out


def test_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    junk = tmp_path / "junk.txt"
    junk.write_text("nothing here\n")
    rc, out, err = run(capsys, data, "import", str(junk), "--name", "x", "--kind", "deny",
                       "--json")
    doc = json.loads(out)
    assert rc == 2 and doc["code"] == "invalid_hashlist"
    assert doc["report"]["errors"] == [{"file": str(junk), "line": 1, "unit": "line",
                                        "message": "'nothing' is not a hex digest (MD5: 32, "
                                        "SHA-1: 40, SHA-256: 64 hex digits)"}]
    assert f"pcapwire: error: {junk}: no valid hash to import" in err
    ok = tmp_path / "ok.txt"
    ok.write_text(BAD + "\n")
    assert run(capsys, data, "import", str(ok), "--name", "x", "--kind", "deny")[0] == 0
    rc, out, err = run(capsys, data, "import", str(ok), "--name", "x", "--kind", "deny",
                       "--json")
    assert rc == 2 and json.loads(out)["code"] == "hashlist_exists"
    assert run(capsys, data, "import", str(ok), "--name", "x", "--kind", "deny",
               "--replace")[0] == 0
    rc, _, err = run(capsys, data, "lookup", "1234")
    assert rc == 2 and "'1234' has 4 hex digits" in err
    rc, _, err = run(capsys, data, "import", str(ok), str(junk), "--name", "y", "--kind",
                     "deny", "--display-name", "up.txt")
    assert rc == 2 and "--display-name names one FILE" in err
    rc, _, err = run(capsys, data, "lookup")
    assert rc == 2 and "no hashes" in err
