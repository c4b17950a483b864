"""Which link types a query result has, decided before its first byte is written.

The rule: a result whose packets share one link type is a plain classic pcap, exactly
what ``tcpdump -r <segments> -w - '<bpf>'`` writes (tcpdump, Suricata, Zeek and every
libpcap program read it); pcapng only when the packets really mix link types, and then
with only the interfaces its packets use (see :mod:`.output`).

The file header leaves before the packets, and the first chunk must leave before the
scan has finished, so the format cannot wait for the end. What is known up front is the
link type of every planned segment:

- Segments of one link type (every query over a store of one link type, and most
  indexed queries: their candidate segments hold the flows asked for): the result has
  that link type. Nothing more to do.
- Segments of several link types: the plan's groups (one per link type) are *probed*
  before the scan: a probe reads its group's candidates (the same BPF, time window and
  offsets as the scan) and stops at its first match. Groups are probed smallest first,
  and the largest is probed only when exactly one other group matched:

  * a group without a match was read to its end: its result is empty, so it leaves the
    plan (and the scan never reads it again: no work is lost);
  * once two groups matched, the result mixes link types: pcapng, whose interfaces are
    declared as their first packets come (the groups not probed may add theirs);
  * when all groups but one are empty, that one's link type is the result's: classic
    pcap, although the segments mixed.

The query engine settles a plan in ``iter_chunks``, before its first chunk; whoever writes
one capture (``QueryEngine.write`` for the CLI, the API's result spool) writes the header
with the first chunk, or alone at the end of an empty result.

Costs: nothing for a plan of one link type. For a mixed plan whose result has one link
type, the other groups are read first (work the scan does anyway, then never again), so
the first chunk leaves after them; the matching group is re-read up to its first match
only when it is not the largest. A mixed result re-reads at most two groups up to their
first matches. Dropping the empty groups also spares the scan the per-record merge of
segments that overlap in time. ``benchmarks/bench_linktypes.py`` (256 MiB Ethernet + 64
MiB raw IP, filters the index cannot narrow; settled vs as planned): Ethernet-only result
0.07 s vs 0.40 s, raw-only 0.07 s vs 0.11 s (first chunk 58 vs 47 ms), mixed 0.08 s vs
0.10 s.

Designs not taken: deciding from the planned segments alone writes pcapng for a
single-link-type result whenever a filter the index cannot narrow runs over a mixed store;
writing classic pcap for the first packet's link type has no way out when a second one
follows; holding the output until mixing is ruled out buffers an unbounded result; reading
every group to its end first doubles the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pcapwire.query.engine import Plan, SegmentPlan

#: reads a group's segments; True as soon as one record matches, False when none does
Probe = Callable[[list["SegmentPlan"]], bool]


def planned_bytes(p: SegmentPlan) -> float:
    """What reading ``p`` costs, in segment bytes (its share of them for an offset list)."""
    seg = p.segment
    if p.offsets is None:
        return float(seg.size)
    return len(p.offsets) / 4 * seg.size / max(seg.packets, 1)


def settle(plan: Plan, probe: Probe) -> None:
    """Narrow ``plan`` (in place) to the link types its result can have: ``plan.segments``
    and ``plan.snaplens`` lose the groups a probe found empty. Afterwards
    ``len(plan.snaplens) == 1`` means a classic pcap. A probe stopped early (the query was
    cancelled) counts as empty: a cancelled query writes nothing more anyway."""
    groups: dict[int, list[SegmentPlan]] = {}
    for p in plan.segments:
        groups.setdefault(p.segment.linktype, []).append(p)
    plan.settled = True
    if len(groups) < 2:
        return
    order = sorted(groups, key=lambda lt: (sum(planned_bytes(p) for p in groups[lt]), lt))
    matched: list[int] = []
    empty: set[int] = set()
    for lt in order[:-1]:
        if probe(groups[lt]):
            matched.append(lt)
            if len(matched) == 2:
                break
        else:
            empty.add(lt)
    else:
        if matched and not probe(groups[order[-1]]):
            empty.add(order[-1])
    plan.segments = [p for p in plan.segments if p.segment.linktype not in empty]
    plan.snaplens = {lt: s for lt, s in plan.snaplens.items() if lt not in empty}
