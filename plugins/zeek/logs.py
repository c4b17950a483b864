"""Read Zeek logs -- ASCII (TSV with ``#fields``/``#types`` headers) or JSON lines -- into
records, the way pyzeek/ZAT users know them: a log name maps to an iterable of dicts.

    logs = ZeekLogs(run_dir)             # every *.log Zeek wrote in that directory
    for rec in logs["conn"]:             # dicts keyed by Zeek's own column names
        rec["id.orig_h"], rec["orig_pkts"]
    ZeekLogReader("conn.log").readrows()   # one file, ZAT's spelling

Values are typed from the log itself: ``count``/``int``/``port`` -> int,
``double``/``interval``/``time`` -> float (``time`` stays Unix seconds, as Zeek writes it),
``bool`` -> bool, ``set``/``vector``/``table`` -> list, the unset field (``-``) -> None,
the empty field (``(empty)``) -> ``[]`` for containers and ``""`` for strings, ``\\xHH``
escapes decoded. JSON logs are taken as Zeek wrote them (unset fields are absent).
Malformed input raises :class:`ZeekLogError` with file and line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapwire.errors import AnalyzerError

#: Longest log line read (a Zeek record with huge fields still fits).
MAX_LOG_LINE = 4 * 2**20
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")
_INT_TYPES = frozenset({"count", "int", "port", "counter"})
_FLOAT_TYPES = frozenset({"double", "interval", "time"})
_CONTAINER = re.compile(r"^(set|vector|table)\[(.+)\]$")


class ZeekLogError(AnalyzerError):
    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{path}:{line}: {reason}")


def _unescape(raw: str) -> str:
    if "\\x" not in raw:
        return raw
    data = _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), raw.encode("utf-8", "surrogateescape"))
    return data.decode("utf-8", "backslashreplace")


@dataclass
class TsvHeader:
    separator: str = "\t"
    set_separator: str = ","
    empty_field: str = "(empty)"
    unset_field: str = "-"
    path: str = ""
    fields: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)


def _convert(value: str, ztype: str, hdr: TsvHeader, where: tuple[Path, int, str]) -> Any:
    if value == hdr.unset_field:
        return None
    m = _CONTAINER.match(ztype)
    if m:
        if value == hdr.empty_field:
            return []
        return [_convert(v, m[2], hdr, where) for v in value.split(hdr.set_separator)]
    if value == hdr.empty_field and ztype in ("string", "enum", "pattern", ""):
        return ""
    try:
        if ztype in _INT_TYPES:
            return int(value)
        if ztype in _FLOAT_TYPES:
            return float(value)
        if ztype == "bool":
            if value not in ("T", "F"):
                raise ValueError(value)
            return value == "T"
    except ValueError:
        path, line, name = where
        raise ZeekLogError(path, line, f"column {name!r} ({ztype}): {value!r} is not a "
                           f"valid {ztype}") from None
    return _unescape(value)


class ZeekLogReader:
    """One log file; :meth:`readrows` yields its records (ZAT's ``ZeekLogReader`` shape)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.header = TsvHeader()
        self.format = ""

    @property
    def name(self) -> str:
        return self.header.path or self.path.name.split(".", 1)[0]

    def readrows(self) -> Iterator[dict[str, Any]]:
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if len(raw) > MAX_LOG_LINE:
                    raise ZeekLogError(self.path, lineno, f"line longer than {MAX_LOG_LINE} "
                                       "bytes")
                line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
                if not line:
                    continue
                if not self.format:
                    self.format = "json" if line.startswith("{") else "tsv"
                if line.startswith("#"):
                    self._header_line(line, lineno)
                    continue
                if self.format == "json" or (not self.header.fields and line.startswith("{")):
                    yield self._json_row(line, lineno)
                else:
                    yield self._tsv_row(line, lineno)

    __iter__ = readrows

    def _header_line(self, line: str, lineno: int) -> None:
        hdr = self.header
        if line.startswith("#separator "):
            hdr.separator = _unescape(line[len("#separator "):])
            self.format = "tsv"
            return
        key, _, rest = line[1:].partition(hdr.separator)
        if key == "set_separator":
            hdr.set_separator = rest
        elif key == "empty_field":
            hdr.empty_field = rest
        elif key == "unset_field":
            hdr.unset_field = rest
        elif key == "path":
            hdr.path = rest
        elif key == "fields":
            hdr.fields = rest.split(hdr.separator)
        elif key == "types":
            hdr.types = rest.split(hdr.separator)
            if len(hdr.types) != len(hdr.fields):
                raise ZeekLogError(self.path, lineno, f"{len(hdr.types)} #types for "
                                   f"{len(hdr.fields)} #fields")
        # "#open", "#close" and comments carry nothing a record needs

    def _tsv_row(self, line: str, lineno: int) -> dict[str, Any]:
        hdr = self.header
        if not hdr.fields:
            raise ZeekLogError(self.path, lineno, "record before the #fields header")
        values = line.split(hdr.separator)
        if len(values) != len(hdr.fields):
            raise ZeekLogError(self.path, lineno, f"{len(values)} values for "
                               f"{len(hdr.fields)} fields")
        types = hdr.types or [""] * len(values)
        return {name: _convert(value, ztype, hdr, (self.path, lineno, name))
                for name, ztype, value in zip(hdr.fields, types, values, strict=True)}

    def _json_row(self, line: str, lineno: int) -> dict[str, Any]:
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ZeekLogError(self.path, lineno, f"not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise ZeekLogError(self.path, lineno, "JSON record is not an object")
        return row


class ZeekLogs(Mapping[str, ZeekLogReader]):
    """The logs of one run directory: ``logs["conn"]`` iterates conn.log's records."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._readers = {p.name[:-len(".log")]: ZeekLogReader(p)
                         for p in sorted(self.directory.glob("*.log")) if p.is_file()}

    def __getitem__(self, name: str) -> ZeekLogReader:
        return self._readers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._readers)

    def __len__(self) -> int:
        return len(self._readers)

    def rows(self, name: str) -> list[dict[str, Any]]:
        """Every record of log ``name`` (empty if Zeek wrote no such log)."""
        reader = self._readers.get(name)
        return list(reader.readrows()) if reader else []
