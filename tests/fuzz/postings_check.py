"""The search index's native postings (core/native/postings.c) against their Python
statement, on a document made of arbitrary bytes: used by fuzz_native.py (under ASan, any
input) and by tests/test_search_native.py (fixed-seed inputs).

A document: the input cut at b"|" into up to MAX_VALUES pieces; a piece's first byte picks
an indexed field (or a name that leads nowhere) and the shape of its value (a str of the
rest, decoded as UTF-8 with replacements or as Latin-1; a number; a list of both; an
object in a list), the rest is the value. Each piece's text is also read as a date.
"""

from __future__ import annotations

from typing import Any

from pcapwire.search import index as ix
from pcapwire.search.fields import FIELDS
from pcapwire.search.values import iso_us

#: Pieces of an input made into values (the rest is ignored).
MAX_VALUES = 64
_NAMES = sorted(FIELDS) + ["observer.name", "pcapwire.evidence.x", "url", "unknown"]


def reference_groups(docs: list[dict[str, Any]]
                     ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, str]]]:
    """The Python walk (:func:`pcapwire.search.index.postings`) and round 5's grouping: a
    set of each document's pairs, its number appended under each."""
    terms: dict[str, dict[Any, list[int]]] = {}
    nums: dict[str, dict[Any, list[int]]] = {}
    texts = []
    for doc_id, body in enumerate(docs):
        t, n, text = ix.postings(body)
        for groups, pairs in ((terms, t), (nums, n)):
            for name, v in set(pairs):
                groups.setdefault(name, {}).setdefault(v, []).append(doc_id)
        texts.append(text)
    return terms, nums, texts


def reference_key_order(groups: dict[str, dict[Any, list[int]]],
                        ids: dict[str, tuple[int, int]]) -> list[Any]:
    """The Python statement of the key order (round 5's, before it was native): field id,
    then value; reversed values under the second id."""
    fields: dict[int, dict[Any, list[int]]] = {}
    for name, values in groups.items():
        fid, rid = ids[name]
        for v, docs in values.items():
            fields.setdefault(fid, {})[v] = docs
            if rid:
                fields.setdefault(rid, {})[v[::-1]] = docs
    flat: list[Any] = []
    for fid in sorted(fields):
        for v in sorted(fields[fid]):
            for doc in fields[fid][v]:
                flat += [fid, v, doc]
    return flat


def reference_date_us(value: Any) -> int | None:
    """Round 5's ``_date_us`` (Python only)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value * 1e6)
    try:
        return iso_us(str(value))
    except ValueError:
        return None


def _put(doc: dict[str, Any], name: str, value: Any) -> None:
    *parents, leaf = name.split(".")
    for p in parents:
        nxt = doc.get(p)
        if not isinstance(nxt, dict):
            nxt = doc[p] = {}
        doc = nxt
    doc[leaf] = value


def doc_from_bytes(data: bytes) -> tuple[dict[str, Any], list[str]]:
    """A document of the input's pieces, and each piece's text (see the module)."""
    doc: dict[str, Any] = {}
    texts = []
    for piece in data.split(b"|")[:MAX_VALUES]:
        if not piece:
            continue
        head, rest = piece[0], piece[1:]
        name = _NAMES[head % len(_NAMES)]
        text = rest.decode("latin-1") if head & 0x80 else rest.decode("utf-8", "replace")
        texts.append(text)
        shape = (head >> 4) & 7
        number = int.from_bytes(rest[:9], "little", signed=True)
        value: Any = (text, text, text, number, number / 7, [text, number, None],
                      [{"x": text}], [text, text.upper()])[shape]
        _put(doc, name, value)
    return doc, texts


def check(native: Any, data: bytes) -> None:
    """``native`` (a build of pcapwire._native) gives what the Python statement gives, on
    the document of ``data``; raises AssertionError otherwise."""
    doc, texts = doc_from_bytes(data)
    for text in texts:
        us = native.doc_time_us(text)
        assert us is None or us == reference_date_us(text), text
    try:
        want: Any = reference_groups([doc])
    except (ValueError, OverflowError, TypeError) as exc:
        want = type(exc)
    terms: dict[str, Any] = {}
    nums: dict[str, Any] = {}
    try:
        text = native.index_add(0, doc, ix._ROOT, ix._value, terms, nums, ix.MAX_TERM_CHARS)
        got: Any = (terms, nums, [text])
    except (ValueError, OverflowError, TypeError) as exc:
        got = type(exc)
    assert got == want, (doc, got, want)
    if isinstance(got, tuple):
        ids = {name: (i + 1, -(i + 1) * (i % 2)) for i, name in enumerate(terms)}
        assert native.key_order(terms, ids.__getitem__) == reference_key_order(terms, ids)
