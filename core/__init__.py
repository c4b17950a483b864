"""pcapwire: lossless packet store, millisecond PCAP queries, analyzer workflows."""

from pcapwire.errors import (
    AnalyzerError,
    CaptureFormatError,
    ConfigError,
    PcapwireError,
    PluginError,
    QueryError,
    WorkflowError,
)
from pcapwire.sqlite_tuning import memstatus_off

# before any connection of the process: SQLite's memory statistics off (threads running
# statements would wait on each other for the mutex that counts each allocation)
memstatus_off()

__version__ = "0.1.0"

__all__ = [
    "AnalyzerError",
    "CaptureFormatError",
    "ConfigError",
    "PcapwireError",
    "PluginError",
    "QueryError",
    "WorkflowError",
    "__version__",
]
