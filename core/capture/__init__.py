"""Live recording (``pcapwire capture``): interfaces and pcap streams into the store.

The recorder writes the same segments and catalog rows that ``ingest`` writes, so every
query, workflow and API feature works on live traffic unchanged. What it adds:

* **Open segments are queryable.** A segment being written is ``<name>.pcap.live`` under
  ``segments/capture/<source id>-<source>/``; its catalog row is named ``<name>.pcap`` and
  exists from the first commit. At least every ``commit_interval`` (0.5 s) the writer
  makes what it wrote durable and commits the segment's size, packets, time range and the
  flows' offsets so far; readers never read past the committed size
  (:func:`pcapwire.store.segments.open_segment` opens either name). Sealed segments are
  renamed to ``<name>.pcap`` after the commit that seals them.
* **Loss is counted, by cause** (kernel ring, interface, own backlog / disk), per
  interface in ``DATA_DIR/capture/status.json`` and per run, interface and segment in the
  catalog (``capture_loss``, :mod:`.ledger`).
* **Crash safety**: a restart completes the segments a killed recorder left open up to
  their last whole record (:mod:`.recovery`).

Modules: :mod:`.sources` (inputs), :mod:`.backlog` (reader → writer queue),
:mod:`.segment` (a live segment file), :mod:`.writer` (rotation, commits),
:mod:`.committer` (the catalog writer), :mod:`.ledger` (the recorder's tables),
:mod:`.recovery`, :mod:`.status`, :mod:`.recorder`.
"""

from __future__ import annotations

from pcapwire.capture.config import RecorderConfig
from pcapwire.capture.recorder import Recorder

__all__ = ["Recorder", "RecorderConfig"]
