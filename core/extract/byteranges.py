"""HTTP 206 responses with ``Content-Type: multipart/byteranges`` (RFC 9110 14.6).

Such a response carries several parts, each with its own ``Content-Range: bytes A-B/T``.
:func:`split` cuts the body into those parts; :class:`~.httpfiles.HttpSession` turns each
into a file with the same ``content_range``/``range_key`` extras a single-part 206 gets,
so :class:`~.ranges.RangeAssembler` joins them with the plain ranges of other responses
and connections. Nothing is invented and nothing valid is dropped:

* a part without a valid Content-Range, or whose length disagrees with it, stays a file
  of its own, not joined (and is reported);
* a part cut short (gap, truncated capture, close delimiter never seen) keeps the bytes
  it has; the rest of its range is missing;
* the body is kept whole as well whenever the parts cannot hold every byte of it (no
  boundary, no delimiter, bytes after a gap that cannot be placed, a limit reached).

The body walk reuses :func:`pcapwire.extract.mime.multipart_spans` (top level only: a
part of a ``multipart/*`` file is file content, not a nested entity).
"""

from __future__ import annotations

import email.message
from dataclasses import dataclass, field

from pcapwire.extract import mime
from pcapwire.extract.ranges import parse_content_range

#: Most parts taken from one multipart/byteranges response (Apache's MaxRanges default);
#: past it the rest of the body is not split, and the body is kept whole as well.
MAX_BYTERANGES_PARTS = 200


@dataclass
class RangePart:
    index: int  # 1-based position in the response
    data: bytes
    content_type: str
    #: (first, last, total) when the part can be joined, else None
    range: tuple[int, int, int | None] | None
    #: the tail of the range never seen, in part coordinates (its data is a prefix)
    missing: list[tuple[int, int]] = field(default_factory=list)
    error: str = ""  # why the part is not joined ('' when it is)


@dataclass
class Split:
    parts: list[RangePart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: why the body must also be kept whole ('' when the parts hold every byte of it)
    keep_whole: str = ""
    totals: list[int | None] = field(default_factory=list)  # distinct, in order met
    closed: bool = False  # the close delimiter was seen


def is_byteranges(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "multipart/byteranges"


def boundary_of(content_type: str) -> bytes:
    """The ``boundary`` parameter (RFC 2046 quoting and RFC 2231 handled), b'' if none."""
    msg = email.message.Message()
    msg["Content-Type"] = content_type
    value = mime.header_param(lambda: msg.get_param("boundary"))
    return value.encode("utf-8", "surrogateescape") if value else b""


def split(body: bytes, content_type: str, gaps: list[tuple[int, int]] | None = None
          ) -> Split:
    """The parts of a multipart/byteranges ``body``. ``gaps`` are the body's missing
    ranges as the HTTP parser records them: (offset in the body as sent, length); the
    bytes either side of a gap are walked separately."""
    out = Split()
    boundary = boundary_of(content_type)
    if not boundary:
        out.keep_whole = "multipart/byteranges without a (readable) boundary parameter"
        return out
    segments = _segments(body, gaps or [])
    for n, segment in enumerate(segments):
        if out.closed or not _walk(out, segment, boundary, after_gap=n > 0):
            break
    if not out.parts and not out.keep_whole:
        out.keep_whole = f"boundary {boundary!r} never found"
    elif out.parts and not out.closed:
        out.notes.append(f"boundary {boundary!r} never closed (body truncated?); the last "
                         "part ends where the body ends")
    if len(out.totals) > 1:
        out.notes.append(f"parts disagree on the file size ({_sizes(out.totals)}); each "
                         "part joins the ranges of the size it names")
    return out


def _segments(body: bytes, gaps: list[tuple[int, int]]) -> list[bytes]:
    """``body`` (the bytes kept) cut where each gap was: a gap's offset in the kept bytes
    is its offset as sent less the gaps before it."""
    lost, cuts_at = 0, set()
    for off, n in sorted(gaps):
        cuts_at.add(min(max(off - lost, 0), len(body)))
        lost += n
    cuts = sorted(cuts_at)
    bounds = [0, *cuts, len(body)]
    return [body[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _walk(out: Split, data: bytes, boundary: bytes, after_gap: bool) -> bool:
    """Take the parts of one run of bytes without gaps; False once the limit is reached."""
    spans, out.closed = mime.multipart_spans(data, boundary)
    if after_gap:
        lead = 0 if data.startswith(b"--" + boundary) else data.find(b"\n--" + boundary)
        lead = len(data) if lead < 0 else lead - (lead > 0 and data[lead - 1] == 0x0D)
        if lead:
            out.notes.append(f"{lead} bytes after a gap, before the next part, cannot be "
                             "placed (the offset of the part they belong to is lost)")
            out.keep_whole = out.keep_whole or "bytes after a gap could not be placed"
    for k, (start, end) in enumerate(spans):
        if len(out.parts) >= MAX_BYTERANGES_PARTS:
            out.notes.append(f"MAX_BYTERANGES_PARTS={MAX_BYTERANGES_PARTS} reached; the "
                             "parts after it are not split")
            out.keep_whole = f"MAX_BYTERANGES_PARTS={MAX_BYTERANGES_PARTS} reached"
            return False
        open_end = k == len(spans) - 1 and not out.closed
        part = _part(out, data, start, end, open_end, boundary)
        if part is not None:
            out.parts.append(part)
    return True


def _part(out: Split, data: bytes, start: int, end: int, open_end: bool,
          boundary: bytes) -> RangePart | None:
    """The part in ``data[start:end]``; None for an empty one (nothing to keep)."""
    if not data[start:start + 256].strip(b"\r\n\t ") and not data[start:end].strip(
            b"\r\n\t "):  # (the first test spares copying a large part)
        return None
    index = len(out.parts) + 1
    block, body_off = mime.split_head(data, start, end)
    headers = {k.lower(): v for k, v in reversed(mime.parse_header_block(block))}
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = data[start + body_off:end]
    value = mime.decode_words(headers.get("content-range", ""))
    rng = parse_content_range(value)
    if rng is None:
        why = f"invalid Content-Range {value!r}" if value else "no Content-Range"
        return _unjoined(out, RangePart(index, body, ctype, None), why)
    first, last, total = rng
    if total not in out.totals:
        out.totals.append(total)
    if total is None:
        out.notes.append(f"part {index} (bytes {first}-{last}/*): the file size is unknown, "
                         "so it cannot be joined")
    want = last - first + 1
    if len(body) > want and open_end and _residue(body[want:], boundary):
        body = body[:want]  # the start of a close delimiter cut off by the body's end
    part = RangePart(index, body, ctype, rng)
    if len(body) < want and open_end:
        part.missing = [(len(body), want - len(body))]
        out.notes.append(f"part {index} (bytes {first}-{last}/{_size(total)}) cut short "
                         f"after {len(body)} of {want} bytes; the rest is missing")
    elif len(body) != want:
        part.range = None
        return _unjoined(out, part, f"{len(body)} bytes, but its Content-Range "
                                    f"bytes {first}-{last}/{_size(total)} says {want}")
    return part


def _unjoined(out: Split, part: RangePart, why: str) -> RangePart:
    part.error = why
    out.notes.append(f"part {part.index}: {why}; kept as a file of its own, not joined")
    return part


def _residue(extra: bytes, boundary: bytes) -> bool:
    """Whether bytes after a part's range are only the start of the delimiter that should
    have followed it (line break, dashes, boundary)."""
    if not extra.strip(b"\r\n\t "):
        return True
    return any(d.startswith(extra) for d in (b"\r\n--" + boundary + b"--\r\n",
                                             b"\n--" + boundary + b"--\n"))


def _size(total: int | None) -> str:
    return "*" if total is None else str(total)


def _sizes(totals: list[int | None]) -> str:
    return ", ".join(_size(t) for t in totals)
