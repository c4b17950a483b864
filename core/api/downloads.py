"""Headers for downloads that a browser saves and never renders: a safe filename (names
from the wire are untrusted; :func:`pcapwire.extract.artifacts.sanitize_filename` makes
them a safe path component, this module also keeps them to plain ASCII for the header),
``attachment`` disposition, ``nosniff`` and a sandboxing CSP."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from pcapwire.extract.artifacts import sanitize_filename

MAX_FILENAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, default: str = "download") -> str:
    """ASCII letters, digits, ``._-`` only; no directory part, no leading dots (no hidden
    or ``..`` names); at most ``MAX_FILENAME`` characters, keeping the extension."""
    base = unicodedata.normalize("NFKD", sanitize_filename(name, default))
    base = _UNSAFE.sub("_", base.encode("ascii", "ignore").decode()).lstrip("._")
    if len(base) > MAX_FILENAME:
        stem, dot, ext = base.rpartition(".")
        ext = ext[:16] if dot else ""
        base = (stem if dot else base)[:MAX_FILENAME - len(ext) - 1] + (f".{ext}" if ext else "")
    return base or default


def attachment(name: str, default: str = "download") -> str:
    safe = safe_filename(name, default)
    return f"attachment; filename=\"{safe}\"; filename*=UTF-8''{quote(safe)}"


def download_headers(name: str, content_type: str = "application/octet-stream",
                     default: str = "download") -> dict[str, str]:
    return {"Content-Type": content_type, "Content-Disposition": attachment(name, default),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'"}
