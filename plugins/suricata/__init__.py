"""Suricata analyzer plugin: the real Suricata on a run's PCAP chunks, kept warm.

- :mod:`.engine` -- one ``suricata -r FIFO`` process: rules loaded before the first chunk,
  chunks streamed in as one capture (one flow table across chunk boundaries), EVE streamed
  out over a unix socket;
- :mod:`.pool` -- spare engines with rules already loaded, so a run starts warm;
- :mod:`.run` -- one workflow run (one engine per link type), EVE -> verdicts as they come;
- :mod:`.eve` -- EVE -> verdicts (alerts) and case metadata, severity table;
- :mod:`.config` / :mod:`.ruleload` -- settings, generated suricata.yaml, rule errors by
  file and line; :mod:`.update` -- ``pcapwire rules update|check``;
- :mod:`.analyzer` -- the analyzer registered below (input kind ``pcap``).
"""

from pcapwire.hooks import impl
from pcapwire.plugins.suricata.analyzer import SuricataAnalyzer


@impl
def pcapwire_register_analyzers(register) -> None:  # type: ignore[no-untyped-def]
    register(SuricataAnalyzer)


__all__ = ["SuricataAnalyzer", "pcapwire_register_analyzers"]
