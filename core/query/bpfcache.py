"""Compiled BPF filters, cached: libpcap's compiler is slow on long expressions (seconds
for a few hundred ``port`` terms), and one query compiles the same expression for every
(link type, snaplen) of its segments, at planning and again when it scans.

:func:`compiled` returns a filter (or raises :class:`QueryError` with libpcap's message,
also cached). The native compile releases the GIL, so :func:`precompile` in a worker
thread keeps an event loop free while libpcap works (the API does this before planning,
unless :func:`is_compiled` says there is nothing to compile).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from pcapwire import _native
from pcapwire.errors import QueryError

#: Compiled filters (and syntax errors) kept, least recently used dropped first.
MAX_CACHED_FILTERS = 64

_Key = tuple[str, int, int]
_cache: OrderedDict[_Key, Any] = OrderedDict()
_lock = threading.Lock()


def compiled(expr: str, linktype: int, snaplen: int) -> Any:
    """The filter of ``expr`` for this link type and snaplen (``_native.Filter``)."""
    key = (expr, linktype, snaplen)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    if hit is None:
        try:
            hit = _native.Filter(expr, linktype, snaplen)
        except ValueError as exc:
            hit = QueryError(f"invalid BPF expression {expr!r}: {exc}")
        with _lock:
            _cache[key] = hit
            while len(_cache) > MAX_CACHED_FILTERS:
                _cache.popitem(last=False)
    if isinstance(hit, QueryError):
        raise hit
    return hit


def is_compiled(expr: str, keys: Iterable[tuple[int, int]]) -> bool:
    """Whether the cache holds ``expr`` (its filter, or its error) for every (link type,
    snaplen) of ``keys``: then :func:`precompile` has nothing to do."""
    with _lock:
        return all((expr, linktype, snaplen) in _cache for linktype, snaplen in keys)


def precompile(expr: str, keys: Iterable[tuple[int, int]]) -> None:
    """Compile ``expr`` for each (link type, snaplen) into the cache; errors are kept for
    the planner to raise."""
    for linktype, snaplen in keys:
        try:
            compiled(expr, linktype, snaplen)
        except QueryError:
            return
