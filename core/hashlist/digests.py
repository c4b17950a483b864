"""File digests as hash lists carry them: MD5, SHA-1 or SHA-256, told apart by length.

Lists are stored and looked up by the **binary** digest (16, 20 or 32 bytes), so the same
hash in upper or lower case, from any format, is one key.
"""

from __future__ import annotations

#: Algorithm by digest length in bytes.
ALGORITHM_BY_BYTES: dict[int, str] = {16: "md5", 20: "sha1", 32: "sha256"}
#: Every algorithm a list may hold, in the order reports show them.
ALGORITHMS: tuple[str, ...] = ("md5", "sha1", "sha256")
#: Hex digits per algorithm.
HEX_DIGITS: dict[str, int] = {"md5": 32, "sha1": 40, "sha256": 64}
_HEX_LENGTHS = frozenset(HEX_DIGITS.values())
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")


def parse_digest(text: str) -> bytes:
    """The binary digest of an MD5, SHA-1 or SHA-256 written in hex (either case);
    :class:`ValueError` with a message saying what is wrong otherwise."""
    t = text.strip()
    if len(t) in _HEX_LENGTHS:
        try:
            raw = bytes.fromhex(t)
        except ValueError:
            raw = b""
        if len(raw) * 2 == len(t):  # fromhex skips spaces between bytes; we do not
            return raw
    raise ValueError(describe_bad(t))


def describe_bad(t: str) -> str:
    shown = t if len(t) <= 80 else t[:77] + "..."
    if t and not set(t) <= _HEX_CHARS:
        return (f"{shown!r} is not a hex digest (MD5: 32, SHA-1: 40, SHA-256: 64 hex "
                "digits)")
    return (f"{shown!r} has {len(t)} hex digits; MD5 has 32, SHA-1 40, SHA-256 64")


def is_digest(text: str) -> bool:
    try:
        parse_digest(text)
    except ValueError:
        return False
    return True


def algorithm(digest: bytes) -> str:
    """``md5``, ``sha1`` or ``sha256`` for a binary digest."""
    try:
        return ALGORITHM_BY_BYTES[len(digest)]
    except KeyError:
        raise ValueError(f"a {len(digest)}-byte value is not an MD5, SHA-1 or SHA-256 "
                         "digest") from None
