"""``if:`` conditions are type-checked when a workflow is validated: what each name holds
comes from the record dataclasses themselves (type hints, ``Literal`` and ``OneOf``
enumerations), so the condition language and the Python records cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from pcapwire.cli import main
from pcapwire.records import (
    IP_PROTO_NAMES,
    RECORD_TYPES,
    SEVERITIES,
    EmailRecord,
    FileRecord,
    FlowKey,
    PcapChunk,
    StreamRecord,
    Verdict,
)
from pcapwire.workflow import RunInfo
from pcapwire.workflow.expr import (
    EXCLUDED_FIELDS,
    FLOW_TYPES,
    KIND_FIELDS,
    KIND_TYPES,
    RUN_FIELDS,
    RUN_TYPES,
    Expression,
    Type,
    check_names,
    record_context,
)

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "workflows" / "rules"
PROTO = ("a string (one of: tcp, udp, icmp, icmp6, sctp, or another IP protocol's number, "
         "e.g. '47')")


# ---- through `pcapwire workflow validate` -------------------------------------------------
def test_validate_reports_type_errors_at_the_offending_operand(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCAPWIRE_LOAD_PLUGINS", "yara,carve")
    f = tmp_path / "typed.yaml"
    f.write_text(f"""\
name: typed
steps:
  - id: carve
    uses: carve
  - id: streams
    uses: yara
    input: stream
    with: {{rules: [{RULES}/]}}
    if: "record.flow.proto == 6 or stream.direction == 'up'"
  - id: files
    uses: yara
    input: file
    with: {{rules: [{RULES}/]}}
    if: 'file.size > "1000" and file.direction in ["orig", "upload"]'
  - id: ok
    uses: yara
    input: stream
    with: {{rules: [{RULES}/]}}
    if: "stream.flow.proto == 'tcp' and stream.direction != 'resp' and stream.size > 0"
""")
    rc = main(["workflow", "validate", str(f)])
    out = capsys.readouterr().out
    assert rc == 2
    assert out.splitlines() == [
        f"{f}:9:31: steps[1].if: record.flow.proto is {PROTO}; compared with a number "
        "(write 'tcp')",
        f"{f}:9:56: steps[1].if: stream.direction is a string (one of: orig, resp); compared "
        "with 'up', a value it never takes",
        f"{f}:14:22: steps[2].if: file.size is a number; compared with a string",
        f"{f}:14:60: steps[2].if: file.direction is a string (one of: orig, resp, ''); "
        "compared with 'upload', a value it never takes",
    ]


# ---- check_names: (message, column) -------------------------------------------------------
@pytest.mark.parametrize(("kind", "text", "problems"), [
    ("stream", "record.flow.proto == 6",
     [(f"record.flow.proto is {PROTO}; compared with a number (write 'tcp')", 22)]),
    ("stream", "6 != stream.flow.proto",
     [(f"stream.flow.proto is {PROTO}; compared with a number (write 'tcp')", 1)]),
    ("stream", "stream.direction == \"up\"",
     [("stream.direction is a string (one of: orig, resp); compared with 'up', a value it "
       "never takes", 21)]),
    ("stream", "stream.flow.proto == 'TCP'",
     [(f"stream.flow.proto is {PROTO}; compared with 'TCP', a value it never takes", 22)]),
    ("stream", "stream.direction in ['orig', 'up', 3]",
     [("stream.direction is a string (one of: orig, resp); compared with 'up', a value it "
       "never takes", 30),
      ("stream.direction is a string (one of: orig, resp); compared with a number", 36)]),
    ("stream", "stream.flow.dest_port in ['80', 8080]",
     [("stream.flow.dest_port is a number; compared with a string", 27)]),
    ("stream", "stream.size == stream.direction",
     [("stream.size is a number; compared with stream.direction, a string (one of: orig, "
       "resp)", 16)]),
    ("stream", "stream.complete == 'true'",
     [("stream.complete is a boolean (true or false); compared with a string", 20)]),
    ("stream", "record.kind == 'file'",
     [("record.kind is a string (always 'stream' here); compared with 'file', a value it "
       "never takes", 16)]),
    ("stream", "lower(stream.direction) == 'ORIG'",
     [("lower(stream.direction) is a string (one of: orig, resp); compared with 'ORIG', a "
       "value it never takes", 28)]),
    ("stream", "-stream.direction == 1",
     [("'-' needs a number; stream.direction is a string (one of: orig, resp)", 2)]),
    ("stream", "stream.size in 5",
     [("'in' needs a list, a string or a mapping on its right; 5 is a number", 16)]),
    ("stream", "stream.size in stream.direction",
     [("stream.direction is a string, so 'in' looks for a substring; stream.size is a "
       "number", 1)]),
    ("stream", "stream.size > null",
     [("'>' with null is always false; test for a missing value with == null", 15)]),
    ("stream", "len(stream.size) > 0",
     [("len() of stream.size, a number, is always 0", 5)]),
    ("stream", "stream.size.bytes > 1",
     [("stream.size is a number and has no field 'bytes'", 1)]),
    ("stream", "cidr(stream.flow.src_port, '10.0.0.0/33')",
     [("cidr() takes an IP address; stream.flow.src_port is a number", 6),
      ("'10.0.0.0/33' is not a network (use CIDR, e.g. '10.0.0.0/8')", 28)]),
    ("verdict", "verdict.severity >= 'high'",
     [("verdict.severity is a string (one of: info, low, medium, high, critical); '>=' "
       "orders its values alphabetically; compare ranks: severity(verdict.severity) >= "
       "severity('high')", 1)]),
    ("verdict", "severity(verdict.severity) >= severity('hgh')",
     [("'hgh' is not a severity; severities: info, low, medium, high, critical", 40)]),
    ("verdict", "severity(verdict.score) > 2",
     [("severity() takes a severity name; verdict.score is a number", 10)]),
    ("verdict", "verdict.subject_kind == 'files'",
     [("verdict.subject_kind is a string (one of: flow, pcap, stream, file, email); "
       "compared with 'files', a value it never takes", 25)]),
    ("verdict", "verdict.tags == 'x'",
     [("verdict.tags is a list of strings; compared with a string (to test membership use "
       "'in')", 17)]),
    ("email", "contains(email.rcpt_to, 'x')",
     [("contains() works on strings; email.rcpt_to is a list of strings (to test "
       "membership use 'in')", 10)]),
    ("email", "3 in email.to",
     [("email.to is a list of strings; 3 is a number", 1)]),
    ("file", "run.case == 1",
     [("run.case is a string; compared with a number", 13)]),
    ("pcap", "pcap.packets > '10'",
     [("pcap.packets is a number; compared with a string", 16)]),
    # sound conditions: nothing to report
    ("stream", "stream.size > 0 and stream.flow.dest_port in [80, 8080] and "
               "stream.direction == 'orig' and stream.flow.proto in ['tcp', '47']", []),
    ("stream", "cidr(stream.flow.src_ip, '10.0.0.0/8') and not stream.complete == false", []),
    ("stream", "stream.id != null and len(stream.gaps) == 0 and -stream.size < 0", []),
    ("file", "file.extra.hashlist.verdict == 'unknown' and file.direction == '' and "
             "startswith(file.mime_type, 'application/')", []),
    ("verdict", "severity(verdict.severity) >= severity('high') and 't' in verdict.tags "
                "and verdict.subject_kind == 'flow'", []),
    ("email", "'a@example.org' in email.rcpt_to and contains(email.subject, 'x')", []),
])
def test_check_names_reports_type_problems(kind: str, text: str,
                                           problems: list[tuple[str, int]]) -> None:
    assert check_names(Expression(text), kind) == problems


def test_unknown_names_are_reported_once_not_as_type_errors() -> None:
    assert check_names(Expression("stream.sizee == 'x' and stream.flow.port == 1"),
                       "stream") == [
        ("stream has no field 'sizee'; fields: complete, data, direction, end_ts, flow, gaps, "
         "id, kind, size, start_ts", 1),
        ("flow has no field 'port'; fields: proto, src_ip, src_port, dest_ip, dest_port", 25)]


# ---- the names are the records' own -------------------------------------------------------
FLOW = FlowKey(6, "10.0.0.1", 40000, "192.0.2.9", 80)
GRE = FlowKey(47, "10.0.0.1", 0, "192.0.2.9", 0)
RECORDS: list[Any] = [
    PcapChunk("q1", 0, 1, 65535, b"\xd4\xc3\xb2\xa1" + bytes(20), 0, 0.0, 0.0),
    StreamRecord(id="C1-orig", flow=FLOW, direction="orig", data=b"abc", start_ts=1.5,
                 end_ts=2.5, gaps=[(3, 10)], complete=False),
    FileRecord(id="F1", sha256="a" * 64, md5="b" * 32, sha1="c" * 40, size=3, path="/x/y",
               flow=GRE, ts=3.0, protocol="http", direction="resp", filename="y.exe",
               missing_ranges=[(1, 2)], extra={"url": "/y.exe"}),
    EmailRecord(id="E1", path="/x/m.eml", flow=FLOW, ts=4.0, protocol="smtp",
                mail_from="a@example.org", rcpt_to=["b@example.org"], subject="hi",
                attachments=["F1"]),
    Verdict(analyzer="yara", subject_kind="file", subject_id="F1", flow=FLOW, ts=3.0,
            severity="high", score=80, tags=["t"], evidence={"sha256": "a" * 64}),
]


def test_every_record_field_is_a_name_with_the_same_name() -> None:
    assert set(RECORD_TYPES) == set(KIND_TYPES) == {r.kind for r in RECORDS}
    for kind, cls in RECORD_TYPES.items():
        excluded = EXCLUDED_FIELDS.get(kind, {})
        assert all(reason.strip() for reason in excluded.values()), kind
        for f in fields(cls):  # type: ignore[arg-type]
            assert (f.name in KIND_FIELDS[kind]) != (f.name in excluded), (kind, f.name)
        properties = {n for n, v in vars(cls).items()
                      if isinstance(v, property) and not n.startswith("_")}
        # nothing else: the record's plain-data names, its properties, and `kind`
        plain = set(next(r for r in RECORDS if r.kind == kind).to_dict())
        assert KIND_FIELDS[kind] == (plain | properties) - set(excluded), kind
    # a flow has the names of its plain-data form, which carries all of it
    assert tuple(FLOW_TYPES) == tuple(FlowKey.DICT_FIELDS) == tuple(FLOW.to_dict())
    assert all(FlowKey.from_dict(k.to_dict()) == k for k in (FLOW, GRE))
    assert RUN_FIELDS == {f.name for f in fields(RunInfo)} - {"started"}


def _holds(t: Type, value: Any) -> bool:
    """Whether a runtime value is what validation says the name holds."""
    if t.name == "any" or value is None:
        return True
    if t.name == "string":
        return isinstance(value, str) and t.takes(value)
    if t.name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if t.name == "boolean":
        return isinstance(value, bool)
    if t.name == "bytes":
        return isinstance(value, bytes)
    if t.name == "list":
        return isinstance(value, list | tuple) and all(
            t.item is None or _holds(t.item, v) for v in value)
    if t.name == "mapping":
        return isinstance(value, Mapping) and (t.fields is None or (
            set(value) == set(t.fields) and all(_holds(t.fields[k], value[k]) for k in value)))
    return False


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.kind)
def test_what_validation_says_is_what_a_condition_sees(record: Any) -> None:
    run = RunInfo("r1", "wf", case="IR-1", event="e", query_id="q1")
    ctx = record_context(record, {name: getattr(run, name) for name in RUN_FIELDS})
    view = ctx[record.kind]
    assert set(view) == KIND_FIELDS[record.kind]
    for name, t in KIND_TYPES[record.kind].items():
        assert _holds(t, view[name]), (record.kind, name, t, view[name])
    for name, t in RUN_TYPES.items():
        assert _holds(t, ctx["run"][name]), name
    # and each name's type check agrees with evaluation: a value it holds compares equal
    for name in KIND_TYPES[record.kind]:
        value = view[name]
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            literal = repr(value) if isinstance(value, str) else str(value)
            text = f"{record.kind}.{name} == {literal}"
            assert check_names(Expression(text), record.kind) == [], text
            assert Expression(text)(ctx) is True, text


def test_enumerations_are_the_records_own() -> None:
    assert KIND_TYPES["verdict"]["severity"].values == SEVERITIES
    assert KIND_TYPES["stream"]["direction"].values == ("orig", "resp")
    assert FLOW_TYPES["proto"].values == tuple(IP_PROTO_NAMES.values())
    assert {GRE.to_dict()["proto"], FLOW.to_dict()["proto"]} == {"47", "tcp"}
    with pytest.raises(ValueError, match="subject_kind 'files' is not one of flow, pcap, "
                                         "stream, file, email"):
        Verdict(analyzer="a", subject_kind="files", subject_id="x", flow=FLOW, ts=0,
                severity="high", score=1)
