"""PCAP queries: filters (:mod:`.spec`), planning and native scanning (:mod:`.engine`),
the link types of a result (:mod:`.linktypes`), continuous output (:mod:`.output`)."""

from pcapwire.query.engine import Plan, QueryEngine, QueryStats
from pcapwire.query.output import StreamFormatter
from pcapwire.query.spec import QuerySpec, parse_proto, parse_time_ns

__all__ = ["Plan", "QueryEngine", "QuerySpec", "QueryStats", "StreamFormatter", "parse_proto",
           "parse_time_ns"]
