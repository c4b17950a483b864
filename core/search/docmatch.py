"""A term checked against one document's own values (the probe of an AND whose other
terms leave few documents: cheaper than reading every document of a wide CIDR network,
range or wildcard from the index). The same semantics as the index's sets
(:mod:`.sqlplan`): the values :func:`pcapwire.search.index.postings` makes, compared as
the SQL does (GLOB, string and integer ranges)."""

from __future__ import annotations

import json
from collections.abc import Callable
from fnmatch import fnmatchcase

from pcapwire.search.index import postings

Predicate = Callable[[list[str], list[int]], bool]


class ChecksExhausted(Exception):
    """More documents checked than the :attr:`DocMatcher.budget` allowed (the statement
    that called ``pw_match`` fails with it)."""


class DocMatcher:
    """Predicates by number, for the SQL function ``pw_match(body, n)``; with ``budget``
    set, at most that many documents are checked (then :attr:`exhausted` is true and the
    call raises :class:`ChecksExhausted`)."""

    def __init__(self) -> None:
        self.predicates: list[tuple[str, Predicate]] = []
        self.budget: int | None = None
        self.exhausted = False

    def add(self, field: str, predicate: Predicate) -> int:
        self.predicates.append((field, predicate))
        return len(self.predicates) - 1

    def __call__(self, body: str | None, n: int) -> int:
        if self.budget is not None:
            if self.budget <= 0:
                self.exhausted = True
                raise ChecksExhausted("more documents checked than the budget allows")
            self.budget -= 1
        if body is None:
            return 0
        field, predicate = self.predicates[n]
        terms, nums, _text = postings(json.loads(body))
        return int(predicate([v for f, v in terms if f == field],
                             [v for f, v in nums if f == field]))


def equals(value: str) -> Predicate:
    return lambda strings, _nums: value in strings


def glob(pattern: str) -> Predicate:
    return lambda strings, _nums: any(fnmatchcase(s, pattern) for s in strings)


def string_range(lo: str | None, hi: str | None, lo_incl: bool = True,
                 hi_incl: bool = True) -> Predicate:
    def check(strings: list[str], _nums: list[int]) -> bool:
        return any((lo is None or (s >= lo if lo_incl else s > lo))
                   and (hi is None or (s <= hi if hi_incl else s < hi)) for s in strings)
    return check


def number_range(lo: int, hi: int) -> Predicate:
    """``lo <= n < hi``."""
    return lambda _strings, nums: any(lo <= n < hi for n in nums)
