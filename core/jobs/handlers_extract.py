"""Job kind ``extract``: carve the files and emails of a capture into a carve directory
(:mod:`pcapwire.extract.layout`), as ``pcapwire extract --pcap FILE --out DIR`` does.

Parameters: ``pcap`` (the capture, inside the tenant's directory), ``out`` (the carve
directory, inside it too; created), optional ``protocols`` (a list, a subset of
:data:`pcapwire.extract.PROTOCOLS`). Output: the carve's summary
(:func:`pcapwire.extract.layout.write_carve`) and ``partial`` (an incomplete file or email,
a limit reached, or damaged input: all listed in the summary). A file that is no capture
fails with ``input_error``.
"""

from __future__ import annotations

from typing import Any

from pcapwire.jobs.handlers import JobContext, param
from pcapwire.jobs.model import JobError


def run(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    from pcapwire.extract import PROTOCOLS
    from pcapwire.extract.layout import artifact_store, write_carve
    from pcapwire.extract.source import carve_pcap

    pcap = ctx.path(params, "pcap")
    out = ctx.path(params, "out", must_exist=False)
    protocols = tuple(param(params, "protocols", list, list(PROTOCOLS)))
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise JobError("invalid_params", f"parameter 'protocols': unknown "
                       f"{', '.join(map(str, unknown)) or '(empty)'}; choose from "
                       f"{', '.join(PROTOCOLS)}")
    result, damage = carve_pcap(pcap, artifact_store(out), protocols=protocols)
    summary = write_carve(out, result, damage)
    incomplete = any(f.incomplete for f in result.files) or any(
        e.incomplete for e in result.emails)
    limits = any("MAX_" in n for n in result.notes)
    return {"summary": summary, "partial": bool(incomplete or limits or damage)}
