"""The search language: a hand-written tokenizer and recursive-descent parser (never
``eval``) from query text to a small tree (:class:`Term`, :class:`And`, :class:`Or`,
:class:`Not`). The grammar, loosest binding first::

    query    := or_expr END
    or_expr  := and_expr ("OR" and_expr)*
    and_expr := unary (["AND"] unary)*          adjacent terms are ANDed
    unary    := "NOT" unary | primary
    primary  := "(" or_expr ")" | FIELD ":" value | WORD | PHRASE
    value    := WORD | PHRASE | range | ("<" | "<=" | ">" | ">=") WORD
    range    := ("[" | "{") WORD "TO" WORD ("]" | "}")   [ ] inclusive, { } exclusive, * open

A WORD value with ``*`` or ``?`` is a wildcard (``\\`` escapes them); a value with ``/``
on an ip field is a CIDR network. Errors (:class:`SearchSyntaxError`) name the column,
show the query with a caret under the offending place and say what was expected; an
unknown field lists near matches. See docs/search.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pcapwire.errors import QueryError
from pcapwire.search.fields import FIELDS, near_matches

#: Longest query text, in characters.
MAX_QUERY_CHARS = 4096
#: Most terms (field:value, words, phrases) in one query.
MAX_TERMS = 64
#: Deepest nesting of parentheses and NOTs.
MAX_DEPTH = 32
KEYWORDS = ("AND", "OR", "NOT", "TO")
_FIELD = re.compile(r"[A-Za-z@_][A-Za-z0-9@_.]*")
_SPECIAL = '()[]{}"'

Kind = Literal["word", "phrase", "(", ")", "[", "]", "{", "}", "end"]


class SearchSyntaxError(QueryError):
    """A query that does not parse: ``column`` (1-based) is where, ``expected`` what."""

    def __init__(self, text: str, pos: int, message: str) -> None:
        self.text, self.pos, self.column = text, pos, pos + 1
        self.reason = message
        line = text.replace("\n", " ").replace("\t", " ")
        super().__init__(f"column {pos + 1}: {message}\n  {line}\n  {' ' * pos}^")


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str
    pos: int
    spaced: bool  # whitespace before it


@dataclass(frozen=True)
class Range:
    lo: str | None  # None: open
    hi: str | None
    lo_incl: bool = True
    hi_incl: bool = True


@dataclass(frozen=True)
class Term:
    """``field:value`` (``field`` None: free text over every text field). ``mode``:
    ``exact`` (a word), ``phrase`` (quoted), ``wildcard`` (``pattern`` with ``*``/``?``),
    ``range``."""

    field: str | None
    mode: Literal["exact", "phrase", "wildcard", "range"]
    value: str = ""
    range: Range | None = None
    pos: int = 0


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


Node = Term | And | Or | Not


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        start = i
        while i < n and text[i].isspace():
            i += 1
        spaced = i > start or not out
        if i >= n:
            break
        c = text[i]
        if c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise SearchSyntaxError(text, i, "unterminated phrase: expected a closing "
                                        '" for this one')
            out.append(Token("phrase", "".join(buf), i, spaced))
            i = j + 1
        elif c in "()[]{}":
            out.append(Token(c, c, i, spaced))  # type: ignore[arg-type]
            i += 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
                j += 2 if text[j] == "\\" and j + 1 < n else 1
            out.append(Token("word", text[i:j], i, spaced))
            i = j
    out.append(Token("end", "", n, True))
    return out


def has_wildcard(value: str) -> bool:
    return bool(re.search(r"(?<!\\)[*?]", value))


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.terms = 0
        self.depth = 0

    # ---- helpers -------------------------------------------------------------------------
    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, tok: Token | int, message: str) -> SearchSyntaxError:
        pos = tok if isinstance(tok, int) else tok.pos
        return SearchSyntaxError(self.text, pos, message)

    def is_kw(self, tok: Token, kw: str) -> bool:
        return tok.kind == "word" and tok.text == kw

    def starts_operand(self, tok: Token) -> bool:
        return (tok.kind in ("word", "phrase", "(") and not self.is_kw(tok, "AND")
                and not self.is_kw(tok, "OR") and not self.is_kw(tok, "TO"))

    def deeper(self, tok: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(tok, f"nesting deeper than {MAX_DEPTH} (MAX_DEPTH) levels of "
                             "parentheses and NOTs")

    def counted(self, term: Term) -> Term:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self.error(term.pos, f"more than {MAX_TERMS} terms (MAX_TERMS); split "
                             "the search")
        return term

    # ---- grammar -------------------------------------------------------------------------
    def query(self) -> Node:
        if self.peek().kind == "end":
            raise self.error(self.peek(), "empty query: expected a term such as "
                             "url.domain:example.com or a word")
        node = self.or_expr()
        tok = self.peek()
        if tok.kind != "end":
            what = "an unmatched ')'" if tok.kind == ")" else repr(tok.text)
            raise self.error(tok, f"unexpected {what}: expected AND, OR or the end")
        return node

    def or_expr(self) -> Node:
        parts = [self.and_expr()]
        while self.is_kw(self.peek(), "OR"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_expr(self) -> Node:
        parts = [self.unary()]
        while True:
            tok = self.peek()
            if self.is_kw(tok, "AND"):
                self.take()
                parts.append(self.unary())
            elif self.starts_operand(tok):
                parts.append(self.unary())
            else:
                break
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def unary(self) -> Node:
        tok = self.peek()
        if self.is_kw(tok, "NOT"):
            self.take()
            self.deeper(tok)
            child = self.unary()
            self.depth -= 1
            return Not(child)
        return self.primary()

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "(":
            self.deeper(tok)
            if self.peek().kind == ")":
                raise self.error(self.peek(), "empty parentheses: expected a term")
            node = self.or_expr()
            close = self.take()
            if close.kind != ")":
                raise self.error(close, f"expected ')' to close the '(' at column "
                                 f"{tok.pos + 1}")
            self.depth -= 1
            return node
        if tok.kind == "phrase":
            return self.counted(Term(None, "phrase", tok.text, pos=tok.pos))
        if tok.kind == "word" and tok.text not in KEYWORDS:
            return self.word(tok)
        if tok.kind == "end":
            raise self.error(tok, "the query ends here: expected a term after it")
        what = f"keyword {tok.text}" if tok.kind == "word" else f"'{tok.text}'"
        raise self.error(tok, f"unexpected {what}: expected a term (field:value, a word "
                         'or a "phrase")')

    def word(self, tok: Token) -> Term:
        name, colon, rest = tok.text.partition(":")
        if not colon or not _FIELD.fullmatch(name):
            if has_wildcard(tok.text):
                return self.counted(Term(None, "wildcard", tok.text, pos=tok.pos))
            return self.counted(Term(None, "exact", unescape(tok.text), pos=tok.pos))
        if name not in FIELDS:
            near = near_matches(name)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise self.error(tok, f"unknown field {name!r}{hint} (quote the text to search "
                             "it as free text; docs/search.md lists the fields)")
        vpos = tok.pos + len(name) + 1
        if rest:
            return self.counted(self.value_word(name, rest, vpos))
        nxt = self.peek()
        if nxt.kind == "phrase":
            self.take()
            return self.counted(Term(name, "phrase", nxt.text, pos=tok.pos))
        if nxt.kind in ("[", "{"):
            return self.counted(self.range(name, tok.pos))
        if nxt.kind == "word" and nxt.text not in KEYWORDS:
            self.take()
            return self.counted(self.value_word(name, nxt.text, nxt.pos))
        raise self.error(nxt if nxt.kind != "end" else vpos,
                         f"expected a value after '{name}:' (a word, a \"phrase\", "
                         "[lo TO hi] or >N)")

    def value_word(self, name: str, raw: str, pos: int) -> Term:
        m = re.match(r"(>=|<=|>|<)", raw)
        if m:
            op, bound = m.group(1), raw[m.end():]
            if not bound:
                raise self.error(pos + len(op), f"expected a value after '{op}'")
            rng = (Range(unescape(bound), None, op == ">=", True) if op[0] == ">"
                   else Range(None, unescape(bound), True, op == "<="))
            return Term(name, "range", range=rng, pos=pos)
        if has_wildcard(raw):
            return Term(name, "wildcard", raw, pos=pos)
        return Term(name, "exact", unescape(raw), pos=pos)

    def range(self, name: str, pos: int) -> Term:
        open_tok = self.take()
        lo = self.bound()
        to = self.take()
        if not self.is_kw(to, "TO"):
            raise self.error(to, "expected TO between the two ends of the range "
                             "(e.g. [1000 TO 2000])")
        hi = self.bound()
        close = self.take()
        if close.kind not in ("]", "}"):
            raise self.error(close, f"expected ']' or '}}' to close the range opened at "
                             f"column {open_tok.pos + 1}")
        return Term(name, "range", range=Range(lo, hi, open_tok.kind == "[",
                                               close.kind == "]"), pos=pos)

    def bound(self) -> str | None:
        tok = self.take()
        if tok.kind == "phrase":
            return tok.text
        if tok.kind != "word" or tok.text == "TO":
            raise self.error(tok, "expected a range end (a number, a time, or * for open)")
        return None if tok.text == "*" else unescape(tok.text)


def parse(text: str) -> Node:
    """The query's tree; :class:`SearchSyntaxError` (a QueryError) when it does not parse."""
    if len(text) > MAX_QUERY_CHARS:
        raise SearchSyntaxError(text[:80], 80 if len(text) > 80 else 0,
                                f"query of {len(text)} characters is longer than "
                                f"{MAX_QUERY_CHARS} (MAX_QUERY_CHARS)")
    return _Parser(text).query()

