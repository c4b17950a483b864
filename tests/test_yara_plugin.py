"""The YARA plugin (plugins/yara) with the real yara-python: rule sources, the compile
cache, errors with file and line, verdicts from streams and files, severity from meta,
and the shipped ``workflows/yara-streams.yaml`` on a generated capture."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pcapwire.plugins.yara as yara_plugin
import pytest
from pcapwire.hooks.host import build_host
from pcapwire.plugins.yara.analyzer import (
    MAX_OFFSETS_PER_STRING,
    YaraAnalyzer,
    YaraConfig,
    stream_offset,
)
from pcapwire.plugins.yara.rules import RuleCache, RuleError, resolve_sources
from pcapwire.reassembly import streams_from_file
from pcapwire.records import FileRecord, FlowKey, StreamRecord, Verdict
from pcapwire.synth import generate
from pcapwire.workflow import RunInfo, StepContext
from pcapwire.workflow.document import check_workflow, load_workflow
from pcapwire.workflow.engine import Engine
from pcapwire.workflow.sources import file_chunks

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "workflows" / "yara-streams.yaml"
FLOW = FlowKey(6, "10.0.0.1", 40000, "192.0.2.9", 80)
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

RULES = """\
rule Needle : alpha beta
{
    meta:
        severity = "HIGH"
        category = "test"
    strings:
        $a = "needle"
        $b = { 00 FF }
    condition:
        any of them
}

rule Scored
{
    meta:
        score = 85
    strings:
        $s = "scored"
    condition:
        $s
}

rule Plain
{
    strings:
        $p = "plain"
    condition:
        $p
}

rule Both
{
    meta:
        severity = "low"
        score = 10
    strings:
        $x = "both"
    condition:
        $x
}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def synth_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 MB of generated traffic: 127 TCP sessions, one of them (session 97) carrying
    the EICAR test string in its request line and its response body."""
    path = tmp_path_factory.mktemp("synth") / "synth.pcap"
    assert generate(path, 3_000_000, seed=7) == {"bytes": 3001395, "packets": 3712,
                                                 "tcp_sessions": 127, "udp_flows": 31}
    return path


class Collect:
    def __init__(self) -> None:
        self.items: list[Any] = []

    async def __call__(self, item: Any) -> None:
        self.items.append(item)


async def scan(records: list[Any], tmp_path: Path, **config: Any) -> list[Verdict]:
    """Run one YARA session (real analyzer, real context) over ``records``."""
    analyzer = YaraAnalyzer()
    out = Collect()
    ctx = StepContext(run=RunInfo("run1", "wf", case="IR-1", query_id="q1"), step="scan",
                      analyzer="yara", config=YaraConfig.from_mapping(config),
                      workdir=tmp_path, emit_fn=out, base_dir=tmp_path)
    session = analyzer.open_session(ctx)
    await session.start()
    try:
        for rec in records:
            await session.feed(rec)
        await session.finish()
    finally:
        await session.aclose()
    return out.items


def stream(data: bytes, gaps: list[tuple[int, int]] | None = None) -> StreamRecord:
    return StreamRecord(id="C1-orig", flow=FLOW, direction="orig", data=data,
                        start_ts=1700000000.5, end_ts=1700000001.0, gaps=gaps or [])


# ---- rule sources --------------------------------------------------------------------
def test_sources_files_directories_and_globs(tmp_path: Path) -> None:
    a = write(tmp_path / "rules" / "a.yar", "rule A { condition: true }")
    b = write(tmp_path / "rules" / "web" / "b.yara", "rule B { condition: true }")
    write(tmp_path / "rules" / "notes.txt", "not a rule file")
    other = write(tmp_path / "more" / "a.yar", "rule A2 { condition: true }")
    single = write(tmp_path / "single.yar", "rule S { condition: true }")
    assert resolve_sources(["rules/"], tmp_path) == {"a.yar": str(a), "web/b.yara": str(b)}
    assert resolve_sources(["rules/**/*.yar*"], tmp_path) == {"a.yar": str(a),
                                                              "b.yara": str(b)}
    # the same namespace for another file: that file is named by its path; a file named
    # twice is compiled once
    assert resolve_sources(["rules/", "more/a.yar", str(single), "single.yar"],
                           tmp_path) == {"a.yar": str(a), "web/b.yara": str(b),
                                         str(other): str(other), "single.yar": str(single)}
    for sources, message in (
            (["missing/"], f"rules: {tmp_path / 'missing'} does not exist"),
            (["*.yara"], f"rules: '*.yara' matches no file (looked for {tmp_path}/*.yara)"),
            (["more/../rules/web/../../empty"], None)):
        if message is None:
            (tmp_path / "empty").mkdir()
            message = (f"rules: directory {tmp_path}/more/../rules/web/../../empty holds "
                       "no .yar/.yara file")
        with pytest.raises(RuleError) as exc:
            resolve_sources(sources, tmp_path)
        assert str(exc.value) == message
    with pytest.raises(RuleError, match="^rules: no rule file, directory or glob given$"):
        RuleCache().get([], tmp_path)


def test_rules_compile_once_and_again_when_a_file_changes(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    one = write(rules / "one.yar", 'include "inc/strings.yari"\n'
                'rule One { strings: $a = "AAAA" condition: $a or Included }\n')
    inc = write(rules / "inc" / "strings.yari", 'rule Included { strings: $x = "XXXX" '
                "condition: $x }\n")
    cache = RuleCache()
    first = cache.get(["rules/"], tmp_path)
    assert cache.get(["rules/"], tmp_path) is first and cache.compiles == 1
    assert first.count == 2 and first.files == {"one.yar": str(one)}
    assert [m.rule for m in first.rules.match(data=b"..AAAA..")] == ["One"]
    # same size, same second: only the contents differ
    one.write_text(one.read_text().replace("AAAA", "BBBB"))
    second = cache.get(["rules/"], tmp_path)
    assert cache.compiles == 2 and second is not first
    assert [m.rule for m in second.rules.match(data=b"..AAAA..BBBB")] == ["One"]
    assert second.rules.match(data=b"..AAAA..") == []
    # an included file changes
    inc.write_text(inc.read_text().replace("XXXX", "YYYY"))
    third = cache.get(["rules/"], tmp_path)
    assert cache.compiles == 3
    assert sorted(m.rule for m in third.rules.match(data=b"YYYY")) == ["Included", "One"]
    # a file added, then removed
    two = write(rules / "two.yar", 'rule Two { strings: $t = "TTTT" condition: $t }\n')
    assert cache.get(["rules/"], tmp_path).count == 3 and cache.compiles == 4
    two.unlink()  # back to the contents compiled before: that set is reused
    assert cache.get(["rules/"], tmp_path) is third and cache.compiles == 4
    # externals are part of the key
    write(tmp_path / "ext.yar", "rule E { condition: flavour == \"x\" }\n")
    e1 = cache.get(["ext.yar"], tmp_path, {"flavour": "x"})
    e2 = cache.get(["ext.yar"], tmp_path, {"flavour": "y"})
    assert cache.compiles == 6 and len(e1.rules.match(data=b"")) == 1
    assert e2.rules.match(data=b"") == []


def test_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "r" / "bad.yar", 'rule ok { condition: true }\n\nrule broken {\n'
                '  strings: $a = "x"\n  condition: $a and\n}\n')
    with pytest.raises(RuleError) as exc:
        RuleCache().get(["r/"], tmp_path)
    assert str(exc.value) == f"{bad}:6: YARA syntax error: syntax error, unexpected '}}'"
    write(bad, 'rule u {\n  condition: $nope\n}\n')
    with pytest.raises(RuleError) as exc:
        RuleCache().get([str(bad)], None)
    assert str(exc.value) == f'{bad}:3: YARA syntax error: undefined string "$nope"'


def test_invalid_severity_or_score_in_meta_names_the_rule_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yar", 'rule fine { condition: true }\n\n'
                 'rule Loud\n{\n  meta:\n    severity = "urgent"\n  condition: true\n}\n')
    with pytest.raises(RuleError) as exc:
        RuleCache().get(["m.yar"], tmp_path)
    assert str(exc.value) == (f"{path}:3: rule Loud: meta severity 'urgent' is not one of "
                              "info, low, medium, high, critical")
    write(path, "private rule Big { meta: score = 150 condition: true }\n")
    with pytest.raises(RuleError) as exc:
        RuleCache().get(["m.yar"], tmp_path)
    assert str(exc.value) == f"{path}:1: rule Big: meta score: score 150 is outside 0..100"


def test_workflow_validation_reports_the_rule_error(tmp_path: Path) -> None:
    write(tmp_path / "rules" / "bad.yar", "rule x {\n  condition: nope\n}\n")
    doc = write(tmp_path / "wf.yaml", "name: t\nsteps:\n  - uses: yara\n    with:\n"
                "      rules: [rules/]\n")
    host = build_host(entry_points=False, extra=[yara_plugin])
    wf, problems = check_workflow(doc, host)
    assert wf is None
    assert [str(p) for p in problems] == [
        f"{doc}:5:7: steps[0].with: {tmp_path}/rules/bad.yar:2: YARA syntax error: "
        "undefined identifier \"nope\""]


# ---- verdicts --------------------------------------------------------------------------
async def test_stream_match_becomes_a_verdict_with_everything(tmp_path: Path) -> None:
    write(tmp_path / "rules" / "t.yar", RULES)
    data = b"xx needle yy \x00\xff needle " + b"needle" * 20
    (v,) = await scan([stream(data)], tmp_path, rules=["rules/"])
    strings = v.evidence.pop("strings")
    assert v == Verdict(
        analyzer="yara", subject_kind="stream", subject_id="C1-orig", flow=FLOW,
        ts=1700000000.5, severity="high", score=80, signature_id="t.yar:Needle",
        signature="Needle", category="test", tags=["alpha", "beta"],
        evidence={"rule": "Needle", "namespace": "t.yar",
                  "meta": {"severity": "HIGH", "category": "test"}},
        step="scan", case="IR-1", query_id="q1")
    assert [(s["identifier"], s["count"], len(s["matches"])) for s in strings] == [
        ("$a", 22, MAX_OFFSETS_PER_STRING), ("$b", 1, 1)]
    assert strings[0]["matches"][:3] == [
        {"offset": 3, "length": 6, "data_hex": b"needle".hex()},
        {"offset": 16, "length": 6, "data_hex": b"needle".hex()},
        {"offset": 23, "length": 6, "data_hex": b"needle".hex()}]
    assert strings[1]["matches"] == [{"offset": 13, "length": 2, "data_hex": "00ff"}]


@pytest.mark.parametrize(("data", "config", "expected"), [
    (b"scored", {}, ("Scored", "high", 85)),            # score only: its band
    (b"plain", {}, ("Plain", "medium", 60)),            # neither: the documented default
    (b"plain", {"default_severity": "low"}, ("Plain", "low", 40)),
    (b"both", {}, ("Both", "low", 10)),                 # both: both kept as given
])
async def test_severity_and_score_from_meta(tmp_path: Path, data: bytes,
                                            config: dict[str, Any],
                                            expected: tuple[str, str, int]) -> None:
    write(tmp_path / "t.yar", RULES)
    (v,) = await scan([stream(data)], tmp_path, rules=["t.yar"], **config)
    assert (v.signature, v.severity, v.score) == expected


async def test_offsets_are_stream_offsets_across_gaps(tmp_path: Path) -> None:
    write(tmp_path / "g.yar", 'rule G { strings: $ab = "AB" $cd = "CD" condition: any of '
          "them }\n")
    # stream bytes: "xxxA" [10 bytes never seen] "Bxx" [5 never seen] "CD"
    rec = stream(b"xxxABxxCD", gaps=[(4, 10), (17, 5)])
    assert [stream_offset(i, rec.gaps) for i in (0, 3, 4, 6, 7, 8)] == [0, 3, 14, 16, 22, 23]
    (v,) = await scan([rec], tmp_path, rules=["g.yar"])
    assert v.evidence["strings"] == [
        {"identifier": "$ab", "count": 1, "matches": [
            {"offset": 3, "length": 2, "data_hex": "4142", "across_gap": True}]},
        {"identifier": "$cd", "count": 1, "matches": [
            {"offset": 22, "length": 2, "data_hex": "4344"}]}]


async def test_files_are_scanned_with_sha256_and_the_size_limit(tmp_path: Path) -> None:
    write(tmp_path / "t.yar", RULES)
    body = b"A" * 100 + b"needle" + b"B" * 100 + b"plain"
    path = tmp_path / "carved.bin"
    path.write_bytes(body)
    rec = FileRecord(id="F1", sha256="ab" * 32, md5="", sha1="", size=len(body),
                     path=str(path), flow=FLOW, ts=1700000002.0, protocol="http")
    got = await scan([rec], tmp_path, rules=["t.yar"])
    assert [(v.subject_kind, v.subject_id, v.ts, v.signature,
             v.evidence["strings"][0]["matches"][0]["offset"], v.evidence["sha256"])
            for v in got] == [("file", "F1", 1700000002.0, "Needle", 100, "ab" * 32),
                              ("file", "F1", 1700000002.0, "Plain", 206, "ab" * 32)]
    assert all("bytes_not_scanned" not in v.evidence for v in got)
    # only the first max_bytes are scanned; the verdict says how many were not
    (v,) = await scan([rec], tmp_path, rules=["t.yar"], max_bytes=150)
    assert (v.signature, v.evidence["bytes_not_scanned"]) == ("Needle", len(body) - 150)
    (v,) = await scan([stream(body)], tmp_path, rules=["t.yar"], max_bytes=150)
    assert (v.signature, v.evidence["bytes_not_scanned"]) == ("Needle", len(body) - 150)
    os.unlink(path)
    with pytest.raises(Exception, match=f"^cannot read {path}: No such file or directory$"):
        await scan([rec], tmp_path, rules=["t.yar"])


async def test_large_records_are_scanned_in_a_thread_with_the_same_result(
        tmp_path: Path) -> None:
    write(tmp_path / "t.yar", RULES)
    big = b"\x01" * (1 << 20) + b"needle"
    (v,) = await scan([stream(big)], tmp_path, rules=["t.yar"])
    assert v.evidence["strings"][0]["matches"] == [
        {"offset": 1 << 20, "length": 6, "data_hex": b"needle".hex()}]


# ---- the shipped workflow on a real capture -------------------------------------------
async def test_shipped_yara_streams_workflow_on_a_generated_capture(synth_pcap: Path) -> None:
    host = build_host(env={"PCAPWIRE_LOAD_PLUGINS": "yara"})
    wf = load_workflow(SHIPPED, host)
    assert (wf.name, [(s.id, s.uses, s.kind, s.concurrency, s.timeout) for s in wf.steps]) \
        == ("yara-streams", [("yara", "yara", "stream", 2, 60.0)])
    assert wf.triggered_by("any-case", "any-event")
    # what the engine must find, computed without it
    expected = [r for r in streams_from_file(synth_pcap) if EICAR in r.data]
    assert [(r.id, r.data.count(EICAR)) for r in expected] == [
        ("Cd35cfaa8ccbc3695-orig", 1), ("Cd35cfaa8ccbc3695-resp", 369)]
    got: list[Verdict] = []
    summary = await Engine(host).run(wf, file_chunks(synth_pcap), case="IR-2",
                                     on_verdict=got.append)
    assert summary.status == "ok" and summary.chunks == 12
    (st,) = summary.steps
    assert (st.status, st.records_in, st.records_skipped, st.outputs) == (
        "ok", 304, 0, {"verdict": 2})
    flow = FlowKey(6, "10.211.93.16", 38048, "192.0.2.162", 80)
    assert sorted((v.subject_id, v.signature_id, v.severity, v.score, v.category, v.tags,
                   v.flow, v.ts) for v in got) == [
        ("Cd35cfaa8ccbc3695-orig", "pcapwire-demo.yar:EICAR_Test_File", "medium", 60,
         "test-file", ["test", "antivirus"], flow, expected[0].start_ts),
        ("Cd35cfaa8ccbc3695-resp", "pcapwire-demo.yar:EICAR_Test_File", "medium", 60,
         "test-file", ["test", "antivirus"], flow, expected[1].start_ts)]
    counts = {v.subject_id: v.evidence["strings"][0]["count"] for v in got}
    assert counts == {"Cd35cfaa8ccbc3695-orig": 1, "Cd35cfaa8ccbc3695-resp": 369}
    first = {v.subject_id: v.evidence["strings"][0]["matches"][0]["offset"] for v in got}
    assert first == {r.id: r.data.index(EICAR) for r in expected}
