"""What ``pcapwire run`` and ``pcapwire workflow test`` share: build the host, load the
workflow, pick the chunk source, run it (:func:`pcapwire.workflow.oneshot.run_workflows`:
steps query the data directory's store, the host's analyzers are closed at the end)."""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from pcapwire.errors import ConfigError
from pcapwire.records import PcapChunk, Verdict
from pcapwire.workflow.results import RunSummary

#: ``args.chunk_source`` may be set to one of these (tests, embedding): it returns the
#: chunk iterator and the query id for a parsed command line
ChunkSource = Callable[[argparse.Namespace], tuple[AsyncIterator[PcapChunk], str]]


def default_chunk_source(args: argparse.Namespace) -> tuple[AsyncIterator[PcapChunk], str]:
    """``--pcap FILE`` when given, else a query of the store with the filter options."""
    query_id = uuid.uuid4().hex
    if getattr(args, "pcap", None):
        from pcapwire.workflow.sources import file_chunks

        if not Path(args.pcap).is_file():
            raise ConfigError(f"--pcap {args.pcap}: no such file")
        return file_chunks(args.pcap, query_id=query_id), query_id
    from pcapwire.cli.filters import spec_from_args
    from pcapwire.store import Store

    spec = spec_from_args(args)
    store = Store.existing(args.data_dir)
    return store.query_engine().run(spec, query_id=query_id), query_id


def load(args: argparse.Namespace, path: str, overrides: list[str]) -> tuple[Any, Any]:
    from pcapwire.hooks.host import build_host
    from pcapwire.workflow.document import load_workflow, parse_overrides

    host = build_host()
    for f in host.failures:
        print(f"pcapwire: warning: plugin {f.name}: {f.error}", file=sys.stderr)
    wf = load_workflow(path, host, overrides=parse_overrides(overrides))
    for w in wf.warnings:
        print(str(w), file=sys.stderr)
    return host, wf


def execute(args: argparse.Namespace, host: Any, wf: Any,
            on_verdict: Callable[[Verdict], None] | None, store: bool = True,
            run_id: str | None = None) -> tuple[RunSummary, list[Verdict]]:
    from pcapwire.workflow.oneshot import run_workflows

    source: ChunkSource = getattr(args, "chunk_source", None) or default_chunk_source
    ((summary, verdicts),) = run_workflows(
        host, [wf], lambda: source(args), data_dir=args.data_dir,
        case=getattr(args, "case", "") or "", event=getattr(args, "event", "") or "",
        store=store, run_ids=[run_id or uuid.uuid4().hex], on_verdict=on_verdict)
    return summary, verdicts


def print_summary(summary: RunSummary, file: Any = None) -> None:
    file = sys.stderr if file is None else file
    print(f"run {summary.run_id} ({summary.workflow}, case {summary.case}): "
          f"{summary.status}; {summary.chunks} chunk(s), {summary.verdicts} verdict(s)"
          + (f", highest {summary.max_severity}" if summary.max_severity else ""), file=file)
    for s in summary.steps:
        line = (f"  step {s.step} ({s.analyzer}): {s.status}, {s.records_in} in, "
                f"{s.records_skipped} skipped, outputs {s.outputs or {}}, {s.seconds:.3f} s")
        if s.reason:
            line += f" - {s.reason}"
        print(line, file=file)
        for e in s.errors[:5]:
            print(f"    {e.kind}: {e.message}" + (f" [{e.subject}]" if e.subject else ""),
                  file=file)
        for note in s.notes:
            print(f"    note: {note}", file=file)
    if summary.error:
        print(f"  input: {summary.error}", file=file)


def exit_code(summary: RunSummary) -> int:
    """0 every step ran; 2 the input could not be read (nothing was analysed); else 1."""
    return {"ok": 0, "failed": 2}.get(summary.status, 1)
