"""TCP/UDP reassembly: packets in, per-connection ordered bytes out (design §5).

Contract
========

Two interfaces over one engine:

**Incremental events** (for carvers: HTTP pipelining, SMTP, FTP)::

    from pcapwire.reassembly import Reassembler, Open, Data, Gap, End, Close

    r = Reassembler()                       # one per input (file, run); limits: Limits()
    for ev in r.feed_file("x.pcap"):        # or: r.feed_chunk(chunk) ... then r.flush()
        ...                                 # or: async for ev in r.feed_chunks(aiter)
                                            # or: r.feed_file_lists(path): the same
                                            #     events, a list per few hundred segments

Events come in **capture order** across all connections and both directions, so the
interleaving of a request and its response is the order in which their bytes became
available. For one connection (``ev.conn``, an int unique within the reassembler; ``ev.key``
the :class:`~pcapwire.records.FlowKey` oriented initiator -> responder):

* one :class:`Open` first (``handshake`` False for a connection seen mid-stream);
* then per direction (``"orig"`` = initiator's bytes, ``"resp"`` = responder's) a sequence
  of :class:`Data` and :class:`Gap` whose offsets are contiguous from 0: each event starts
  exactly where the previous one of that direction ended. ``Data.ts`` is the capture time
  of the segment that carried the bytes;
* one :class:`End` per direction (``length`` = final stream length, gaps included);
* one :class:`Close` last (``reason`` ``fin`` | ``rst`` | ``timeout`` | ``eof`` |
  ``evicted`` | ``reused``; ``stats``: :class:`ConnStats`).

A later connection on the same 5-tuple (port reuse) gets a new ``conn`` id; its
``Close(reason="reused")`` for the old one comes first.

**Records** (for the workflow's ``stream`` kind)::

    from pcapwire.reassembly import streams_from_file, streams_from_chunks, StreamCollector

yield one :class:`~pcapwire.records.StreamRecord` per direction that carried bytes, when
its connection closes: ``data`` is the delivered bytes with gaps *omitted* and listed in
``gaps`` as ``(stream offset, length)``; ``complete`` is True only for a connection seen
from its handshake, ended by FIN or RST, without gaps or truncation. Ids are stable:
``connection_uid(key, first_ts) + "-orig"|"-resp"``.

Policies
========

* **Overlaps and retransmissions: first seen wins** (tshark ``follow,tcp`` and Zeek
  deliver the same bytes; the corpus case ``zeek-tcp-inconsistent-retransmissions`` is
  checked against tshark). Differing copies are counted in
  :attr:`HalfStats.inconsistent` with their first offsets in ``inconsistent_at``; up to
  :data:`RETRANSMIT_CHECK_BYTES` of delivered bytes are kept per direction to compare.
  (Suricata's default policy is ``bsd``, which favours the *original* segment for most
  overlaps as well; we do not emulate per-OS target policies.)
* **Gaps are flagged, never invented**: a hole becomes a :class:`Gap` when the peer has
  acknowledged bytes past it (the capture missed them), when a memory limit forces it
  (:data:`MAX_PENDING_BYTES_PER_DIRECTION`, :data:`MAX_PENDING_SEGMENTS_PER_DIRECTION`,
  :data:`MAX_PENDING_BYTES_TOTAL`; counted as ``forced_gaps``), or when the direction
  ends. Acknowledged but never seen bytes at the end of a direction (or before its FIN)
  are a final gap. A segment cut by the snaplen contributes its captured bytes; the rest
  is a hole like any other.
* **SYN** sets the initial sequence number (data on a SYN, TCP Fast Open, is offset 0).
  **FIN** ends its direction once every byte before it is delivered. **RST** ends both
  directions at once. A SYN with a new ISN on a connection that already carried data, or
  after it closed, starts a new connection; segments without SYN on a 5-tuple closed less
  than :data:`TIME_WAIT` ago are late packets and ignored (counted).
* **Mid-stream flows** (no SYN seen): the first sequence number seen in a direction is
  its offset 0 (bytes that arrive later with lower numbers are counted as
  ``before_start``); the initiator is the sender of a SYN without ACK, the receiver of a
  SYN+ACK, else the sender of the first packet unless its port is below
  :data:`~pcapwire.reassembly.reassembler.SERVICE_PORT_LIMIT` and the other is not.
* **Sequence wraparound** and streams beyond 4 GiB: offsets are unwrapped against the next
  expected byte (64-bit stream offsets).
* **UDP**: each 5-tuple is a flow whose directions are the datagram payloads
  concatenated; it closes after :data:`UDP_IDLE_TIMEOUT` of capture time or at end of
  input. TCP connections idle for :data:`TCP_IDLE_TIMEOUT` close with reason ``timeout``.
* **Not reassembled here**: IP fragments (counted in :class:`DecodeStats.fragments`),
  tunnels (the outermost IP header is the flow, as for the index and BPF).
* Limits: :class:`Limits` bundles every limit above; :data:`MAX_CONNECTIONS` bounds the
  table (least recently active evicted); :data:`MAX_STREAM_BYTES` and
  :data:`MAX_COLLECTED_BYTES_TOTAL` bound StreamRecords.
"""

from pcapwire.reassembly.events import (
    MAX_CONNECTIONS,
    MAX_PENDING_BYTES_PER_DIRECTION,
    MAX_PENDING_BYTES_TOTAL,
    MAX_PENDING_SEGMENTS_PER_DIRECTION,
    RETRANSMIT_CHECK_BYTES,
    TCP_IDLE_TIMEOUT,
    TIME_WAIT,
    UDP_IDLE_TIMEOUT,
    Close,
    ConnStats,
    Data,
    End,
    Event,
    Gap,
    HalfStats,
    Limits,
    Open,
)
from pcapwire.reassembly.packets import DecodeStats, Segment
from pcapwire.reassembly.reassembler import Reassembler, ReassemblerStats
from pcapwire.reassembly.streams import (
    MAX_COLLECTED_BYTES_TOTAL,
    MAX_STREAM_BYTES,
    StreamCollector,
    connection_uid,
    streams_from_chunks,
    streams_from_events,
    streams_from_file,
)

__all__ = [
    "MAX_COLLECTED_BYTES_TOTAL",
    "MAX_CONNECTIONS",
    "MAX_PENDING_BYTES_PER_DIRECTION",
    "MAX_PENDING_BYTES_TOTAL",
    "MAX_PENDING_SEGMENTS_PER_DIRECTION",
    "MAX_STREAM_BYTES",
    "RETRANSMIT_CHECK_BYTES",
    "TCP_IDLE_TIMEOUT",
    "TIME_WAIT",
    "UDP_IDLE_TIMEOUT",
    "Close",
    "ConnStats",
    "Data",
    "DecodeStats",
    "End",
    "Event",
    "Gap",
    "HalfStats",
    "Limits",
    "Open",
    "Reassembler",
    "ReassemblerStats",
    "Segment",
    "StreamCollector",
    "connection_uid",
    "streams_from_chunks",
    "streams_from_events",
    "streams_from_file",
]
