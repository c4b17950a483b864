"""Golden workflow tests (``tests/golden/<case>/{input.pcap, workflow.yaml,
expect.yaml}``), each run through ``pcapwire workflow test`` as a detection engineer's
CI would (see tests/golden/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pcapwire.cli import main

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "workflow.yaml").is_file())


def test_there_are_golden_cases() -> None:
    assert "yara-eicar-http" in CASES


@pytest.mark.parametrize("case", CASES)
def test_golden_case(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    d = GOLDEN / case
    rc = main(["workflow", "test", str(d / "workflow.yaml"), "--pcap", str(d / "input.pcap"),
               "--expect", str(d / "expect.yaml")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith(f"PASS {d / 'workflow.yaml'} on {d / 'input.pcap'}: ")
