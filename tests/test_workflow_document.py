"""Workflow documents and what crosses step boundaries: the shipped JSON Schema, triggers,
the ``if:`` expression language (safe: never Python ``eval``), serialisable records, and
verdicts exported as ECS JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pcapwire.cases import ECS_VERSION, CaseStore, ecs_line, verdict_to_ecs
from pcapwire.hooks.host import build_host
from pcapwire.records import (
    EmailRecord,
    FileRecord,
    FlowKey,
    PcapChunk,
    StreamRecord,
    Verdict,
    record_from_dict,
)
from pcapwire.workflow import RunInfo, document
from pcapwire.workflow.document import (
    MAX_YAML_NODES,
    check_workflow,
    load_workflow,
    parse_duration,
    schema,
)
from pcapwire.workflow.expr import (
    MAX_EXPRESSION_DEPTH,
    MAX_EXPRESSION_LENGTH,
    Expression,
    ExpressionError,
    record_context,
)
from pcapwire.workflow.results import RunSummary, StepResult

REPO = Path(__file__).resolve().parents[1]
FLOW = FlowKey(6, "10.0.0.1", 40000, "192.0.2.9", 80)


# ---- schema and shipped workflows ---------------------------------------------------------
def test_schema_is_shipped_in_the_package_and_in_workflows() -> None:
    packaged = schema()
    assert json.loads((REPO / "workflows" / "workflow.schema.json").read_text()) == packaged
    jsonschema.Draft202012Validator.check_schema(packaged)


@pytest.mark.parametrize("path", sorted((REPO / "workflows").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_workflows_validate(path: Path) -> None:
    """Against the schema alone (what an editor does) and fully, with every plugin."""
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=workflow.schema.json\n")
    # YAML 1.2, as editors read it (``on`` is a key, not the boolean of YAML 1.1)
    jsonschema.validate(yaml.load(text, Loader=document._Loader), schema())  # noqa: S506
    wf, problems = check_workflow(path, build_host())
    assert wf is not None and [p for p in problems if not p.warning] == []


def test_triggers() -> None:
    host = build_host(env={"PCAPWIRE_LOAD_PLUGINS": "yara"})
    base = "name: t\nsteps:\n  - uses: yara\n    with: {rules: [%s]}\n" % (
        REPO / "workflows" / "rules")

    def wf(on: str) -> Any:
        return load_workflow("<t>", host, text=on + base)

    explicit = wf("")
    every = wf('"on": {query: true}\n')
    pattern = wf('"on": {query: {case: "IR-*", event: "alert-*"}, manual: true}\n')
    case_only = wf('"on": {query: {case: "IR-*"}}\n')
    assert [w.triggered_by("IR-1", "alert-9") for w in (explicit, every, pattern,
                                                         case_only)] == [False] + [True] * 3
    assert [pattern.triggered_by(c, e) for c, e in (("IR-1", "hunt"), ("ops", "alert-1"),
                                                     ("IR-2", "alert-"))] == [False, False,
                                                                              True]
    assert case_only.triggered_by("IR-7", "")


def test_durations_and_yaml_limits(tmp_path: Path) -> None:
    assert [parse_duration(v) for v in (5, 2.5, "90s", "250ms", "5m", "1h")] == [
        5.0, 2.5, 90.0, 0.25, 300.0, 3600.0]
    with pytest.raises(ValueError, match="'5 min' is not a duration"):
        parse_duration("5 min")
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\n")
    wf, problems = check_workflow(bomb, build_host(entry_points=False))
    assert wf is None and [str(p) for p in problems] == [
        f"{bomb}:1:1: more than MAX_YAML_NODES={MAX_YAML_NODES} YAML nodes (aliases "
        "expanded)"]


# ---- expressions ------------------------------------------------------------------------
STREAM = StreamRecord(id="C1-orig", flow=FLOW, direction="orig", data=b"GET / HTTP/1.1\r\n",
                      start_ts=1.0, end_ts=2.0)
RUN = {"case": "IR-3", "event": "alert-1", "query_id": "q", "workflow": "w", "run_id": "r"}


@pytest.mark.parametrize(("text", "expected"), [
    ("stream.size > 0", True),
    ("stream.size == 16 and stream.direction == 'orig'", True),
    ("record.flow.dest_port in [80, 8080] and not stream.complete == false", True),
    ("stream.flow.dest_port not in [80]", False),
    ("cidr(stream.flow.src_ip, '10.0.0.0/8') and not cidr(stream.flow.dest_ip, '10.0.0.0/8')",
     True),
    ("startswith(run.case, 'IR-') and glob(run.event, 'alert-*')", True),
    ("contains(lower('ABC'), 'b') and upper('x') == 'X' and endswith('a.exe', '.exe')", True),
    ("len(stream.gaps) == 0 and len([1, 2, 3]) == 3", True),
    ("severity('high') > severity('low') and severity('nope') == -1", True),
    ("'HTTP' in 'GET / HTTP/1.1'", True),
    ("stream.missing == null and stream.missing.deeper == null", True),
    ("1 == '1' or 1 < 'a' or null < 1", False),   # different types never compare
    ("1 != '1' and 2.0 == 2 and -stream.size == -16", True),
    ("(1 < 2) == true", True),
])
def test_expressions(text: str, expected: bool) -> None:
    assert Expression(text)(record_context(STREAM, RUN)) is expected


@pytest.mark.parametrize(("text", "message"), [
    ("stream.size >", "unexpected end of expression (at column 14)"),
    ("stream.size = 1", "unexpected character '=' (at column 13)"),
    ("__import__('os')", "unknown function '__import__'; functions: cidr, contains, "
     "endswith, glob, len, lower, severity, startswith, upper (at column 1)"),
    ("len(1, 2)", "len() takes 1 argument(s), got 2 (at column 1)"),
    ("stream.", "expected a field name after '.' (at column 8)"),
    ("(1", "expected ')', found end of expression (at column 3)"),
    ("[1 2]", "expected ',' or ']', found 2 (at column 4)"),
    ("a; b", "unexpected character ';' (at column 2)"),
    ("x" * (MAX_EXPRESSION_LENGTH + 1), f"longer than MAX_EXPRESSION_LENGTH="
     f"{MAX_EXPRESSION_LENGTH} characters (at column 1)"),
    ("(" * 40 + "1" + ")" * 40, f"nesting deeper than MAX_EXPRESSION_DEPTH="
     f"{MAX_EXPRESSION_DEPTH} (at column 34)"),
])
def test_expression_errors_have_columns(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        Expression(text)
    assert str(exc.value) == message


def test_names_reach_only_record_fields_never_python_attributes() -> None:
    ctx = record_context(STREAM, RUN)
    for text in ("stream.data.__class__", "stream.__class__", "record.flow.__dict__",
                 "run.__len__"):
        assert Expression(f"{text} == null")(ctx) is True
    assert set(ctx) == {"stream", "record", "run"}


# ---- records ------------------------------------------------------------------------------
RECORDS = [
    PcapChunk("q1", 0, 1, 65535, b"\xd4\xc3\xb2\xa1" + bytes(20), 0, 0.0, 0.0),
    StreamRecord(id="C1-orig", flow=FLOW, direction="orig", data=b"\x00\xffabc", start_ts=1.5,
                 end_ts=2.5, gaps=[(3, 10)], complete=False),
    FileRecord(id="F1", sha256="a" * 64, md5="b" * 32, sha1="c" * 40, size=3, path="/x/y",
               flow=FLOW, ts=3.0, protocol="http", filename="y.exe", missing_ranges=[(1, 2)],
               extra={"url": "/y.exe"}),
    EmailRecord(id="E1", path="/x/m.eml", flow=FLOW, ts=4.0, protocol="smtp",
                mail_from="a@example.org", rcpt_to=["b@example.org"], subject="hi",
                attachments=["F1"]),
    Verdict(analyzer="yara", subject_kind="file", subject_id="F1", flow=FLOW, ts=3.0,
            severity="high", score=80, signature_id="ns:R", signature="R", tags=["t"],
            evidence={"sha256": "a" * 64, "strings": [{"offset": 1}]}, step="s", case="c",
            query_id="q1"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.kind)
def test_records_cross_boundaries_as_plain_data(record: Any) -> None:
    wire = json.dumps(record.to_dict())
    back = record_from_dict(json.loads(wire))
    assert back == record and type(back) is type(record)


def test_verdicts_reject_bad_severity_and_score() -> None:
    with pytest.raises(ValueError, match="severity 'severe' is not one of info, low, medium, "
                                         "high, critical"):
        Verdict(analyzer="a", subject_kind="stream", subject_id="x", flow=FLOW, ts=0,
                severity="severe", score=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="score 101 is outside 0..100"):
        Verdict(analyzer="a", subject_kind="stream", subject_id="x", flow=FLOW, ts=0,
                severity="high", score=101)


# ---- ECS export ---------------------------------------------------------------------------
def test_verdict_as_ecs() -> None:
    v = RECORDS[-1]
    assert verdict_to_ecs(v, run_id="r1", verdict_id=7) == {
        "@timestamp": "1970-01-01T00:00:03.000000Z",
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "alert", "module": "pcapwire", "dataset": "pcapwire.yara",
                  "severity": 3, "risk_score": 80.0, "category": ["malware"],
                  "type": ["indicator"], "id": "7"},
        "rule": {"id": "ns:R", "name": "R", "category": "", "ruleset": "yara"},
        "source": {"ip": "10.0.0.1", "port": 40000},
        "destination": {"ip": "192.0.2.9", "port": 80},
        "network": {"transport": "tcp", "iana_number": "6"},
        "observer": {"product": "pcapwire", "type": "nsm"},
        "tags": ["t"],
        "file": {"hash": {"sha256": "a" * 64}},
        "pcapwire": {"analyzer": "yara", "step": "s", "severity": "high", "score": 80,
                     "subject": {"kind": "file", "id": "F1"}, "case": "c", "query_id": "q1",
                     "run_id": "r1", "evidence": {"sha256": "a" * 64,
                                                  "strings": [{"offset": 1}]},
                     "pivot": {"bpf": "tcp and host 10.0.0.1 and host 192.0.2.9 and port "
                               "40000 and port 80", "ts": 3.0}}}
    line = ecs_line(v, run_id="r1")
    assert "\n" not in line and json.loads(line)["rule"]["id"] == "ns:R"


def test_case_store_exports_json_lines_and_survives_reopening(tmp_path: Path) -> None:
    db = tmp_path / "cases.sqlite"
    store = CaseStore(db)
    info = RunInfo("r1", "w", case="IR-1", started=10.0)
    store.start_run(info, "digest")
    low = Verdict(analyzer="a", subject_kind="stream", subject_id="s1", flow=FLOW, ts=5.0,
                  severity="low", score=30, case="IR-1")
    ids = [store.add_verdict("r1", low), store.add_verdict("r1", RECORDS[-1])]
    store.finish_step("r1", StepResult(step="s", analyzer="a", status="ok", records_in=2))
    store.close()  # no finish_run: the process "stopped" mid-run

    again = CaseStore(db)
    try:
        (row,) = again.runs("IR-1")
        assert (row.run_id, row.status, row.workflow_digest) == ("r1", "interrupted", "digest")
        assert again.verdicts("IR-1") == [low]  # the second verdict belongs to case "c"
        assert [s.status for s in again.steps("r1")] == ["ok"]
        out: list[str] = []

        class Sink:
            def write(self, text: str) -> None:
                out.append(text)

        assert again.export_jsonl(None, Sink(), min_severity="high") == 1  # type: ignore[arg-type]
        (doc,) = [json.loads(x) for x in out]
        assert (doc["event"]["id"], doc["pcapwire"]["run_id"], doc["rule"]["id"]) == (
            str(ids[1]), "r1", "ns:R")
        summary = RunSummary(run_id="r1", workflow="w", case="IR-1", event="", query_id="",
                             status="ok", started=10.0, finished=11.0, verdicts=2)
        again.finish_run(summary)
        assert again.run("r1").status == "ok"  # type: ignore[union-attr]
    finally:
        again.close()
