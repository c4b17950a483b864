"""Carving as a workflow producer step: ``uses: carve`` (input ``pcap`` chunks) and
``uses: carve.streams`` (input reassembled ``stream`` records) emit ``file`` and ``email``
records for the steps after them (hash lists, YARA, sandbox). The library underneath is
:mod:`pcapwire.extract`, usable without the workflow engine.
"""

from __future__ import annotations

from pcapwire.hooks import RegisterAnalyzer, impl
from pcapwire.plugins.carve.analyzer import CarveAnalyzer, CarveStreamsAnalyzer

__all__ = ["CarveAnalyzer", "CarveStreamsAnalyzer", "pcapwire_register_analyzers"]


@impl
def pcapwire_register_analyzers(register: RegisterAnalyzer) -> None:
    register(CarveAnalyzer)
    register(CarveStreamsAnalyzer)
