"""MIME (RFC 2045/2046/2047/5322): headers, nested multiparts, transfer decoding, with limits.

The parser works on a whole message (bytes exactly as carried) and never raises on bad
input: what cannot be understood is recorded in ``errors`` and the rest is kept. Header
parameters (``boundary``, ``filename``, RFC 2231 continuations) go through the standard
library's :mod:`email` header machinery; the body walk is ours, so that every limit is
named and part offsets stay exact.
"""

from __future__ import annotations

import binascii
import email.errors
import email.header
import email.message
import email.utils
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: Deepest multipart nesting followed (deeper multiparts are kept whole, as one leaf).
MAX_MIME_DEPTH = 20
#: Most leaf parts taken from one message (the rest are counted, not decoded).
MAX_MIME_PARTS = 1000
#: Largest header block of a message or part, in bytes (the rest is treated as body).
MAX_MIME_HEADER_BYTES = 256 * 1024
#: Longest text/html body kept as text on the email record (the full part is a file).
MAX_BODY_TEXT_CHARS = 1024 * 1024

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


@dataclass
class MimeLeaf:
    """A non-multipart entity after transfer decoding."""

    entity: int  # 1-based index of the entity in document order (Zeek's "mime_depth")
    depth: int  # multipart nesting depth (0 = the message itself)
    content_type: str
    charset: str | None
    disposition: str  # "inline", "attachment" or ""
    filename: str  # decoded, unsanitised (metadata only)
    transfer_encoding: str
    offset: int  # where the raw content starts in the message
    raw: bytes
    data: bytes
    #: quoted-printable only: what Zeek's MIME analyzer hashes (decoded + CRLF before the
    #: boundary); None for other encodings, where it equals ``data``.
    zeek_data: bytes | None = None

    @property
    def is_attachment(self) -> bool:
        return self.disposition == "attachment" or bool(self.filename)

    @property
    def role(self) -> str:
        if self.is_attachment:
            return "attachment" if self.disposition != "inline" else "inline"
        if self.content_type in ("text/plain", "text/html"):
            return "body"
        return "inline"


@dataclass
class ParsedMessage:
    headers: list[tuple[str, str]]
    leaves: list[MimeLeaf] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped_parts: int = 0

    def header(self, name: str) -> str:
        """First value of a header, unfolded and RFC 2047 decoded ('' when absent)."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return decode_words(value)
        return ""

    def header_all(self, name: str) -> list[str]:
        return [decode_words(v) for k, v in self.headers if k.lower() == name.lower()]

    def text_body(self, subtype: str) -> str:
        for leaf in self.leaves:
            if leaf.content_type == f"text/{subtype}" and leaf.role == "body":
                return _to_text(leaf.data, leaf.charset)[:MAX_BODY_TEXT_CHARS]
        return ""


def _to_text(data: bytes, charset: str | None) -> str:
    for cs in (charset, "utf-8"):
        if not cs:
            continue
        try:
            return data.decode(cs)
        except (LookupError, ValueError):  # ValueError: a NUL in the charset's name
            continue
    return data.decode("latin-1")


def header_param(get: Callable[[], Any]) -> str | None:
    """A parameter read by the standard library from a header off the wire (``lambda:
    info.get_filename()``), or None where its RFC 2231 decoding fails: a NUL in a charset
    name raises ValueError, mixed ``*0*``/``*1`` continuations TypeError in
    ``email.utils.decode_params``."""
    try:
        value = get()
    except (ValueError, TypeError, LookupError):
        return None
    return value if isinstance(value, str) else None


def decode_words(value: str) -> str:
    """Unfold a header value and decode RFC 2047 encoded words; never raises."""
    value = _FOLD.sub("", value).strip()
    if "=?" not in value:
        return value
    try:
        pieces = email.header.decode_header(value)
    except (ValueError, binascii.Error, email.errors.HeaderParseError):
        return value
    out = []
    for chunk, cs in pieces:
        if isinstance(chunk, bytes):
            out.append(_to_text(chunk, cs))
        else:
            out.append(chunk)
    return "".join(out)


def split_addresses(value: str) -> list[str]:
    """Comma-separated entries of an address header, commas inside quotes, angle brackets
    or comments excepted; each entry stripped (the raw spelling is kept)."""
    out: list[str] = []
    cur: list[str] = []
    quote, angle, paren, esc = False, 0, 0, False
    for ch in value:
        if esc:
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == '"' and not paren:
            quote = not quote
        elif not quote:
            if ch == "<":
                angle += 1
            elif ch == ">":
                angle = max(0, angle - 1)
            elif ch == "(":
                paren += 1
            elif ch == ")":
                paren = max(0, paren - 1)
            elif ch == "," and not angle and not paren:
                out.append("".join(cur).strip())
                cur = []
                continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return [x for x in out if x]


def bare_addresses(values: list[str]) -> list[str]:
    return [addr for _, addr in email.utils.getaddresses(values) if addr]


def _bytes_to_str(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def split_head(data: bytes, start: int = 0, end: int | None = None) -> tuple[bytes, int]:
    """(header block, body offset relative to ``start``) of ``data[start:end]``. A message
    without an empty line is all header."""
    end = len(data) if end is None else max(start, min(end, len(data)))
    if data.startswith(b"\r\n", start, end):
        return b"", 2
    if data.startswith(b"\n", start, end):
        return b"", 1
    m = _HEADER_END.search(data, start, min(end, start + MAX_MIME_HEADER_BYTES + 4))
    if m is None:
        if end - start > MAX_MIME_HEADER_BYTES:
            return b"", 0
        return data[start:end], end - start
    return data[start:m.start()], m.end() - start


def parse_header_block(block: bytes) -> list[tuple[str, str]]:
    """Header fields in order, values still folded; lines that are not fields are skipped."""
    out: list[tuple[str, str]] = []
    for line in re.split(rb"\r?\n(?![ \t])", block):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name.strip() != name or b" " in name:
            continue
        out.append((_bytes_to_str(name), _bytes_to_str(value).lstrip(" \t")))
    return out


def _as_message(headers: list[tuple[str, str]]) -> email.message.Message:
    msg = email.message.Message()
    for name, value in headers:
        if name.lower() in ("content-type", "content-disposition", "content-transfer-encoding"):
            msg[name] = _FOLD.sub("", value)
    return msg


def decode_transfer(raw: bytes, encoding: str) -> bytes:
    """Undo a Content-Transfer-Encoding leniently (invalid characters are skipped)."""
    if encoding == "base64":
        try:  # the common case: a2b_base64 skips line breaks and other non-alphabet bytes
            return binascii.a2b_base64(raw)
        except binascii.Error:
            pass
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
        clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
        clean += b"=" * (-len(clean) % 4)
        try:
            return binascii.a2b_base64(clean)
        except binascii.Error:
            return b""
    if encoding == "quoted-printable":
        return binascii.a2b_qp(raw)
    return raw


_DELIM_CACHE: dict[bytes, re.Pattern[bytes]] = {}


def _delimiter(boundary: bytes) -> re.Pattern[bytes]:
    """A delimiter line from its dashes on: ``--boundary[--] *LWSP (CRLF | end)``."""
    pat = _DELIM_CACHE.get(boundary)
    if pat is None:
        pat = re.compile(rb"--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
        if len(_DELIM_CACHE) > 256:
            _DELIM_CACHE.clear()
        _DELIM_CACHE[boundary] = pat
    return pat


def _delimiters(data: bytes, start: int, end: int, boundary: bytes
                ) -> list[tuple[int, int, bool]]:
    r"""(start, end, closing) of every delimiter of ``boundary`` in ``data[start:end]``, up
    to the first closing one: a delimiter at ``start`` itself, then every
    ``CRLF--boundary`` (or LF) on a line of its own. The same matches as searching with
    the regular expression ``\r?\n--boundary(--)?[ \t]*(?:\r?\n|\Z)``, but found by
    ``bytes.find`` of the line break and boundary (a regular expression that starts with
    an optional byte is tried at every position of a multi-megabyte body)."""
    first = _delimiter(boundary)
    out: list[tuple[int, int, bool]] = []
    m = first.match(data, start, end)
    if m is not None:
        out.append((m.start(), m.end(), bool(m.group(1))))
        if m.group(1):
            return out
    needle = b"\n--" + boundary
    pos = start
    while (i := data.find(needle, pos, end)) >= 0:
        m = first.match(data, i + 1, end)
        if m is None:
            pos = i + 1
            continue
        s = i - 1 if i - 1 >= pos and data[i - 1] == 0x0D else i
        out.append((s, m.end(), bool(m.group(1))))
        if m.group(1):
            break
        pos = m.end()
    return out


def multipart_spans(data: bytes, boundary: bytes, start: int = 0
                    ) -> tuple[list[tuple[int, int]], bool]:
    """(start, end) of every part (headers included) of the multipart body
    ``data[start:]``, not descending into nested multiparts, and whether the close
    delimiter was seen. An unclosed last part runs to the end of ``data``; no delimiter
    at all gives no parts."""
    bounds = _delimiters(data, start, len(data), boundary)
    spans = [(body_from, next_delim) for (_, body_from, _), (next_delim, _, _)
             in zip(bounds, bounds[1:], strict=False)]
    closed = bool(bounds) and bounds[-1][2]
    if bounds and not closed:
        spans.append((bounds[-1][1], len(data)))
    return spans, closed


class _Walker:
    def __init__(self, message: ParsedMessage) -> None:
        self.msg = message
        self.entity = 0

    def entity_at(self, data: bytes, start: int, end: int, depth: int,
                  headers: list[tuple[str, str]] | None = None) -> None:
        self.entity += 1
        entity = self.entity
        if headers is None:
            block, body_off = split_head(data, start, end)
            headers = parse_header_block(block)
            body_start = start + body_off
        else:
            body_start = start
        info = _as_message(headers)
        ctype = info.get_content_type()
        if ctype.startswith("multipart/"):
            boundary = header_param(lambda: info.get_param("boundary"))
            if not boundary:
                self.msg.errors.append(f"entity {entity}: {ctype} without a boundary")
            elif depth >= MAX_MIME_DEPTH:
                self.msg.errors.append(f"entity {entity}: MAX_MIME_DEPTH={MAX_MIME_DEPTH} "
                                       "reached; kept as one part")
            else:
                self.multipart(data, body_start, end, depth, boundary.encode("utf-8",
                                                                             "surrogateescape"))
                return
        self.leaf(data, body_start, end, depth, entity, info)

    def multipart(self, data: bytes, start: int, end: int, depth: int, boundary: bytes) -> None:
        bounds = _delimiters(data, start, end, boundary)
        if not bounds:
            self.msg.errors.append(f"boundary {boundary!r} never found; body skipped")
            return
        for (_, body_from, _), (next_delim, _, _) in zip(bounds, bounds[1:], strict=False):
            self.entity_at(data, body_from, next_delim, depth + 1)
        if not bounds[-1][2]:
            self.msg.errors.append(f"boundary {boundary!r} not closed (message truncated?)")
            self.entity_at(data, bounds[-1][1], end, depth + 1)

    def leaf(self, data: bytes, start: int, end: int, depth: int, entity: int,
             info: email.message.Message) -> None:
        if len(self.msg.leaves) >= MAX_MIME_PARTS:
            self.msg.skipped_parts += 1
            if self.msg.skipped_parts == 1:
                self.msg.errors.append(f"MAX_MIME_PARTS={MAX_MIME_PARTS} reached; further "
                                       "parts counted, not decoded")
            return
        cte = str(info.get("content-transfer-encoding", "") or "").strip().lower()
        raw = data[start:end]
        decoded = decode_transfer(raw, cte)
        zeek = None
        if cte == "quoted-printable":
            zeek = decoded if raw.endswith(b"=") else decoded + b"\r\n"
        filename = header_param(info.get_filename) or ""
        if "=?" in filename:
            filename = decode_words(filename)
        disp = (info.get_content_disposition() or "").lower()
        self.msg.leaves.append(MimeLeaf(
            entity=entity, depth=depth, content_type=info.get_content_type(),
            charset=header_param(info.get_content_charset), disposition=disp, filename=filename,
            transfer_encoding=cte, offset=start, raw=raw, data=decoded, zeek_data=zeek))


def parse_message(data: bytes) -> ParsedMessage:
    """Parse a whole message (RFC 5322 headers + MIME body)."""
    block, body_off = split_head(data)
    msg = ParsedMessage(headers=parse_header_block(block))
    _Walker(msg).entity_at(data, body_off, len(data), 0, headers=msg.headers)
    return msg


def parse_body(body: bytes, content_type: str) -> ParsedMessage:
    """Parse a body whose Content-Type came from elsewhere (an HTTP multipart upload)."""
    msg = ParsedMessage(headers=[("Content-Type", content_type)])
    walker = _Walker(msg)
    walker.entity = -1  # the HTTP message is not an entity of its own
    walker.entity_at(body, 0, len(body), 0, headers=msg.headers)
    return msg


def form_field_name(leaf_headers: list[tuple[str, str]]) -> str:
    info = _as_message(leaf_headers)
    return header_param(lambda: info.get_param("name", header="content-disposition")) or ""
