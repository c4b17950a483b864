"""Golden workflow tests (``tests/golden/<case>/{input.pcap, workflow.yaml, expect.yaml,
make_input.py}``), each run through ``pcapwire workflow test`` as a detection engineer's
CI would (see tests/golden/README.md), plus what a case's optional files ask for:

- ``hashlists.yaml``: lists imported into the run's data directory first;
- ``expect-files.yaml``: the files and emails carving must give -- the workflow's carve
  step (its artifact store) and ``pcapwire extract --pcap`` alike;
- ``make_input.py``: regenerates ``input.pcap`` byte for byte;
- a ``suricata`` step: its alerts per sid in ``expect.yaml`` are what a plain
  ``suricata -r input.pcap -S RULES -k none`` writes to eve.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from pcapwire.cli import main
from suricatautil import by_hand, sid_counts

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "workflow.yaml").is_file())
FLOW_KEYS = ("proto", "src_ip", "src_port", "dest_ip", "dest_port")


def _cases_with(name: str) -> list[str]:
    return [c for c in CASES if (GOLDEN / c / name).is_file()]


def _suricata_steps(case: str) -> list[dict[str, Any]]:
    wf = yaml.safe_load((GOLDEN / case / "workflow.yaml").read_text())
    return [s for s in wf.get("steps", []) if s.get("uses") == "suricata"]


def _import_hashlists(case_dir: Path, data: Path) -> None:
    spec = case_dir / "hashlists.yaml"
    if not spec.is_file():
        return
    for entry in yaml.safe_load(spec.read_text()):
        assert main(["--data-dir", str(data), "hashlist", "import",
                     str(case_dir / entry["file"]), "--name", entry["name"],
                     "--kind", entry["kind"]]) == 0, entry


def compare_records(kind: str, expected: list[dict[str, Any]], got: list[dict[str, Any]]
                    ) -> list[str]:
    """expect.yaml's rules for files and emails: every key given must match, ``count``
    (default 1) records must match each entry, and no record may be left unmatched."""
    out, claimed = [], set()
    for i, want in enumerate(expected):
        keys = {k: v for k, v in want.items() if k != "count"}
        hits = [j for j, rec in enumerate(got) if all(rec.get(k) == v for k, v in keys.items())]
        claimed.update(hits)
        if len(hits) != want.get("count", 1):
            out.append(f"{kind}[{i}] {keys}: expected {want.get('count', 1)}, got {len(hits)}")
    out += [f"unexpected {kind[:-1]}: {rec}" for j, rec in enumerate(got) if j not in claimed]
    return out


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    flow = record.get("flow") or {}
    return {**record, **{k: flow.get(k) for k in FLOW_KEYS}}


def stored_records(artifacts: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(files, emails) of a carve step's artifact store: one record per sighting, the
    bytes' metadata (``<sha256>.json``) with the sighting's name, protocol and flow."""
    files, emails = [], []
    for meta in sorted(artifacts.glob("*/*.json")):
        info = json.loads(meta.read_text())
        blob = meta.with_suffix("")
        sightings = blob.with_name(blob.name + ".sightings.jsonl").read_text().splitlines()
        for line in sightings:
            rec = _flat({**info, **json.loads(line)})
            (emails if blob.suffix == ".eml" else files).append(rec)
    return files, emails


def test_there_are_golden_cases() -> None:
    assert {"yara-eicar-http", "suricata-alert-counts", "carve-http-smtp-ftp",
            "hashlist-triage"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_golden_case(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d, data = GOLDEN / case, tmp_path / "data"
    _import_hashlists(d, data)
    capsys.readouterr()
    rc = main(["--data-dir", str(data), "workflow", "test", str(d / "workflow.yaml"),
               "--pcap", str(d / "input.pcap"), "--expect", str(d / "expect.yaml")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith(f"PASS {d / 'workflow.yaml'} on {d / 'input.pcap'}: ")
    if (d / "expect-files.yaml").is_file():
        want = yaml.safe_load((d / "expect-files.yaml").read_text())
        files, emails = stored_records(data / "artifacts")
        diffs = (compare_records("files", want.get("files", []), files)
                 + compare_records("emails", want.get("emails", []), emails))
        assert diffs == [], "\n".join(diffs)


@pytest.mark.parametrize("case", _cases_with("expect-files.yaml"))
def test_pcapwire_extract_finds_the_same_files(case: str, tmp_path: Path) -> None:
    d = GOLDEN / case
    assert main(["extract", "--pcap", str(d / "input.pcap"), "--out", str(tmp_path)]) == 0
    want = yaml.safe_load((d / "expect-files.yaml").read_text())
    files = [_flat(json.loads(line)) for line in (tmp_path / "files.jsonl").open()]
    emails = [_flat(json.loads(line)) for line in (tmp_path / "emails.jsonl").open()]
    diffs = (compare_records("files", want.get("files", []), files)
             + compare_records("emails", want.get("emails", []), emails))
    assert diffs == [], "\n".join(diffs)


@pytest.mark.parametrize("case", _cases_with("make_input.py"))
def test_make_input_regenerates_the_capture_byte_for_byte(case: str, tmp_path: Path) -> None:
    d = GOLDEN / case
    out = tmp_path / "input.pcap"
    subprocess.run([sys.executable, str(d / "make_input.py"), str(out)], check=True,
                   cwd=tmp_path, timeout=60)
    assert out.read_bytes() == (d / "input.pcap").read_bytes()


@pytest.mark.parametrize("case", [c for c in CASES if _suricata_steps(c)])
def test_alert_counts_agree_with_a_plain_suricata_run(case: str, tmp_path: Path) -> None:
    """``count`` per sid in expect.yaml (summed over its entries, which must not overlap)
    is the number of alerts of that sid in eve.json of ``suricata -r input.pcap -S RULES
    -k none``, the rules and arguments being the workflow's."""
    d = GOLDEN / case
    (step,) = _suricata_steps(case)
    rules = [d / r for r in step["with"]["rules"]]
    assert len(rules) == 1, "a plain run takes one -S file"
    assert step["with"].get("args") == ["-k", "none"]
    plain = sid_counts(by_hand(d / "input.pcap", rules[0], ["-k", "none"], tmp_path / "eve"))
    expected: Counter[int] = Counter()
    for entry in yaml.safe_load((d / "expect.yaml").read_text())["verdicts"]:
        if entry.get("analyzer") == "suricata" and "signature_id" in entry:
            expected[int(entry["signature_id"])] += entry.get("count", 1)
    assert plain == +expected  # (+ drops the sids expected 0 times)
    assert all(plain[sid] == 0 for sid, n in expected.items() if n == 0)
