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
