"""``pcapwire rules check|update`` with the real Suricata and suricata-update, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import corpus_file
from pcapwire.cli import main
from pcapwire.plugins.suricata.config import SuricataSettings
from pcapwire.plugins.suricata.run import SuricataRun

GOOD = ('alert http any any -> any any (msg:"pcapwire local GET"; flow:established,to_server; '
        'http.method; content:"GET"; sid:9000001; rev:2;)\n')
BAD = GOOD + 'alert http any any -> any any (msg:"broken"; nosuchkeyword; sid:9000002; rev:1;)\n'


def _system_rules() -> list[str]:
    root = Path("/var/lib/suricata/rules")
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_check_reports_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "local.rules"
    bad.write_text(BAD)
    assert main(["--data-dir", str(tmp_path / "d"), "rules", "check", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{bad}:2: unknown rule keyword 'nosuchkeyword'."]
    good = tmp_path / "good.rules"
    good.write_text(GOOD)
    assert main(["--data-dir", str(tmp_path / "d"), "rules", "check", str(good)]) == 0
    assert capsys.readouterr().out == "ok: 1 rules loaded\n"


async def test_update_with_local_sources_offline_feeds_the_plugin(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Local rules + the distribution's rules, no network; the merged set is what the
    suricata step loads, and the local rule fires on a real capture."""
    before = _system_rules()
    local = tmp_path / "local"
    local.mkdir()
    (local / "mine.rules").write_text(GOOD)
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "rules", "update", "--local", str(local)]) == 0
    out = capsys.readouterr().out
    merged = data / "rules" / "suricata.rules"
    assert out.startswith(f"{merged}: ") and out.rstrip().endswith("enabled")
    text = merged.read_text()
    assert "sid:9000001; rev:2;" in text
    assert _system_rules() == before  # nothing written under /var/lib/suricata

    run = SuricataRun(SuricataSettings.from_mapping({"rules": [str(merged)],
                                                     "args": ["-k", "none"]}))
    await run.start()
    await run.feed_bytes(corpus_file("zeek-http-get").read_bytes())
    result = await run.finish()
    assert result.sid_counts().get(9000001) == 1
    assert result.rule_errors == []


def test_update_refuses_broken_local_rules_unless_keep_going(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.rules"
    bad.write_text(BAD)
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "rules", "update", "--local", str(bad),
                 "--no-test"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: unknown rule keyword 'nosuchkeyword'." in err
    assert "1 rule(s) failed to load" in err
    assert not (data / "rules" / "suricata.rules").exists()
    assert main(["--data-dir", str(data), "rules", "update", "--local", str(bad),
                 "--no-test", "--keep-going"]) == 1
    assert (data / "rules" / "suricata.rules").exists()


def test_update_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--data-dir", str(tmp_path), "rules", "update", "--local",
                 str(tmp_path / "missing.rules")]) == 2
    assert "missing.rules' does not exist" in capsys.readouterr().err
    # a remote source that was never downloaded cannot be used offline
    assert main(["--data-dir", str(tmp_path), "rules", "update", "--etopen", "--offline",
                 "--no-test"]) == 2
    err = capsys.readouterr().err
    assert "Can't proceed offline" in err and "suricata-update failed" in err
