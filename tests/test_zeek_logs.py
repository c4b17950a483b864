"""Zeek log parsing on real Zeek output: btest baselines from the Zeek repository
(tests/data/zeek_baselines, see its README), checked against the corpus manifest's own
parse of the same baselines (``peer_outputs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import MANIFEST
from pcapwire.plugins.zeek.logs import MAX_LOG_LINE, ZeekLogError, ZeekLogReader, ZeekLogs

BASELINES = Path(__file__).parent / "data" / "zeek_baselines"
#: btest replaces run-dependent times with this mask; Zeek itself never writes it.
BTEST_TIME_MASK = "XXXXXXXXXX.XXXXXX"
#: Baselines whose stored version has the same values as the version the corpus parsed
#: (other stored versions differ by Zeek release, e.g. local_orig '-' vs 'F').
COMPARED = ["core.tcp.reassembly-known-ports/conn.log",
            "core.tcp.reassembly-known-ports/http.log",
            "scripts.base.protocols.http.http-pipelining/http.log",
            "scripts.base.protocols.ftp.ftp-ipv6/ftp.log",
            "scripts.base.protocols.ssl.tls-1.2/ssl.log"]


def _unmasked(rel: str, tmp_path: Path) -> Path:
    """The baseline with btest's time mask replaced by 0.0 (documented in the README)."""
    out = tmp_path / Path(rel).name
    out.write_text((BASELINES / rel).read_text().replace(BTEST_TIME_MASK, "0.000000"))
    return out


def _peer_records(rel: str) -> list[dict[str, Any]]:
    for case in MANIFEST["cases"]:
        for po in case.get("peer_outputs") or []:
            if po.get("artifact", "").endswith("Baseline/" + rel) and "records" in po:
                return po["records"]
    raise AssertionError(f"no peer output for {rel}")


def _same(mine: Any, theirs: Any) -> bool:
    """The corpus keeps some typed columns as strings (time as '1304467200.000000')."""
    if isinstance(theirs, str) and isinstance(mine, float):
        return float(theirs) == mine
    return mine == theirs


@pytest.mark.parametrize("rel", COMPARED)
def test_tsv_baselines_parse_to_the_corpus_records(rel: str, tmp_path: Path) -> None:
    rows = list(ZeekLogReader(_unmasked(rel, tmp_path)).readrows())
    theirs = _peer_records(rel)
    assert len(rows) == len(theirs)
    for mine, peer in zip(rows, theirs, strict=True):
        common = set(mine) & set(peer)
        assert len(common) >= 8, sorted(common)
        diffs = {k: (mine[k], peer[k]) for k in common if not _same(mine[k], peer[k])}
        assert diffs == {}


def test_tsv_types_sets_vectors_unset_and_empty(tmp_path: Path) -> None:
    files = list(ZeekLogReader(
        _unmasked("scripts.base.protocols.smtp.attachment/files.log", tmp_path)).readrows())
    assert [f["fuid"] for f in files] == ["FmFp351N5nhsMmAfQg", "Fqrb1K5DWEfgy4WU2",
                                          "FEFYSd1s8Onn9LynKj", "Fc5KpS3kUYqDLwWSMf"]
    third = files[2]
    assert third["tx_hosts"] == ["10.10.1.4"] and third["rx_hosts"] == ["74.53.140.153"]
    assert third["conn_uids"] == ["CHhAvVGS1DHFjwGM9"]
    assert third["analyzers"] == [] and third["filename"] == "NEWS.txt"
    assert third["duration"] == 1.165512 and third["seen_bytes"] == 10809
    assert third["total_bytes"] is None and third["is_orig"] is True
    assert third["timedout"] is False and third["local_orig"] is None

    dns = list(ZeekLogReader(BASELINES / "core.ipv6-frag/dns.log").readrows())
    assert [(d["id.orig_h"], d["id.orig_p"], d["trans_id"]) for d in dns] == [
        ("2001:470:1f11:81f:d138:5f55:6d4:1fe2", 51850, 3903),
        ("2001:470:1f11:81f:d138:5f55:6d4:1fe2", 51851, 40849)]
    assert dns[0]["TTLs"] == [1.0] and dns[0]["AA"] is True and dns[0]["TC"] is False
    assert dns[0]["ts"] == 1331084278.438444


def test_json_log_as_zeek_writes_it(tmp_path: Path) -> None:
    row, = ZeekLogReader(_unmasked("scripts.base.frameworks.logging.ascii-json/ssh.log",
                                   tmp_path)).readrows()
    assert row["b"] is True and row["i"] == -42 and row["e"] == "SSH::LOG"
    assert row["sn"] == "10.0.0.0/24" and row["a"] == "1.2.3.4" and row["d"] == 3.14
    assert row["sc"] == [4, 2, 3, 1] and row["se"] == [] and row["vn"] == [0, None, 2]
    assert row["f"].startswith("SSH::foo\n{ \nif (0 < SSH::i)")


def test_logs_directory_maps_names_to_records(tmp_path: Path) -> None:
    for rel in ("core.tcp.reassembly-known-ports/conn.log",
                "core.tcp.reassembly-known-ports/http.log"):
        _unmasked(rel, tmp_path)
    logs = ZeekLogs(tmp_path)
    assert sorted(logs) == ["conn", "http"]
    conn, = logs["conn"]
    assert (conn["orig_pkts"], conn["history"], conn["service"]) == (7, "ShADadFf", "http")
    assert logs.rows("http")[0]["uri"] == "/download/CHANGES.bro-aux.txt"
    assert logs.rows("notice") == []
    assert logs["conn"].name == "conn"


def test_escapes_are_decoded(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n"
                   "#unset_field\t-\n#path\tx\n#fields\ta\tb\tc\td\n"
                   "#types\tstring\tstring\tset[string]\tstring\n"
                   "\\x2d\tx\\x09y\ta\\x2cb,c\t(empty)\n")
    row, = ZeekLogReader(log).readrows()
    assert row == {"a": "-", "b": "x\ty", "c": ["a,b", "c"], "d": ""}


def test_malformed_logs_name_file_and_line(tmp_path: Path) -> None:
    base = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
            "#path\tconn\n#fields\tts\tuid\torig_pkts\n#types\ttime\tstring\tcount\n")
    bad_count = tmp_path / "a.log"
    bad_count.write_text(base + "1.0\tC1\t7\n1.0\tC2\tseven\n")
    with pytest.raises(ZeekLogError, match=r"a\.log:9: column 'orig_pkts' \(count\): 'seven'"):
        list(ZeekLogReader(bad_count).readrows())
    short = tmp_path / "b.log"
    short.write_text(base + "1.0\tC1\n")
    with pytest.raises(ZeekLogError, match=r"b\.log:8: 2 values for 3 fields"):
        list(ZeekLogReader(short).readrows())
    masked = _unmasked("core.ipv6-frag/dns.log", tmp_path)  # fine once unmasked ...
    assert len(list(ZeekLogReader(masked).readrows())) == 2
    raw = BASELINES / "core.tcp.reassembly-known-ports/conn.log"  # ... the btest mask is not
    with pytest.raises(ZeekLogError, match=r"conn\.log:10: column 'ts' \(time\)"):
        list(ZeekLogReader(raw).readrows())
    not_json = tmp_path / "c.log"
    not_json.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ZeekLogError, match=r"c\.log:2: not JSON"):
        list(ZeekLogReader(not_json).readrows())
    huge = tmp_path / "d.log"
    huge.write_bytes(b'{"a": "' + b"x" * MAX_LOG_LINE + b'"}\n')
    with pytest.raises(ZeekLogError, match=rf"d\.log:1: line longer than {MAX_LOG_LINE}"):
        list(ZeekLogReader(huge).readrows())
