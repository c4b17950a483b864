"""A carved email as the dashboard shows it: its headers (read from the ``.eml``, decoded),
text, attachments with their download links, and its HTML part as a document a browser
renders harmlessly (:data:`HTML_HEADERS`).

The HTML part is served as written (never rewritten here: a sanitiser that misses one
trick is worse than none); what keeps it harmless is its own Content-Security-Policy:
``sandbox`` without ``allow-scripts`` (no script runs, the document has an opaque origin:
no cookie, no API), ``default-src 'none'`` (no request leaves: remote images, CSS
``url()``, fonts, frames, prefetches), ``img-src data:`` (inline images only),
``style-src 'unsafe-inline'`` (the message's own styles, never a fetched sheet),
``form-action 'none'`` and ``base-uri 'none'``; ``frame-ancestors 'self'`` lets only the
dashboard frame it. The dashboard frames it in ``<iframe sandbox>`` (same flags), and its
own ``frame-src 'self'`` refuses any navigation of that frame to another origin (a
clicked remote link).
"""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import default
from pathlib import Path
from typing import Any
from urllib.parse import quote

MAX_EMAIL_HEADERS = 200  # header fields shown (a message with more is cut, and says so)
MAX_HEADER_CHARS = 4000  # characters of one header value shown
MAX_HEADER_BYTES = 256 * 1024  # bytes of the .eml read to find its header block
HTML_CSP = ("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
            "form-action 'none'; base-uri 'none'; frame-ancestors 'self'")
HTML_HEADERS = {"Content-Security-Policy": HTML_CSP, "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "SAMEORIGIN", "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store"}


def headers(eml: Path) -> tuple[list[dict[str, str]], bool]:
    """(header fields as {name, value} in their order, RFC 2047 words decoded; cut?)"""
    with open(eml, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    end = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0),
              default=len(head))
    msg = BytesHeaderParser(policy=default).parsebytes(head[:end + 2])
    out = []
    for name, value in msg.items()[:MAX_EMAIL_HEADERS]:
        try:
            text = str(value)
        except (ValueError, TypeError, AttributeError):  # a header the policy cannot parse
            text = str(getattr(value, "_value", value))
        out.append({"name": name, "value": text[:MAX_HEADER_CHARS]})
    return out, len(msg) > MAX_EMAIL_HEADERS


def view(rec: dict[str, Any], eml: Path | None) -> dict[str, Any]:
    """The JSON view of email record ``rec`` (an :class:`pcapwire.records.EmailRecord`
    dict of query ``rec['query_id']``) whose carved bytes are ``eml``."""
    qid, eid = rec["query_id"], rec["id"]
    base = f"/api/v1/queries/{quote(qid, safe='')}"
    fields, cut = headers(eml) if eml is not None else ([], False)
    attachments = [{
        "filename": a.get("filename", ""), "mime_type": a.get("mime_type", ""),
        "size": a.get("size"), "sha256": a.get("sha256", ""),
        "download": f"{base}/files/{a['sha256']}/content" if a.get("sha256") else None}
        for a in (rec.get("extra") or {}).get("attachment_details", [])]
    html = bool(rec.get("html_body"))
    return {
        "id": eid, "query_id": qid, "protocol": rec.get("protocol", ""),
        "flow": rec.get("flow"), "ts": rec.get("ts"), "subject": rec.get("subject", ""),
        "from": rec.get("from_", ""), "to": rec.get("to", []), "cc": rec.get("cc", []),
        "date": rec.get("date", ""), "message_id": rec.get("message_id", ""),
        "mail_from": rec.get("mail_from", ""), "rcpt_to": rec.get("rcpt_to", []),
        "sha256": rec.get("sha256", ""), "size": rec.get("size", 0),
        "incomplete": bool(rec.get("incomplete")), "headers": fields, "headers_cut": cut,
        "text": rec.get("text_body", ""), "has_html": html, "attachments": attachments,
        "links": {"eml": f"{base}/emails/{quote(eid, safe='')}/eml",
                  "html": f"{base}/emails/{quote(eid, safe='')}/html" if html else None}}
