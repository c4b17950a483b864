"""``pcapwire workflow validate``, ``pcapwire workflow test`` and ``pcapwire run`` (with
``--set`` and ``--json``), through the CLI entry point, with exact output. Only the YARA
and carve plugins are loaded (``PCAPWIRE_LOAD_PLUGINS``) so that the lists of known
analyzers in the messages do not depend on what else is installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pcapwire.cases import CaseStore
from pcapwire.cli import main
from pcapwire.reassembly import streams_from_file
from pcapwire.synth import generate

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "workflows" / "yara-streams.yaml"
YARA_KEYS = "default_severity, externals, max_bytes, rules, scan_timeout"


@pytest.fixture(autouse=True)
def only_yara_and_carve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCAPWIRE_LOAD_PLUGINS", "yara,carve")


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated traffic with one EICAR session (pcapwire.synth, seed 7; see
    test_yara_plugin.py for the facts computed without the engine)."""
    path = tmp_path_factory.mktemp("cap") / "synth.pcap"
    generate(path, 3_000_000, seed=7)
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


BAD = """\
name: bad wf
"on":
  query: yes
steps:
  - id: scan
    uses: yaraa
    with: {rules: [x]}
  - id: y
    uses: yara
    input: stream
    with:
      rules: [nope/]
      max_bytes: -1
      colour: red
    if: "stream.sizee > 0 and"
    timeout: 5x
    bogus: 1
  - id: z
    uses: yara
    input: file
    if: "file.sizee > 0"
    with: {rules: [rules/]}
"""


def test_validate_reports_every_error_with_file_line_column_and_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    rc, out, _ = cli(capsys, "workflow", "validate", str(f))
    assert rc == 2
    assert out.splitlines() == [
        f"{f}:1:7: name: 'bad wf' does not match '^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$'",
        f"{f}:3:10: on.query: 'yes' is not a trigger: use true, false, or a mapping with "
        "`case` and/or `event` globs",
        f"{f}:6:11: steps[0].uses: unknown analyzer 'yaraa'; available: carve, "
        "carve.streams, yara",
        f"{f}:13:18: steps[1].with.max_bytes: -1 is less than the minimum of 1",
        f"{f}:14:7: steps[1].with.colour: unknown key 'colour'; known keys: {YARA_KEYS}",
        f"{f}:15:30: steps[1].if: unexpected end of expression (at column 21)",
        f"{f}:16:14: steps[1].timeout: '5x' is not a duration (seconds, or 90s, 5m, 1h, "
        "250ms)",
        f"{f}:17:5: steps[1].bogus: unknown key 'bogus'; allowed: concurrency, id, if, "
        "input, timeout, uses, with",
        f"{f}:20:12: steps[2].input: no step of this workflow produces 'file' records; add "
        "a producer step (analyzers that output file: carve, carve.streams)",
        f"{f}:21:10: steps[2].if: file has no field 'sizee'; fields: direction, extra, "
        "filename, flow, id, incomplete, kind, magic, md5, mime_type, missing_ranges, path, "
        "protocol, sha1, sha256, size, ts",
        f"{f}:22:11: steps[2].with: rules: {tmp_path}/rules does not exist",
    ]


def test_validate_several_files_and_the_shipped_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(SHIPPED.read_text().replace("[rules/]", f"[{SHIPPED.parent}/rules/]"))
    bad = tmp_path / "syntax.yaml"
    bad.write_text("name: x\nsteps:\n  - uses: yara\n    with: {rules: [a]\n")
    rc, out, _ = cli(capsys, "workflow", "validate", str(SHIPPED), str(good), str(bad))
    assert rc == 2
    assert out.splitlines() == [
        f"{SHIPPED}: ok (workflow 'yara-streams', 1 step(s))",
        f"{good}: ok (workflow 'yara-streams', 1 step(s))",
        f"{bad}:5:1: YAML syntax: expected ',' or '}}', but got '<stream end>'"]
    rc, out, _ = cli(capsys, "workflow", "validate", str(SHIPPED))
    assert (rc, out) == (0, f"{SHIPPED}: ok (workflow 'yara-streams', 1 step(s))\n")


def test_validate_checks_set_overrides_like_the_file(
        capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "workflow", "validate", str(SHIPPED), "--set",
                     "yara.max_bytes=abc", "--set", "yara.colour=red", "--set", "nostep.x=1")
    assert rc == 2
    assert out.splitlines() == [
        "--set nostep: no step 'nostep'; steps: yara",
        f"--set yara.colour: unknown key 'colour'; known keys: {YARA_KEYS}",
        "--set yara.max_bytes: 'abc' is not of type 'integer'"]
    rc, out, err = cli(capsys, "workflow", "validate", str(SHIPPED), "--set", "yara")
    assert (rc, out, err) == (2, "", "pcapwire: error: --set 'yara': expected "
                                     "STEP.KEY=VALUE\n")


def test_workflow_test_passes_and_fails_with_the_differences(
        tmp_path: Path, capture: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect = tmp_path / "expect.yaml"
    expect.write_text("verdicts:\n  - analyzer: yara\n    signature: EICAR_Test_File\n"
                      "    severity: medium\n    dest_port: 80\n    count: 2\n"
                      "steps:\n  yara: ok\n")
    rc, out, _ = cli(capsys, "workflow", "test", str(SHIPPED), "--pcap", str(capture),
                     "--expect", str(expect))
    assert (rc, out) == (0, f"PASS {SHIPPED} on {capture}: 2 verdict(s) as expected\n")

    expect.write_text("verdicts:\n  - signature: EICAR_Test_File\n    subject_id: "
                      "Cd35cfaa8ccbc3695-orig\n  - signature: Other_Rule\n"
                      "steps:\n  yara: error\n")
    rc, out, _ = cli(capsys, "workflow", "test", str(SHIPPED), "--pcap", str(capture),
                     "--expect", str(expect))
    lines = out.splitlines()
    assert rc == 1
    assert lines[:9] == [
        f"FAIL {SHIPPED} on {capture}:",
        "  verdicts[1] {'signature': 'Other_Rule'}: expected 1, got 0",
        "      signature: expected 'Other_Rule'; 0 of 2 match; the run had "
        "'EICAR_Test_File' ×2",
        "  unexpected verdict: yara medium/60 EICAR_Test_File on stream "
        "Cd35cfaa8ccbc3695-resp (tcp 10.211.93.16:38048 -> 192.0.2.162:80)",
        "  step yara: expected status error, got ok",
        "verdicts of the run:",
        "  yara medium/60 EICAR_Test_File on stream Cd35cfaa8ccbc3695-orig (tcp "
        "10.211.93.16:38048 -> 192.0.2.162:80)",
        "  yara medium/60 EICAR_Test_File on stream Cd35cfaa8ccbc3695-resp (tcp "
        "10.211.93.16:38048 -> 192.0.2.162:80)",
        lines[8]]
    assert lines[8].startswith("run ") and lines[8].endswith(
        " (yara-streams, case workflow-test): ok; 12 chunk(s), 2 verdict(s), highest medium")

    expect.write_text("verdicts:\n  - rule: x\n")
    rc, _, err = cli(capsys, "workflow", "test", str(SHIPPED), "--pcap", str(capture),
                     "--expect", str(expect))
    assert rc == 2 and err.startswith(f"pcapwire: error: {expect}: verdicts[0]: unknown "
                                      "key(s) rule; allowed: analyzer, category, count, ")


def test_run_with_set_overrides_json_output_and_the_case_store(
        tmp_path: Path, capture: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "http.yar"
    rules.write_text('rule Synth_UA : synth { meta: score = 35 strings: $ua = '
                     '"User-Agent: pcapwire-synth" condition: $ua }\n')
    data = tmp_path / "data"
    rc, out, err = cli(capsys, "--data-dir", str(data), "run", str(SHIPPED), "--pcap",
                       str(capture), "--case", "IR-5", "--json", "--set",
                       f"yara.rules=[{rules}]", "--set", "yara.default_severity=high")
    assert rc == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    requests = [r.id for r in streams_from_file(capture) if b"pcapwire-synth" in r.data]
    assert len(docs) == len(requests) == 122  # every request (122 sessions began)
    assert {(d["rule"]["id"], d["rule"]["name"], d["event"]["severity"],
             d["event"]["risk_score"], d["pcapwire"]["severity"], tuple(d["tags"]),
             d["pcapwire"]["subject"]["id"][-5:], d["pcapwire"]["case"])
            for d in docs} == {("http.yar:Synth_UA", "Synth_UA", 1, 35.0, "low", ("synth",),
                                "-orig", "IR-5")}
    assert err.splitlines()[-1].startswith("  step yara (yara): ok, 304 in, 0 skipped, "
                                           "outputs {'verdict': 122}, ")
    store = CaseStore(data / "cases.sqlite")
    try:
        (row,) = store.runs("IR-5")
        assert (row.workflow, row.status, row.summary["verdicts"]) == ("yara-streams", "ok",
                                                                      122)
        assert {d["pcapwire"]["run_id"] for d in docs} == {row.run_id}
        stored = store.verdicts("IR-5")
        assert sorted(v.subject_id for v in stored) == sorted(
            d["pcapwire"]["subject"]["id"] for d in docs) == sorted(requests)
    finally:
        store.close()


def test_run_rejects_invalid_overrides_and_missing_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, "--data-dir", str(tmp_path), "run", str(SHIPPED), "--pcap",
                       str(tmp_path / "x.pcap"), "--set", "yara.max_bytes=0")
    assert (rc, out, err) == (2, "", "pcapwire: error: --set yara.max_bytes: 0 is less than "
                                     "the minimum of 1\n")
    rc, out, err = cli(capsys, "--data-dir", str(tmp_path), "run", str(SHIPPED), "--pcap",
                       str(tmp_path / "x.pcap"))
    assert (rc, out, err) == (2, "", f"pcapwire: error: --pcap {tmp_path}/x.pcap: no such "
                                     "file\n")
