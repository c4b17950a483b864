"""A run's indexing in two stages, two processes (:mod:`pcapwire.search.worker` starts
them): the builder reads the run's outputs and prepares its documents, the writer does
the SQLite side only. Each gets its own share of the cores: one process made the
documents (~50 µs a record in Python) and wrote them (~50 µs in SQLite) in turn, and got
0.6-0.75 of a core beside Suricata (benchmarks/bench_search_pace.py).

- The builder (:func:`build_run`) takes :data:`BATCH` documents of
  :func:`pcapwire.search.sources.run_docs` at a time and prepares them
  (:func:`pcapwire.search.index.prepare`, as one process's ``put_many`` does): a key met
  twice keeps the last document at the first's place; each gets ``event.id``, its
  ``docs`` row (key, case, ts, JSON text) and FTS text, and its postings are grouped by
  field name and value under its place in the batch (``index_add``, the native walk).
- The batch goes to the writer as a file of the spool directory (:mod:`marshal`: ~2 KB a
  document, 2-3x cheaper than pickling the documents) named in a message of a few bytes
  (a pipe write under ``PIPE_BUF``: whole or not at all, also when the builder is killed).
  :data:`QUEUE_BATCHES` batches at most are in the spool at once (a semaphore: the builder
  waits for the writer, memory stays bounded).
- The writer (:func:`write_run`) writes each batch with ``_Writer.put_prepared`` of
  :mod:`pcapwire.search.index`, in one transaction with the run's batches that are
  waiting once it is written (up to :data:`MERGE_BATCHES`: fewer pages are written a
  document), one after the other, the same statements as in transactions of their own:
  the documents with the same keys go first, then the new ones take the ids after the
  highest, in the batch's order, and the postings are put in the B-trees' order (field
  ids are the writer's: given in the order the batch meets the names, as before). The
  tables are row for row what one process writes in batches of :data:`BATCH`. Against
  one process's batches of :data:`pcapwire.search.indexer.BATCH`, the content is the same
  (documents, their FTS rows and postings; field names) and so are the ids of new
  documents (a run's keys are unique); a field first met in a later batch may get another
  id, and a run that replaces its own documents (indexed again) may get higher ids, in
  the same order (a batch deletes its own keys only, before it takes the highest id).

Both stages take the runs in the order the worker handed them out, so documents keep
their run order. A stage that waits on the other looks every :data:`POLL_S` whether the
worker gave the pair up (:class:`Abandoned`: the other stage died); the worker then
hands the run whole to a new pair, and a run indexed in part is indexed whole again
(documents replace those with the same key).
"""

from __future__ import annotations

import logging
import marshal
import os
from dataclasses import dataclass
from itertools import islice
from logging.handlers import QueueHandler
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event, Semaphore
from pathlib import Path
from typing import Any

from pcapwire.search import sources
from pcapwire.search.index import Prepared, SearchIndex, prepare
from pcapwire.search.indexer import collector_paused

#: Documents a batch between the stages, a quarter of one process's
#: :data:`pcapwire.search.indexer.BATCH`: the writer starts on a run after its first
#: 5,000 documents, so a run of 18,000-32,000 records (the Suricata benchmark's) is
#: mostly written while the rest is built, and the run's last write, which nothing
#: overlaps, is short. Batches that wait share a transaction (:data:`MERGE_BATCHES`), so
#: a writer that lags commits less often. In bench_search_pace.py, 4 alternating pairs of
#: 3 rounds (7 Dec 18:03-18:17, 16 KiB pages), 5,000 against 10,000: the index took a
#: median 100.5 % of the records produced against 97.6 % and kept pace in 13 of 24
#: sequences against 8. With 4 KiB pages (a commit then cost twice as much) 10,000 had
#: done better: 5,000 did as well on typical runs but less on alert-heavy ones (93 %),
#: 2,500 less (82 %).
BATCH = 5_000
#: Prepared batches in the spool at once, between the builder and the writer (each
#: ~2 KB a document on disk and ~5 KB in the writer's memory: ~10 and ~25 MB for a
#: batch of :data:`BATCH`).
QUEUE_BATCHES = 2
#: Batches the writer puts in one transaction at most: a batch, then those of the run that
#: are waiting once it is written (none is waited for). A transaction writes each page it
#: touches once: the pace benchmark's two runs written six times over (the index growing
#: to 310,000 documents, in batches of 10,000 and 4 KiB pages), 1.96 pages went to the WAL
#: (and were checkpointed) a document with one batch a transaction, 1.48 with two, 1.25
#: with three (the same flows' postings land on the same pages), and the writer's CPU went
#: from ~75 to ~67 µs a record. With batches of 5,000 and 16 KiB pages, 6 against 3 (4
#: alternating pairs of 3 rounds, 7 Dec 19:13-19:26): the index took a median 103.9 % of
#: the records produced against 99.7 % and kept pace in 16 of 24 sequences against 11
#: (6 did at least as well in every pair). One batch is held at a time (each is dropped
#: once written); the transaction holds the write lock up to ~3 s, as one process's batch
#: of :data:`pcapwire.search.indexer.BATCH` does.
MERGE_BATCHES = 6
#: Seconds a stage waits on the other before it looks whether the pair was given up.
POLL_S = 0.5

class Abandoned(Exception):
    """The worker gave this pair of stages up (the other stage died)."""


@dataclass
class Channel:
    """One end of the stages' link: the builder's sending end or the writer's receiving
    end of a pipe, the spool's free places, the pair's given-up mark, the spool."""

    conn: Connection
    slots: Semaphore
    abandoned: Event
    spool: Path


_channel: Channel | None = None
_sent = 0


def start_stage(log_queue: Queue[logging.LogRecord], level: int, channel: Channel) -> None:
    """A stage process's initializer: its logging goes to the parent through
    ``log_queue`` (records at ``level``, the parent's, or above); its end of the link."""
    global _channel
    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(log_queue)]
    root.setLevel(level)
    _channel = channel


def _link() -> Channel:
    if _channel is None:
        raise RuntimeError("not a stage process of pcapwire.search.worker")
    return _channel


def _wait(ready: Any) -> None:
    """Wait for ``ready(POLL_S)`` to be true, looking whether the pair was given up."""
    link = _link()
    while not ready(POLL_S):
        if link.abandoned.is_set():
            raise Abandoned("the other indexing stage died")


def _send(message: tuple[str, str, Any]) -> None:
    _link().conn.send(message)


def _send_batch(run_id: str, batch: Prepared) -> None:
    global _sent
    link = _link()
    _wait(lambda timeout: link.slots.acquire(timeout=timeout))
    _sent += 1
    path = link.spool / f"{os.getpid()}-{_sent}.batch"
    path.write_bytes(marshal.dumps(batch))
    _send(("batch", run_id, path.name))


def _receive(run_id: str) -> tuple[str, Any]:
    link = _link()
    _wait(link.conn.poll)
    kind, rid, arg = link.conn.recv()
    if rid != run_id:
        raise Abandoned(f"the builder sent run {rid!r}, the writer expected {run_id!r}")
    return kind, arg


def _take(name: str) -> Prepared:
    """A batch's file, read and removed; its place in the spool is free again."""
    link = _link()
    path = link.spool / name
    try:
        batch: Prepared = marshal.loads(path.read_bytes())
    finally:
        path.unlink(missing_ok=True)
        link.slots.release()
    return batch


def _taken(name: str) -> Prepared:
    """:func:`_take`, unless the pair was given up meanwhile (a new pair writes the run
    again)."""
    batch = _take(name)
    if _link().abandoned.is_set():
        raise Abandoned("the other indexing stage died")
    return batch


def build_run(root: Path, run_id: str, batch_docs: int) -> int:
    """The builder's part of one run: its documents prepared, ``batch_docs`` a batch, and
    sent to the writer; returns the documents sent. A failure is sent on too (the writer
    stops at it) and raised."""
    n = 0
    try:
        with collector_paused():
            docs = sources.run_docs(root, run_id)
            while chunk := list(islice(docs, batch_docs)):
                batch = prepare(chunk)
                del chunk  # the documents go before the next batch is read
                _send_batch(run_id, batch)
                n += len(batch[0])
                del batch
    except Abandoned:
        raise
    except BaseException as exc:
        _send(("failed", run_id, f"{type(exc).__name__}: {exc}"))
        raise
    _send(("end", run_id, n))
    return n


class BuildFailed(Exception):
    """The builder failed on the run the writer was writing (its own call says why)."""


def write_run(root: Path, run_id: str) -> int:
    """The writer's part of one run: each batch the builder sends, in a transaction with
    those of the run that are waiting once it is written (:data:`MERGE_BATCHES` at most),
    until the builder's end of the run; returns the documents written. A failure here (a
    locked or broken index) is raised after the run's batches were taken, so that the next
    run starts at its own first batch."""
    error: Exception | None = None
    index: SearchIndex | None = None
    n = 0
    try:
        index = SearchIndex.of(root)
    except Exception as exc:
        error = exc
    try:
        with collector_paused():
            message: tuple[str, Any] | None = _receive(run_id)
            while message is not None:
                kind, arg = message
                if kind == "end":
                    break
                if kind == "failed":
                    error = error or BuildFailed(arg)
                    break
                batch, message = _taken(arg), None
                if error is not None or index is None:
                    del batch  # taken, not written
                    message = _receive(run_id)
                    continue
                try:
                    with index.write() as w:
                        written = w.put_prepared(batch)
                        del batch
                        for _more in range(MERGE_BATCHES - 1):  # those sent meanwhile
                            if not _link().conn.poll():
                                break
                            message = _receive(run_id)
                            if message[0] != "batch":
                                break
                            batch, message = _taken(message[1]), None
                            written += w.put_prepared(batch)
                            del batch
                    n += written
                except Abandoned:
                    raise
                except Exception as exc:
                    error = exc
                if message is None:
                    message = _receive(run_id)
    finally:
        if index is not None:
            index.close()
    if error is not None:
        raise error
    return n
