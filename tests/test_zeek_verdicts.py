"""Zeek records -> verdicts (notice, intel, weird; the documented severity table) and
flow-linked metadata. Logs are written here in Zeek's ASCII format with Zeek's own column
lists; files.log is the real smtp baseline (tests/data/zeek_baselines)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pcapwire.plugins.zeek import verdicts as zv
from pcapwire.plugins.zeek.logs import ZeekLogs
from pcapwire.plugins.zeek.verdicts import findings
from pcapwire.records import FlowKey

BASELINES = Path(__file__).parent / "data" / "zeek_baselines"
HEADER = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
          "#path\t{path}\n#open\t2024-01-01-00-00-00\n#fields\t{fields}\n#types\t{types}\n")


def _log(directory: Path, path: str, cols: list[tuple[str, str]], rows: list[list[str]]
         ) -> None:
    text = HEADER.format(path=path, fields="\t".join(c for c, _ in cols),
                         types="\t".join(t for _, t in cols))
    text += "".join("\t".join(r) + "\n" for r in rows) + "#close\t2024-01-01-00-00-01\n"
    (directory / f"{path}.log").write_text(text)


CONN = [("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"),
        ("id.resp_h", "addr"), ("id.resp_p", "port"), ("proto", "enum"),
        ("duration", "interval")]
NOTICE = [("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"),
          ("id.resp_h", "addr"), ("id.resp_p", "port"), ("proto", "enum"), ("note", "enum"),
          ("msg", "string"), ("sub", "string"), ("src", "addr"), ("dst", "addr"),
          ("p", "port"), ("actions", "set[enum]")]
INTEL = [("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"),
         ("id.resp_h", "addr"), ("id.resp_p", "port"), ("seen.indicator", "string"),
         ("seen.indicator_type", "enum"), ("seen.where", "enum"), ("seen.node", "string"),
         ("matched", "set[enum]"), ("sources", "set[string]")]
WEIRD = [("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"),
         ("id.resp_h", "addr"), ("id.resp_p", "port"), ("name", "string"), ("addl", "string"),
         ("notice", "bool"), ("peer", "string"), ("source", "string")]


@pytest.fixture
def logs(tmp_path: Path) -> ZeekLogs:
    _log(tmp_path, "conn", CONN, [
        ["1254722767.492060", "CHhAvVGS1DHFjwGM9", "10.10.1.4", "1470", "74.53.140.153", "25",
         "tcp", "3.000000"],
        ["1254722769.500000", "CUM0KZ3MLUfNB0cl11", "192.168.133.100", "49648",
         "192.168.133.102", "25", "tcp", "1.000000"]])
    _log(tmp_path, "notice", NOTICE, [
        ["1254722768.0", "CHhAvVGS1DHFjwGM9", "10.10.1.4", "1470", "74.53.140.153", "25",
         "tcp", "SSL::Invalid_Server_Cert", "certificate expired", "-", "10.10.1.4",
         "74.53.140.153", "25", "Notice::ACTION_LOG"],
        ["1254722769.0", "-", "-", "-", "-", "-", "-", "Scan::Port_Scan",
         "10.10.1.4 scanned 20 ports", "-", "10.10.1.4", "74.53.140.153", "-",
         "Notice::ACTION_LOG,Notice::ACTION_ALARM"],
        ["1254722769.5", "-", "-", "-", "-", "-", "-", "Weird::Activity", "odd", "-", "-",
         "-", "-", "Notice::ACTION_ALARM"]])
    _log(tmp_path, "intel", INTEL, [
        ["1254722768.5", "CHhAvVGS1DHFjwGM9", "10.10.1.4", "1470", "74.53.140.153", "25",
         "74.53.140.153", "Intel::ADDR", "Conn::IN_RESP", "zeek", "Intel::ADDR",
         "feed-a,feed-b"]])
    _log(tmp_path, "weird", WEIRD, [
        ["1254722769.9", "CUM0KZ3MLUfNB0cl11", "192.168.133.100", "49648", "192.168.133.102",
         "25", "truncated_header", "-", "F", "zeek", "-"]])
    files = (BASELINES / "scripts.base.protocols.smtp.attachment" / "files.log").read_text()
    (tmp_path / "files.log").write_text(files.replace("XXXXXXXXXX.XXXXXX", "1254722770.5"))
    return ZeekLogs(tmp_path)


def test_verdicts_by_the_severity_table(logs: ZeekLogs) -> None:
    found = findings(logs, notice_severity={"SSL::Invalid_Server_Cert": "low"},
                     step="nsm", case="c1", query_id="q1")
    got = [(v.category, v.signature_id, v.severity, v.score) for v in found.verdicts]
    assert got == [
        ("notice", "SSL::Invalid_Server_Cert", "low", 40),  # the step's override
        ("notice", "Scan::Port_Scan", "high", 80),  # ACTION_ALARM
        ("notice", "Weird::Activity", "high", 80),
        ("intel", "Intel::ADDR:74.53.140.153", "high", 80),
        ("weird", "truncated_header", "info", 20)]
    assert (zv.INTEL_SEVERITY, zv.ALARM_SEVERITY, zv.NOTICE_SEVERITY, zv.WEIRD_SEVERITY) == (
        "high", "high", "medium", "info")
    cert, scan, bare, intel, weird = found.verdicts
    assert cert.flow == FlowKey(6, "10.10.1.4", 1470, "74.53.140.153", 25)
    assert cert.subject_id == "zeek-conn:CHhAvVGS1DHFjwGM9" and cert.ts == 1254722768.0
    assert scan.flow == FlowKey(0, "10.10.1.4", 0, "74.53.140.153", 0)  # host notice
    assert bare.flow == FlowKey(0, "", 0, "", 0) and found.unlinked == 2
    assert intel.signature == ("Intel match: 74.53.140.153 (Intel::ADDR) seen in "
                               "Conn::IN_RESP")
    assert intel.evidence["record"]["sources"] == ["feed-a", "feed-b"]
    assert weird.flow == FlowKey(6, "192.168.133.100", 49648, "192.168.133.102", 25)
    assert {(v.step, v.case, v.query_id) for v in found.verdicts} == {("nsm", "c1", "q1")}
    # each record's own time: inside its connection, or a host record's (no connection)
    assert [v.ts for v in found.verdicts] == [1254722768.0, 1254722769.0, 1254722769.5,
                                              1254722768.5, 1254722769.9]


def test_a_record_raised_outside_its_connection_takes_the_connections_start(
        tmp_path: Path) -> None:
    """What Zeek raises as a connection is removed at the end of the input carries the
    network time of the run's last packet (here years later): the verdict's time is the
    connection's start, so it pivots back to the connection's packets. A connection whose
    duration is unset (one packet) spans that packet's time only."""
    _log(tmp_path, "conn", CONN, [
        ["1254722767.492060", "C1", "10.10.1.4", "1470", "74.53.140.153", "25", "tcp",
         "3.000000"],
        ["1254722800.000000", "C2", "10.10.1.4", "1471", "74.53.140.153", "25", "tcp", "-"]])
    _log(tmp_path, "weird", WEIRD, [
        ["1700000000.0", "C1", "10.10.1.4", "1470", "74.53.140.153", "25",
         "connection_originator_SYN_ack", "-", "F", "zeek", "-"],
        ["1254722770.4925", "C1", "10.10.1.4", "1470", "74.53.140.153", "25", "in_span",
         "-", "F", "zeek", "-"],
        ["1254722767.0", "C1", "10.10.1.4", "1470", "74.53.140.153", "25", "before_start",
         "-", "F", "zeek", "-"],
        ["1254722801.0", "C2", "10.10.1.4", "1471", "74.53.140.153", "25", "after_one_pkt",
         "-", "F", "zeek", "-"],
        ["1700000000.0", "-", "10.10.1.9", "-", "10.10.1.8", "-", "no_connection", "-",
         "F", "zeek", "-"]])
    found = findings(ZeekLogs(tmp_path))
    assert [(v.signature_id, v.ts) for v in found.verdicts] == [
        ("connection_originator_SYN_ack", 1254722767.49206), ("in_span", 1254722770.4925),
        ("before_start", 1254722767.49206), ("after_one_pkt", 1254722800.0),
        ("no_connection", 1700000000.0)]


def test_metadata_links_files_to_flows_through_conn_uids(logs: ZeekLogs) -> None:
    found = findings(logs)
    files = [m for m in found.metadata if m.log == "files"]
    assert [m.record["fuid"] for m in files] == ["FmFp351N5nhsMmAfQg", "Fqrb1K5DWEfgy4WU2",
                                                 "FEFYSd1s8Onn9LynKj", "Fc5KpS3kUYqDLwWSMf"]
    assert [m.flow.src if m.flow else None for m in files] == [
        "10.10.1.4", "10.10.1.4", "10.10.1.4", "192.168.133.100"]
    assert files[2].record["filename"] == "NEWS.txt" and files[2].ts == 1254722770.5
    conns = [m for m in found.metadata if m.log == "conn"]
    assert [m.uid for m in conns] == ["CHhAvVGS1DHFjwGM9", "CUM0KZ3MLUfNB0cl11"]
    assert conns[0].to_dict()["flow"] == {"proto": "tcp", "src_ip": "10.10.1.4",
                                          "src_port": 1470, "dest_ip": "74.53.140.153",
                                          "dest_port": 25}


def test_metadata_limit_per_log(logs: ZeekLogs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zv, "MAX_METADATA_PER_LOG", 1)
    found = findings(logs)
    assert found.truncated == {"conn": 1, "files": 3}
    assert [m.log for m in found.metadata] == ["conn", "files"]
