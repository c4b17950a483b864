"""Captures from hosts with checksum offload: their TCP checksums are left for the NIC to
fill in after the capture point, so a capture holds zeros there. Suricata's own default
validates checksums and ignores such packets: no alert, and nothing says why. The plugin
does not validate by default (``-k none``), keeps it configurable
(``checksum_validation: no|yes|auto``) and, when it validates, says in the step result
how many packets Suricata counted with an invalid checksum.

The capture is the corpus' real HTTP exchange (zeek-http-get, a Wget download) with its
TCP checksums zeroed (tests/pcaputil.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import corpus_file
from pcaputil import zero_tcp_checksums
from pcapwire.errors import ConfigError
from pcapwire.hooks.host import build_host
from pcapwire.plugins.suricata.config import STATS_EVE, SuricataSettings, build_config
from pcapwire.records import PcapChunk, Verdict
from pcapwire.workflow.document import load_workflow
from pcapwire.workflow.engine import Engine
from suricatautil import by_hand, our_zombies, sid_counts

# Fires once on zeek-http-get (its GET request).
RULE = ('alert http any any -> any any (msg:"pcapwire GET"; http.method; content:"GET"; '
        'classtype:trojan-activity; sid:1000001; rev:1;)\n')


@pytest.fixture(scope="module")
def offloaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """(the capture with zeroed TCP checksums, how many TCP packets it has)."""
    data, changed = zero_tcp_checksums(corpus_file("zeek-http-get").read_bytes())
    path = tmp_path_factory.mktemp("offload") / "offloaded.pcap"
    path.write_bytes(data)
    return path, changed


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "get.rules"
    path.write_text(RULE)
    return path


async def _run_step(pcap: Path, rules: Path, tmp_path: Path, extra: str = ""
                    ) -> tuple[Any, list[Verdict]]:
    """One ``uses: suricata`` step over the capture in the workflow engine; (its step
    result, the verdicts)."""
    host = build_host()
    wf = load_workflow("t.yaml", host, text=f"""
name: offload
steps:
  - id: ids
    uses: suricata
    with:
      rules: ["{rules}"]
      warm_spares: 0
      keep_dir: "{tmp_path / 'keep'}"
{extra}""")
    data = pcap.read_bytes()

    async def source() -> Any:
        yield PcapChunk("q", 0, 1, 65535, data, 0, 0.0, 0.0)

    seen: list[Verdict] = []
    summary = await Engine(host).run(wf, source(), case="c", query_id="q",
                                     on_verdict=seen.append)
    await host.analyzer("suricata").aclose()
    step, = summary.steps
    assert step.status == "ok", step.to_dict()
    return step, seen


async def test_suricatas_default_misses_the_alert_the_plugins_default_raises(
        offloaded: tuple[Path, int], rules: Path, tmp_path: Path) -> None:
    """By hand with Suricata's default: no alert. The plugin's default (no validation):
    the alert fires, and the step result has no checksum count (nothing was validated)."""
    pcap, _tcp_packets = offloaded
    assert sid_counts(by_hand(pcap, rules, [], tmp_path / "hand")) == {}
    assert sid_counts(by_hand(corpus_file("zeek-http-get"), rules, [],
                              tmp_path / "hand-good")) == {1000001: 1}
    step, seen = await _run_step(pcap, rules, tmp_path)
    assert [v.signature_id for v in seen] == ["1000001"]
    assert step.stats == {} and step.notes == []
    assert our_zombies() == []


@pytest.mark.parametrize("mode", ["yes", "auto"])
async def test_with_validation_the_step_result_counts_invalid_checksums(
        offloaded: tuple[Path, int], rules: Path, tmp_path: Path, mode: str) -> None:
    """Validation on (``yes``: ``-k all``; ``auto``: Suricata's default): Suricata ignores
    the packets, so no alert; the step result says how many it counted (every TCP packet
    of the capture) and why alerts may be missing."""
    pcap, tcp_packets = offloaded
    step, seen = await _run_step(pcap, rules, tmp_path,
                                 f"      checksum_validation: {mode}\n")
    assert seen == []
    assert step.stats == {"invalid_checksums": tcp_packets} and tcp_packets == 14
    note, = step.notes
    assert note.startswith(f"suricata counted 14 of 14 packets with an invalid TCP "
                           f"checksum and ignored them (checksum_validation: {mode})")
    assert step.to_dict()["stats"] == {"invalid_checksums": 14}


async def test_valid_checksums_count_zero_and_leave_no_note(rules: Path,
                                                            tmp_path: Path) -> None:
    step, seen = await _run_step(corpus_file("zeek-http-get"), rules, tmp_path,
                                 "      checksum_validation: yes\n")
    assert [v.signature_id for v in seen] == ["1000001"]
    assert step.stats == {"invalid_checksums": 0} and step.notes == []


def test_checksum_settings(tmp_path: Path) -> None:
    """``-k`` per mode; a ``-k`` in ``args`` wins (workflows that pass ``-k none`` keep
    working); the mode is part of the spare fingerprint; stats are on only when
    validating, and then only the final totals to their own file."""
    def settings(**kw: Any) -> SuricataSettings:
        return SuricataSettings.from_mapping(kw)

    assert settings().checksum_validation == "no"
    assert [settings(checksum_validation=m).checksum_args() for m in ("no", "yes", "auto")
            ] == [["-k", "none"], ["-k", "all"], []]
    for args, mode in ((["-k", "none"], "no"), (["-k", "all"], "yes"), (["-kall"], "yes"),
                       (["-k", "other"], "auto")):
        s = settings(args=args, checksum_validation="yes")
        assert (s.checksum_args(), s.checksum_mode()) == ([], mode), args
    assert settings().fingerprint() != settings(checksum_validation="auto").fingerprint()
    with pytest.raises(ConfigError, match="'checksum_validation' must be one of no, yes, auto"):
        settings(checksum_validation="off")

    def config(s: SuricataSettings) -> dict[str, Any]:
        return yaml.safe_load(build_config(s, tmp_path, tmp_path / "eve.sock", []))

    off = config(settings())
    assert off["stats"] == {"enabled": False} and len(off["outputs"]) == 2
    on = config(settings(checksum_validation="auto"))
    assert on["stats"]["enabled"] is True and on["stats"]["interval"] >= 3600
    stats_out = on["outputs"][-1]["eve-log"]
    assert stats_out["filename"] == str(tmp_path / STATS_EVE)
    assert stats_out["types"] == [{"stats": {"totals": True, "threads": False,
                                             "deltas": False}}]
