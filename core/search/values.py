"""Values as the index keeps them, and query values turned into those forms.

- keyword and text values: case-folded (``POST`` and ``post`` are one value);
- ip: 32 hex digits of the address as IPv6 (IPv4 as ``::ffff:a.b.c.d``), so a CIDR
  network is a contiguous range of that text;
- long: an integer; date: microseconds since the epoch (UTC).
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
import time
from datetime import UTC, datetime, timedelta

from pcapwire.errors import QueryError

_V4_PREFIX = "00000000000000000000ffff"
_RELATIVE = re.compile(r"now(?:([+-])(\d+)([smhdw]))?", re.I)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Range of times the index keeps (microseconds; SQLite integers are 64-bit).
MAX_TIME_US = 2**62


def keyword(value: str) -> str:
    return value.casefold()


def ip_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv4Address):
        address = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)
    return address.packed.hex()


#: Texts whose :func:`parse_ip` answer is kept (then it starts again): every document
#: carries four addresses, a run's documents few distinct ones ...
IP_KEYS_KEPT = 16_384
#: ... of at most this many characters (the longest IPv6 text is 45).
IP_KEY_MAX_CHARS = 64
_IP_KEYS: dict[str, str | None] = {}


def parse_ip(value: str) -> str | None:
    """An address's index form, or None when ``value`` is not an IP address."""
    key = _IP_KEYS.get(value, "")
    if key == "":
        key = _parse_ip(value)
        if len(value) <= IP_KEY_MAX_CHARS:
            if len(_IP_KEYS) >= IP_KEYS_KEPT:
                _IP_KEYS.clear()
            _IP_KEYS[value] = key
    return key


def _parse_ip(value: str) -> str | None:
    try:
        return _V4_PREFIX + socket.inet_pton(socket.AF_INET, value).hex()
    except (OSError, ValueError):  # ValueError: a NUL in value (it failed the batch)
        pass
    try:
        return ip_key(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        return None


def cidr_range(value: str) -> tuple[str, str]:
    """(first, last) index forms of a network; QueryError when it is not one."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise QueryError(f"invalid network {value!r}: {exc}") from None
    return ip_key(net.network_address), ip_key(net.broadcast_address)


def parse_long(value: str) -> int:
    """An integer (a float is cut) within ±2^62, the range the index keeps."""
    try:
        number: float = int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            raise QueryError(f"{value!r} is not a number") from None
    if number != number or abs(number) > MAX_TIME_US:
        raise QueryError(f"{value!r} is not a number within ±2^62") from None
    return int(number)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def iso_us(value: str) -> int:
    """An ISO 8601 time (naive = UTC, ``Z`` allowed) as microseconds; ValueError if not."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MICROSECOND


def parse_time(value: str, *, now_us: int | None = None) -> tuple[int, int]:
    """:func:`_parse_time`, refusing times beyond what the index keeps (±2^62 µs)."""
    lo, hi = _parse_time(value, now_us=now_us)
    if not -MAX_TIME_US <= lo <= hi <= MAX_TIME_US:
        raise QueryError(f"time {value!r} is out of range")
    return lo, hi


def _parse_time(value: str, *, now_us: int | None = None) -> tuple[int, int]:
    """A query time as the interval [start, end) in microseconds it stands for: a date
    (``2026-12-01``) is its whole day, anything else one instant. Accepts ISO 8601, Unix
    seconds, ``now`` and ``now-15m`` (s, m, h, d, w)."""
    now = time.time_ns() // 1000 if now_us is None else now_us
    text = value.strip()
    m = _RELATIVE.fullmatch(text)
    try:
        if m:
            t = now
            if m.group(1):
                step = int(m.group(2)) * _UNITS[m.group(3).lower()] * 10**6
                t = t + step if m.group(1) == "+" else t - step
            return t, t + 1
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            t = round(float(text) * 1e6)
            return t, t + 1
        if _DATE_ONLY.fullmatch(text):
            t = iso_us(text)
            return t, t + int(timedelta(days=1).total_seconds() * 10**6)
        t = iso_us(text)
        return t, t + 1
    except (ValueError, OverflowError):
        raise QueryError(f"invalid time {value!r}: use ISO 8601 (2026-12-01 or "
                         "2026-12-01T10:00:00Z), Unix seconds, now or now-15m") from None


_NAIVE_EPOCH = datetime(1970, 1, 1)
#: First year :meth:`datetime.isoformat` writes as ``strftime("%Y")`` does (4 digits).
_ISO_YEAR_MIN = 1000


#: Seconds whose ISO form :func:`us_iso` keeps (then it starts again): a run's records
#: fall in few seconds, each document carries three times.
ISO_SECONDS_KEPT = 4096
_ISO_SECONDS: dict[int, str] = {}


def us_iso(us: int) -> str:
    """Microseconds as ISO 8601 UTC with a Z (the form documents carry):
    ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The second's form is made once (``isoformat``, half
    the cost of ``strftime``) and kept; years below 1000, which ``strftime`` writes
    without leading zeros, keep its form. The microseconds are padded by way of
    ``str(micro + 10**6)`` (half the cost of ``:06d``)."""
    second, micro = divmod(us, 1_000_000)
    head = _ISO_SECONDS.get(second)
    if head is None:
        dt = _NAIVE_EPOCH + timedelta(seconds=second)
        head = dt.strftime("%Y-%m-%dT%H:%M:%S") if dt.year < _ISO_YEAR_MIN \
            else dt.isoformat(timespec="seconds")
        if len(_ISO_SECONDS) >= ISO_SECONDS_KEPT:
            _ISO_SECONDS.clear()
        _ISO_SECONDS[second] = head
    return f"{head}.{str(micro + 1_000_000)[1:]}Z"


def ts_iso(ts: float) -> str:
    """Unix seconds as :func:`us_iso` (to the microsecond below)."""
    return us_iso(math.floor(ts * 1e6))
