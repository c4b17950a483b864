"""Suricata analyzer plugin: the real Suricata on a run's PCAP chunks, kept warm.

- :mod:`.engine` -- one ``suricata -r FIFO`` process: rules loaded before the first chunk,
  chunks streamed in as one capture (one flow table across chunk boundaries), EVE streamed
  out over a unix socket;
- :mod:`.pool` -- spare engines with rules already loaded, so a run starts warm;
- :mod:`.run` -- one workflow run (one engine per link type), EVE -> verdicts as they come;
- :mod:`.eve` -- EVE -> verdicts (alerts) and case metadata, severity table;
- :mod:`.config` / :mod:`.ruleload` -- settings, generated suricata.yaml, rule errors by
  file and line; :mod:`.update` -- rule checks and ``suricata-update``;
- :mod:`.analyzer` -- the analyzer registered below (input kind ``pcap``);
- :mod:`.commands` -- ``pcapwire rules update|check``, the subcommand registered below.
"""

from pcapwire.hooks import RegisterAnalyzer, RegisterCommand, impl
from pcapwire.plugins.suricata import commands
from pcapwire.plugins.suricata.analyzer import SuricataAnalyzer


@impl
def pcapwire_register_analyzers(register: RegisterAnalyzer) -> None:
    register(SuricataAnalyzer)


@impl
def pcapwire_register_commands(register: RegisterCommand) -> None:
    register(commands.NAME, commands.setup, help=commands.HELP)


__all__ = ["SuricataAnalyzer", "pcapwire_register_analyzers", "pcapwire_register_commands"]
