"""The exception tree. Library code raises these; only the CLI maps them to exit codes and
only the API maps them to HTTP statuses."""

from __future__ import annotations


class PcapwireError(Exception):
    """Root of every error pcapwire raises on purpose."""


class ConfigError(PcapwireError):
    """A setting, a file path or a config value is wrong."""


class PluginError(PcapwireError):
    """A plugin failed to load or declared something invalid."""


class CaptureFormatError(PcapwireError):
    """Input that is not valid pcap/pcapng; says which file and which byte offset."""

    def __init__(self, path: str, offset: int | None, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        where = f"{path}" if offset is None else f"{path} at byte {offset}"
        super().__init__(f"{where}: {reason}")


class QueryError(PcapwireError):
    """A query that cannot run: bad filter, bad time, unknown flow."""


class WorkflowError(PcapwireError):
    """A workflow document is invalid or a run cannot start."""


class AnalyzerError(PcapwireError):
    """An analyzer failed; the engine turns it into an error record for its step."""
