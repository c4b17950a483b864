"""Hash-list formats: plain text, CSV (hash columns found or named), NSRL RDS 2.x
(NSRLFile.txt) and RDSv3 (SQLite, FILE view or table); bad lines reported with file and
line, the valid ones kept; format detection."""

from __future__ import annotations

import gzip
import hashlib
import sqlite3
from pathlib import Path

import pytest
from pcapwire.hashlist import BadLine, HashListError, Source, detect
from pcapwire.hashlist.formats import Reader


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()  # noqa: S324


def sha1(b: bytes) -> str:
    return hashlib.sha1(b).hexdigest()  # noqa: S324


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def read(path: Path, **kw) -> tuple[list[tuple[str, str | None]], list[str], Reader]:
    bad: list[BadLine] = []
    reader = Reader(Source(path, **kw), bad.append)
    entries = [(d.hex(), label) for d, label in reader]
    return entries, [str(b) for b in bad], reader


def test_text_one_hash_per_line_with_comments_labels_and_bad_lines(tmp_path: Path) -> None:
    p = tmp_path / "iocs.txt"
    p.write_text(f"# feed 2024-05-01\n\n{md5(b'a')}\n{sha1(b'b').upper()}  tool.exe\n"
                 f"   {sha256(b'c')} *evil.bin\n"
                 "nothex\n"
                 f"{md5(b'a')[:31]}\n"
                 f"{sha256(b'd')}\textra\tcolumns\n"
                 "  # indented comment\n")
    entries, bad, reader = read(p)
    assert entries == [(md5(b"a"), None), (sha1(b"b"), "tool.exe"), (sha256(b"c"), "evil.bin"),
                       (sha256(b"d"), "extra\tcolumns")]
    assert bad == [
        f"{p}:6: 'nothex' is not a hex digest (MD5: 32, SHA-1: 40, SHA-256: 64 hex digits)",
        f"{p}:7: '{md5(b'a')[:31]}' has 31 hex digits; MD5 has 32, SHA-1 40, SHA-256 64"]
    assert (reader.format, reader.records, reader.skipped) == ("text", 6, 0)


def test_text_gzip_and_algorithm_filter(tmp_path: Path) -> None:
    p = tmp_path / "l.txt.gz"
    p.write_bytes(gzip.compress(f"{md5(b'a')}\n{sha256(b'a')}\n".encode()))
    entries, bad, reader = read(p, algorithms=frozenset({"sha256"}))
    assert entries == [(sha256(b"a"), None)] and bad == []
    assert (reader.format, reader.records, reader.skipped) == ("text", 2, 1)


def test_csv_every_hash_column_and_a_label(tmp_path: Path) -> None:
    p = tmp_path / "feed.csv"
    p.write_text("first_seen,SHA-256,md5_hash,Signature,size\n"
                 f"2024-01-01,{sha256(b'x')},{md5(b'x')},AgentTesla,10\n"
                 f"2024-01-02,,{md5(b'y')},,11\n"
                 "2024-01-03,zzz,,Emotet,12\n"
                 "2024-01-04,,,Nothing,13\n")
    entries, bad, reader = read(p)
    assert entries == [(sha256(b"x"), "AgentTesla"), (md5(b"x"), "AgentTesla"),
                       (md5(b"y"), None)]
    assert bad == [f"{p}:4: column 'SHA-256': 'zzz' is not a hex digest (MD5: 32, SHA-1: 40, "
                   "SHA-256: 64 hex digits)",
                   f"{p}:5: no hash in column(s) SHA-256, md5_hash"]
    assert (reader.format, reader.columns, reader.label_column) == (
        "csv", ["SHA-256", "md5_hash"], "Signature")


def test_csv_named_column_semicolons_and_quotes(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text('"name";"digest value";"other"\n'
                 f'"a; b";"{sha1(b"q")}";"{sha256(b"q")}"\n')
    entries, bad, reader = read(p, columns=("Digest Value",), label_column="name")
    assert entries == [(sha1(b"q"), "a; b")] and bad == []
    assert reader.columns == ["digest value"] and reader.label_column == "name"


def test_csv_commented_header_as_malwarebazaar_exports_it(tmp_path: Path) -> None:
    p = tmp_path / "full.csv"
    p.write_text("################\n# MalwareBazaar full data dump (CSV)\n#\n"
                 '# "first_seen_utc","sha256_hash","md5_hash","sha1_hash","signature"\n'
                 f'"2024-01-01 00:00:00","{sha256(b"m")}","{md5(b"m")}","{sha1(b"m")}",'
                 '"RedLine"\n'
                 f'"2024-01-01 00:00:01","{sha256(b"n")}","{md5(b"n")}","{sha1(b"n")}","n/a"\n'
                 "# 2 entries\n")
    entries, bad, reader = read(p)
    assert bad == [] and reader.records == 2
    assert entries == [(sha256(b"m"), "RedLine"), (md5(b"m"), "RedLine"),
                       (sha1(b"m"), "RedLine"), (sha256(b"n"), "n/a"), (md5(b"n"), "n/a"),
                       (sha1(b"n"), "n/a")]
    assert reader.columns == ["sha256_hash", "md5_hash", "sha1_hash"]


def test_csv_without_header_uses_the_columns_holding_digests(tmp_path: Path) -> None:
    p = tmp_path / "nohead.csv"
    p.write_text(f"{md5(b'1')},one\n{md5(b'2')},two\nxyz,three\n")
    entries, bad, reader = read(p, format="csv")
    assert entries == [(md5(b"1"), None), (md5(b"2"), None)]
    assert bad == [f"{p}:3: column '#1': 'xyz' is not a hex digest (MD5: 32, SHA-1: 40, "
                   "SHA-256: 64 hex digits)"]
    entries, _, _ = read(p, format="csv", columns=("1",), label_column="2")
    assert entries == [(md5(b"1"), "one"), (md5(b"2"), "two")]


def test_csv_without_any_hash_column_is_an_error_naming_the_line(tmp_path: Path) -> None:
    p = tmp_path / "none.csv"
    p.write_text("# comment\nname,size\nfoo,1\n")
    with pytest.raises(HashListError, match=rf"^{p}:2: no hash column found: the header has "
                       "'name', 'size'; name the column"):
        read(p)
    with pytest.raises(HashListError, match=rf"^{p}:2: no column named 'sha256'"):
        read(p, columns=("sha256",))


def test_csv_damage_is_a_bad_line_and_reading_goes_on(tmp_path: Path) -> None:
    p = tmp_path / "damaged.csv"
    p.write_text(f"md5,name\n{md5(b'a')},a\x00b\n" + "x" * 200_000 + f",huge\n"
                 f"{md5(b'b')},z\n\"unterminated,{md5(b'c')}\n")
    entries, bad, reader = read(p)
    assert entries == [(md5(b"a"), "a\x00b"), (md5(b"b"), "z")]
    assert bad == [f"{p}:3: unreadable CSV: field larger than field limit (131072)",
                   f"{p}:5: column 'md5': 'unterminated,{md5(b'c')}' is not a hex digest "
                   "(MD5: 32, SHA-1: 40, SHA-256: 64 hex digits)"]
    assert reader.records == 4


NSRL = ('"SHA-1","MD5","CRC32","FileName","FileSize","ProductCode","OpSystemCode",'
        '"SpecialCode"\n')


def test_nsrl_rds2_loads_sha1_and_md5_and_names_bad_lines(tmp_path: Path) -> None:
    p = tmp_path / "NSRLFile.txt"
    p.write_text(NSRL
                 + f'"{sha1(b"k").upper()}","{md5(b"k").upper()}","EBD105A0","kernel32.dll",'
                 '98865,3095,"WIN",""\n'
                 f'"{sha1(b"l").upper()}","GARBAGE","00000000","x.dll",1,1,"WIN",""\n'
                 f'"{sha1(b"m").upper()}","{md5(b"m").upper()}","1","a,b.txt",2,2,"358",""\n')
    entries, bad, reader = read(p)
    assert reader.format == "nsrl" and reader.records == 3
    assert entries == [(sha1(b"k"), None), (md5(b"k"), None), (sha1(b"l"), None),
                       (sha1(b"m"), None), (md5(b"m"), None)]
    assert bad == [f"{p}:3: column 'MD5': 'GARBAGE' is not a hex digest (MD5: 32, SHA-1: 40, "
                   "SHA-256: 64 hex digits)"]


def test_nsrl_with_a_wrong_header_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "NSRLFile.txt"
    p.write_text('"MD5","name"\n')
    with pytest.raises(HashListError, match=rf"^{p}:1: not an NSRL RDS 2.x NSRLFile.txt"):
        read(p, format="nsrl")


def _rds3_full(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """The RDSv3 layout: METADATA and PACKAGE_OBJECT tables, FILE a view over them with
    upper-case hex (as NIST publishes it)."""
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
            WHERE md.object_id = po.object_id;
    """)
    for i, (s256, s1, m5, name) in enumerate(rows, 1):
        db.execute("INSERT INTO PACKAGE_OBJECT VALUES (?,?,?)", (i, 100 + i, i))
        db.execute("INSERT INTO METADATA VALUES (?,?,?,?,?,?,?,?,?)",
                   (i, i, name, "dll", 10, "0", m5, s1, s256))
    db.commit()
    db.close()


def test_rds3_view_every_digest_and_bad_rows(tmp_path: Path) -> None:
    p = tmp_path / "RDS_2024.03.1_modern_minimal.db"
    _rds3_full(p, [(sha256(b"r"), sha1(b"r"), md5(b"r"), "ntdll"),
                   (sha256(b"s"), "nope", md5(b"s"), "user32"),
                   ("", "", "", "empty")])
    assert detect(p) == "rds3"
    entries, bad, reader = read(p)
    assert reader.format == "rds3" and reader.records == 3
    assert entries == [(sha256(b"r"), None), (sha1(b"r"), None), (md5(b"r"), None),
                       (sha256(b"s"), None), (md5(b"s"), None)]
    assert bad == [f"{p}: FILE row 2: sha1: 'NOPE' is not a hex digest (MD5: 32, SHA-1: 40, "
                   "SHA-256: 64 hex digits)",
                   f"{p}: FILE row 3: no hash in sha256, sha1, md5"]
    entries, _, _ = read(p, label_column="file_name")
    assert entries[0] == (sha256(b"r"), "ntdll.dll")


def test_rds3_minimal_release_with_a_file_table(tmp_path: Path) -> None:
    p = tmp_path / "minimal.db"
    db = sqlite3.connect(p)
    db.execute("CREATE TABLE FILE (sha256 VARCHAR, sha1 VARCHAR, md5 VARCHAR, crc32 VARCHAR, "
               "file_name VARCHAR, file_size INTEGER, package_id INTEGER)")
    db.execute("INSERT INTO FILE VALUES (?,?,?,?,?,?,?)",
               (sha256(b"t").upper(), sha1(b"t").upper(), md5(b"t").upper(), "0", "a", 1, 1))
    db.commit()
    db.close()
    entries, bad, _ = read(p, algorithms=frozenset({"sha256", "md5"}))
    assert entries == [(sha256(b"t"), None), (md5(b"t"), None)] and bad == []


def test_rds3_errors_say_what_the_file_is(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE things (x)")
    db.commit()
    db.close()
    with pytest.raises(HashListError, match=r"not an NSRL RDSv3 database: no FILE table or "
                       r"view with sha256/sha1/md5 columns \(it has things\)"):
        read(other)
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    with pytest.raises(HashListError, match="not a readable SQLite database"):
        read(broken)
    gz = tmp_path / "rds.db.gz"
    gz.write_bytes(gzip.compress(other.read_bytes()))
    with pytest.raises(HashListError, match="gzip-compressed SQLite database; decompress"):
        read(gz)


@pytest.mark.parametrize(("content", "fmt"), [
    (f"{md5(b'a')}\n", "text"),
    (f"# c\n{sha256(b'a')}  name, with comma\n", "text"),
    (NSRL, "nsrl"),
    ("md5,name\n", "csv"),
    ("sha256\tname\n", "csv"),
    ("", "text"),
])
def test_detect(tmp_path: Path, content: str, fmt: str) -> None:
    p = tmp_path / "f"
    p.write_text(content)
    assert detect(p) == fmt
