"""A kit for plugin authors' tests (``pcapwire.testing``): captures from a few lines, one
analyzer run through the real engine, verdicts compared like ``pcapwire workflow test``.

::

    from pcapwire.testing import assert_verdicts, capture, run_analyzer, tcp_session

    pcap = capture([tcp_session("10.0.0.1:40001 > 10.0.0.2:21",
                                client=b"USER alice\\r\\nPASS s3cret\\r\\n",
                                server=b"220 ready\\r\\n")])
    result = run_analyzer("cleartext.logins", input=pcap, config={"severity": "high"})
    assert result.step.status == "ok"
    assert_verdicts(result.verdicts, [{"signature_id": "cleartext:user-pass",
                                       "severity": "high", "dest_port": 21, "count": 1}])

* captures: :func:`capture` / :func:`write_capture` of :func:`tcp_session`,
  :func:`udp_exchange`, :func:`http_download` (helpers :func:`http_request`,
  :func:`http_response`, :func:`dns_query`); :class:`Capture` and :class:`TcpConn` for
  packet-by-packet control (:mod:`.craft`);
* runs: :func:`run_analyzer` (``await`` :func:`arun_analyzer` in async tests) -> an
  :class:`AnalyzerRun` with ``verdicts``, ``step`` (the step result), ``outputs`` and the
  run ``summary`` (:mod:`.run`);
* checks: :func:`assert_verdicts`, the comparison of :mod:`pcapwire.workflow.expect` (the
  keys of an expectation file's ``verdicts:`` entries, ``count`` included; by default no
  other verdict may appear).
"""

from __future__ import annotations

from typing import Any

from pcapwire.records import Verdict
from pcapwire.testing.craft import (
    MSS,
    T0,
    Capture,
    TcpConn,
    TcpSession,
    UdpExchange,
    capture,
    dns_query,
    endpoints,
    http_download,
    http_request,
    http_response,
    tcp_session,
    udp_exchange,
    write_capture,
)
from pcapwire.testing.run import STEP, AnalyzerRun, arun_analyzer, run_analyzer


def assert_verdicts(verdicts: list[Verdict], expected: list[dict[str, Any]], *,
                    exhaustive: bool = True) -> None:
    """Raise :class:`AssertionError` listing every difference between ``verdicts`` and
    ``expected`` (entries as in an expectation file: any of analyzer, signature,
    signature_id, severity, score, subject_kind, subject_id, category, step, tags, the
    5-tuple fields proto, src_ip, src_port, dest_ip, dest_port, and ``count``, default
    1). ``exhaustive``: no verdict beyond those listed may appear."""
    from pcapwire.workflow.expect import compare, describe, expectation

    diffs = compare(expectation({"verdicts": expected, "exhaustive": exhaustive},
                                "assert_verdicts"), verdicts)
    if diffs:
        got = "\n".join(f"  {describe(v)}" for v in verdicts) or "  (none)"
        raise AssertionError("verdicts differ:\n" + "\n".join(diffs)
                             + f"\nverdicts of the run:\n{got}")


__all__ = [
    "MSS",
    "STEP",
    "T0",
    "AnalyzerRun",
    "Capture",
    "TcpConn",
    "TcpSession",
    "UdpExchange",
    "arun_analyzer",
    "assert_verdicts",
    "capture",
    "dns_query",
    "endpoints",
    "http_download",
    "http_request",
    "http_response",
    "run_analyzer",
    "tcp_session",
    "udp_exchange",
    "write_capture",
]
