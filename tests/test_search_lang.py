"""The search language (pcapwire.search.lang): the tree of each construct, precedence, and
errors that name the column, show a caret under it and say what was expected; every limit
(MAX_QUERY_CHARS, MAX_TERMS, MAX_DEPTH)."""

from __future__ import annotations

import pytest
from pcapwire.errors import QueryError
from pcapwire.search.lang import (
    MAX_DEPTH,
    MAX_QUERY_CHARS,
    MAX_TERMS,
    And,
    Not,
    Or,
    Range,
    SearchSyntaxError,
    Term,
    parse,
)


def t(field: str | None, mode: str, value: str = "", rng: Range | None = None) -> Term:
    return Term(field, mode, value, rng)  # type: ignore[arg-type]


def shape(node):
    """The tree without positions."""
    if isinstance(node, Term):
        return (node.field, node.mode, node.value, node.range)
    if isinstance(node, Not):
        return ("NOT", shape(node.child))
    return (type(node).__name__, *[shape(c) for c in node.children])


def test_terms_values_and_precedence() -> None:
    assert shape(parse("url.domain:*.example AND http.request.method:POST")) == (
        "And", ("url.domain", "wildcard", "*.example", None),
        ("http.request.method", "exact", "POST", None))
    # AND binds tighter than OR; adjacent terms are ANDed; NOT binds tightest
    assert shape(parse('a OR b c AND NOT d')) == (
        "Or", (None, "exact", "a", None),
        ("And", (None, "exact", "b", None), (None, "exact", "c", None),
         ("NOT", (None, "exact", "d", None))))
    assert shape(parse("(a OR b) AND c")) == (
        "And", ("Or", (None, "exact", "a", None), (None, "exact", "b", None)),
        (None, "exact", "c", None))
    assert shape(parse('email.subject:"invoice due" OR "free text"')) == (
        "Or", ("email.subject", "phrase", "invoice due", None),
        (None, "phrase", "free text", None))
    assert shape(parse("destination.port:[1000 TO 2000}")) == (
        "destination.port", "range", "", Range("1000", "2000", True, False))
    assert shape(parse("@timestamp:[2026-12-01T10:00:00 TO now]")) == (
        "@timestamp", "range", "", Range("2026-12-01T10:00:00", "now"))
    assert shape(parse("destination.port:>=1024")) == (
        "destination.port", "range", "", Range("1024", None, True, True))
    assert shape(parse("destination.port:<80")) == (
        "destination.port", "range", "", Range(None, "80", True, False))
    assert shape(parse("network.bytes:[* TO 10]")) == (
        "network.bytes", "range", "", Range(None, "10"))
    # IPv6 and CIDR values keep their colons; an escaped * is no wildcard
    assert shape(parse("source.ip:2001:db8::/32")) == ("source.ip", "exact", "2001:db8::/32",
                                                       None)
    assert shape(parse(r"file.name:a\*b")) == ("file.name", "exact", "a*b", None)
    assert shape(parse('email.subject: "spaced"')) == ("email.subject", "phrase", "spaced",
                                                       None)
    assert shape(parse(r'"say \"hi\""')) == (None, "phrase", 'say "hi"', None)


@pytest.mark.parametrize(("query", "column", "message"), [
    ("url.domian:example.com", 1, "unknown field 'url.domian'; did you mean url.domain"),
    ("domain:example.com", 1, "did you mean url.domain"),
    ("a AND", 6, "the query ends here: expected a term"),
    ("(a OR b", 8, "expected ')' to close the '(' at column 1"),
    ("a OR b)", 7, "unexpected an unmatched ')'"),
    ('email.subject:"invoice', 15, 'unterminated phrase'),
    ("destination.port:[1 2000]", 21, "expected TO between"),
    ("destination.port:[1 TO 2000", 28, "expected ']' or '}' to close the range opened at "
     "column 18"),
    ("url.domain:", 12, "expected a value after 'url.domain:'"),
    ("url.domain: AND x", 13, "expected a value after 'url.domain:'"),
    ("destination.port:>", 19, "expected a value after '>'"),
    ("OR a", 1, "unexpected keyword OR"),
    ("()", 2, "empty parentheses"),
    ("", 1, "empty query"),
])
def test_errors_name_the_column_and_what_was_expected(query: str, column: int,
                                                      message: str) -> None:
    with pytest.raises(SearchSyntaxError) as err:
        parse(query)
    assert err.value.column == column
    assert message in str(err.value)
    # the query, then a caret under the column
    lines = str(err.value).split("\n")
    assert lines[1] == "  " + query
    assert lines[2] == "  " + " " * (column - 1) + "^"
    assert isinstance(err.value, QueryError)  # the CLI's exit 2, the API's 400


def test_limits() -> None:
    parse("a " * MAX_TERMS)
    with pytest.raises(SearchSyntaxError, match="MAX_TERMS") as err:
        parse("a " * (MAX_TERMS + 1))
    assert err.value.column == 2 * MAX_TERMS + 1  # the first term too many
    parse("(" * (MAX_DEPTH - 1) + "a" + ")" * (MAX_DEPTH - 1))
    parse("NOT " * MAX_DEPTH + "a")
    with pytest.raises(SearchSyntaxError, match="MAX_DEPTH"):
        parse("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(SearchSyntaxError, match="MAX_DEPTH"):
        parse("NOT " * (MAX_DEPTH + 1) + "a")
    parse("a" * MAX_QUERY_CHARS)
    with pytest.raises(SearchSyntaxError, match="MAX_QUERY_CHARS"):
        parse("a" * (MAX_QUERY_CHARS + 1))


def test_nodes_compare_as_data() -> None:
    assert parse("a b") == And((t(None, "exact", "a"), Term(None, "exact", "b", pos=2)))
    assert parse("a OR b") == Or((t(None, "exact", "a"), Term(None, "exact", "b", pos=5)))
