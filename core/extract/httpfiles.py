"""HTTP sessions: pair requests with responses and turn bodies into files.

Each non-empty body is a file: request bodies (multipart uploads split into their parts),
response bodies after Content-Encoding decoding (the body as transferred is kept only
when decoding fails or stops at a limit; its hashes are on the record either way), and
206 responses as parts with their Content-Range (``ranges.RangeAssembler`` joins them;
a ``multipart/byteranges`` 206 gives one such part per range, see :mod:`.byteranges`).
"""

from __future__ import annotations

import email.message
import hashlib
import logging
import posixpath
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from pcapwire.extract import byteranges, decode, mime
from pcapwire.extract import http as _http
from pcapwire.extract.buffer import CarvedFile, Session
from pcapwire.extract.http import HttpMessage, HttpParser
from pcapwire.extract.ranges import parse_content_range

log = logging.getLogger(__name__)


def hashes(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "md5": hashlib.md5(data).hexdigest(),  # noqa: S324
            "sha1": hashlib.sha1(data).hexdigest(),  # noqa: S324
            "sha256": hashlib.sha256(data).hexdigest()}


def disposition_filename(value: str) -> str:
    """filename / filename* (RFC 6266, RFC 5987) of a Content-Disposition value."""
    if not value:
        return ""
    msg = email.message.Message()
    msg["Content-Disposition"] = value
    name = mime.header_param(msg.get_filename) or ""
    return mime.decode_words(name) if "=?" in name else name


def uri_filename(uri: str) -> str:
    """Last path segment of a request URI, percent-decoded ('' for a directory)."""
    try:
        path = urlsplit(uri).path
    except ValueError:
        path = uri.split("?", 1)[0]
    return posixpath.basename(unquote(path, errors="replace"))


class HttpSession(Session):
    protocol = "http"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[HttpMessage] = []
        self.transactions: list[dict[str, Any]] = []
        self.req = HttpParser(True, self._on_request)
        self.resp = HttpParser(False, self._on_response, self._method_of)
        self._req_ended = False

    def _method_of(self, index: int) -> str | None:
        if index < len(self.requests):
            return self.requests[index].method
        return None

    # ---- Session API ---------------------------------------------------------------
    def feed(self, direction: str, data: bytes, ts: float) -> None:
        if direction == "orig":
            self.req.feed(data, ts)
            self.resp.run()  # a response may have been waiting for this request
        else:
            self.resp.feed(data, ts)

    def gap(self, direction: str, length: int, ts: float) -> None:
        (self.req if direction == "orig" else self.resp).gap(length, ts)

    def end(self, direction: str, ts: float) -> None:
        """One direction ended (FIN/RST or end of capture)."""
        if direction == "orig":
            self.req.eof(ts)
            self.resp.peer_done = True
            self.resp.run()
        else:
            self.resp.eof(ts)

    def close(self, ts: float) -> None:
        self.end("orig", ts)
        self.end("resp", ts)
        self.notes += [f"request side: {n}" for n in self.req.notes]
        self.notes += [f"response side: {n}" for n in self.resp.notes]

    # ---- messages ------------------------------------------------------------------
    def _on_request(self, msg: HttpMessage) -> None:
        self.requests.append(msg)
        self.transactions.append({"request": _summary(msg), "response": None})
        if msg.body_size or msg.missing:
            self._request_files(msg)

    def _on_response(self, msg: HttpMessage) -> None:
        if msg.status < 200:
            return
        i = self.resp.answered - 1
        req = self.requests[i] if 0 <= i < len(self.requests) else None
        summary = _summary(msg)
        if req is None:
            self.transactions.append({"request": None, "response": summary})
        else:
            self.transactions[i]["response"] = summary
        if msg.body_size or msg.missing:
            summary["decoded_size"] = self._response_file(req, msg, i)

    def _base_extra(self, req: HttpMessage | None, resp: HttpMessage | None,
                    depth: int) -> dict[str, Any]:
        http: dict[str, Any] = {"trans_depth": depth + 1}
        if req is not None:
            http.update(method=req.method, uri=req.uri, host=req.header("host"),
                        user_agent=req.header("user-agent"))
        if resp is not None:
            http.update(status=resp.status, reason=resp.reason)
        return {"http": http}

    def _request_files(self, req: HttpMessage) -> None:
        body = req.body
        ctype = req.header("content-type")
        extra = self._base_extra(req, None, req.index)
        extra["declared_mime_type"] = ctype.split(";", 1)[0].strip().lower()
        if ctype.lower().startswith("multipart/") and not req.missing:
            parsed = mime.parse_body(body, ctype)
            container: dict[str, Any] | None = None
            for leaf in parsed.leaves:
                if not leaf.data:
                    continue
                if container is None:  # hashed once for all the parts
                    container = hashes(body)
                part_extra = dict(extra, form_field=_form_name(body, leaf),
                                  mime_entity=leaf.entity,
                                  declared_mime_type=leaf.content_type,
                                  container=dict(container))
                self.out.append(CarvedFile(
                    data=leaf.data, protocol="http", direction="orig", ts=req.ts,
                    filename=leaf.filename, incomplete=not req.complete, extra=part_extra))
            if parsed.leaves:
                return
        self._body_file(req, req, "orig", extra)

    def _response_file(self, req: HttpMessage | None, resp: HttpMessage, depth: int) -> int:
        """Carve a response body; returns its size after decoding."""
        extra = self._base_extra(req, resp, depth)
        ctype = resp.header("content-type")
        extra["declared_mime_type"] = ctype.split(";", 1)[0].strip().lower()
        if resp.status == 206 and byteranges.is_byteranges(ctype):
            return self._byteranges(req, resp, extra)
        if resp.status == 206:
            rng = parse_content_range(resp.header("content-range"))
            if rng is not None:
                _set_range(extra, req, resp, rng)
        self._body_file(req, resp, "resp", extra)
        return len(self.out[-1].data)

    def _byteranges(self, req: HttpMessage | None, resp: HttpMessage,
                    extra: dict[str, Any]) -> int:
        """One file per part of a multipart/byteranges 206, each a range for the
        RangeAssembler like a single-part 206; the body whole as well when the parts
        cannot hold all of it."""
        body = resp.body
        found = byteranges.split(body, resp.header("content-type"), resp.missing)
        where = (f"206 multipart/byteranges response to {req.method} {req.uri}"
                 if req is not None else "206 multipart/byteranges response")
        self.notes += [f"{where}: {n}" for n in found.notes]
        if resp.body_dropped:
            self.notes.append(f"{where}: MAX_BODY_SIZE={_http.MAX_BODY_SIZE} reached; the "
                              f"{resp.body_dropped} bytes after it are not kept")
        container = hashes(body)
        name = _filename(req, resp)
        for part in found.parts:
            self.out.append(self._range_part(req, resp, extra, part, container, name))
        if found.keep_whole:
            self.notes.append(f"{where}: {found.keep_whole}; the body is kept whole")
            self._body_file(req, resp, "resp", dict(extra, byteranges_kept_whole=(
                found.keep_whole)))
        return len(body)

    def _range_part(self, req: HttpMessage | None, resp: HttpMessage, extra: dict[str, Any],
                    part: byteranges.RangePart, container: dict[str, Any],
                    name: str) -> CarvedFile:
        p_extra = dict(extra, container=dict(container),
                       byteranges_part={"index": part.index})
        if part.content_type:
            p_extra["declared_mime_type"] = part.content_type
        if part.range is not None:
            _set_range(p_extra, req, resp, part.range)
        if part.error:
            p_extra["byteranges_error"] = part.error
        codings = decode.parse_codings(resp.header("content-encoding"))
        if codings:  # as for a single-part 206: a range of the encoded representation
            p_extra.update(content_encoding=",".join(codings), content_decoded=False,
                           decode_error="a range of an encoded representation; kept as "
                                        "transferred")
        return CarvedFile(data=part.data, protocol="http", direction="resp", ts=resp.ts,
                          filename=name, incomplete=bool(part.missing),
                          missing_ranges=list(part.missing), extra=p_extra)

    def _body_file(self, req: HttpMessage | None, msg: HttpMessage, direction: str,
                   extra: dict[str, Any]) -> None:
        raw = msg.body
        data = raw
        transferred: bytes | None = None
        codings = decode.parse_codings(msg.header("content-encoding"))
        if codings:
            extra["content_encoding"] = ",".join(codings)
            extra["transferred"] = hashes(raw)
            if msg.status == 206:
                extra["content_decoded"] = False
                extra["decode_error"] = ("a range of an encoded representation; kept as "
                                         "transferred")
            elif msg.missing:
                extra["content_decoded"] = False
                extra["decode_error"] = "body has gaps; kept as transferred"
            elif not decode.supported(codings):
                extra["content_decoded"] = False
                extra["decode_error"] = f"unsupported Content-Encoding {codings}"
            else:
                try:
                    data = decode.decode_body(raw, codings)
                    extra["content_decoded"] = True
                    transferred = raw
                except decode.DecodeLimitExceeded as exc:
                    data = raw
                    extra["content_decoded"] = False
                    extra["decode_error"] = str(exc)
                    extra["decode_limit"] = exc.limit
                    self.notes.append(f"decompression stopped: {exc}")
                except decode.DecodeError as exc:
                    data = raw
                    extra["content_decoded"] = False
                    extra["decode_error"] = str(exc)
        if msg.body_dropped:
            extra["truncated_by_limit"] = f"MAX_BODY_SIZE={_http.MAX_BODY_SIZE}"
            extra["dropped_bytes"] = msg.body_dropped
        if msg.errors:
            extra["errors"] = list(msg.errors)
        name = _filename(req, msg)
        missing = list(msg.missing)
        if not msg.complete and msg.declared_length is not None:
            seen = msg.body_offset
            if seen < msg.declared_length:
                missing.append((seen, msg.declared_length - seen))
        self.out.append(CarvedFile(
            data=data, protocol="http", direction=direction, ts=msg.ts, filename=name,
            incomplete=not msg.complete, missing_ranges=_merge(missing), extra=extra,
            transferred=transferred))


def _filename(req: HttpMessage | None, msg: HttpMessage) -> str:
    name = disposition_filename(msg.header("content-disposition"))
    if not name and req is not None:
        name = uri_filename(req.uri)
    return name


def _set_range(extra: dict[str, Any], req: HttpMessage | None, resp: HttpMessage,
               rng: tuple[int, int, int | None]) -> None:
    """The extras by which :class:`~.ranges.RangeAssembler` places a 206 part: its range,
    and the file it cuts -- (Host, URI, total length, ETag)."""
    first, last, total = rng
    extra["content_range"] = {"first": first, "last": last, "total": total}
    extra["range_key"] = [req.header("host") if req else "", req.uri if req else "", total,
                          resp.header("etag")]


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, n in sorted(ranges):
        if out and off <= out[-1][0] + out[-1][1]:
            o, m = out[-1]
            out[-1] = (o, max(o + m, off + n) - o)
        elif n > 0:
            out.append((off, n))
    return out


def _form_name(body: bytes, leaf: mime.MimeLeaf) -> str:
    """The ``name`` parameter of a form-data part (read back from the part's headers)."""
    start = body.rfind(b"\n--", 0, leaf.offset)
    head = body[start:leaf.offset] if start >= 0 else body[:leaf.offset]
    m = re.search(rb'(?im)^content-disposition:[^\r\n]*?\bname="?([^";\r\n]*)', head)
    return m.group(1).decode("utf-8", "replace") if m else ""


def _summary(msg: HttpMessage) -> dict[str, Any]:
    return {"start_line": msg.start_line, "ts": msg.ts, "framing": msg.framing,
            "body_size": msg.body_size + msg.body_dropped, "complete": msg.complete,
            "headers": {k.lower(): v for k, v in msg.headers
                        if k.lower() in ("host", "content-type", "content-length",
                                         "content-encoding", "transfer-encoding",
                                         "content-range", "content-disposition",
                                         "user-agent")},
            "errors": list(msg.errors)}
