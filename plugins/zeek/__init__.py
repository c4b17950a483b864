"""Zeek analyzer plugin: a ``zeek`` binary (from the step's config or PATH) reading the
run's chunks as one pcap on stdin; its logs stay with the case in Zeek's own layout.

- :mod:`.runner` -- the subprocess (stdin feed, timeouts, always reaped);
- :mod:`.logs` -- Zeek ASCII/JSON logs as records (``ZeekLogs(dir)["conn"]``, ZAT-style
  ``ZeekLogReader(path).readrows()``);
- :mod:`.verdicts` -- notice/intel/weird -> verdicts, conn/http/dns/ssl/files/smtp -> case
  metadata linked by 5-tuple;
- :mod:`.run` -- one workflow run; :mod:`.analyzer` -- the analyzer registered below.

Zeek is not packaged for Debian: without a binary the step's result is one clear error
(:data:`.config.NOT_FOUND`).
"""

from pcapwire.hooks import RegisterAnalyzer, impl
from pcapwire.plugins.zeek.analyzer import ZeekAnalyzer
from pcapwire.plugins.zeek.logs import ZeekLogReader, ZeekLogs


@impl
def pcapwire_register_analyzers(register: RegisterAnalyzer) -> None:
    register(ZeekAnalyzer)


__all__ = ["ZeekAnalyzer", "ZeekLogReader", "ZeekLogs", "pcapwire_register_analyzers"]
