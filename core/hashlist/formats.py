"""Readers for the hash-list formats: each turns one file into ``(digest, label)`` pairs,
reporting every bad line (file and line number) and going on with the next.

* ``text``: one hash per line, MD5/SHA-1/SHA-256 told apart by length; blank lines and
  lines starting with ``#`` are skipped; anything after the hash and whitespace is the
  entry's label (so ``sha256sum``/``md5sum`` output loads as is, file names as labels).
* ``csv``: a header row and one or more hash columns. Without ``columns``, every column
  named like a hash (``md5``, ``sha1``, ``SHA-256``, ``sha256_hash``, ``hash``...) is used;
  a header commented out with ``#`` (MalwareBazaar's exports) is recognised; a file
  without a header is read by the columns whose first row holds digests. The delimiter is
  the one of ``, ; TAB |`` the header uses most. ``label_column`` (or the first of
  ``signature``, ``family``, ``malware``, ``threat``, ``name``, ``file_name``,
  ``filename``, ``description``, ``comment``) gives labels. A field longer than the
  :mod:`csv` module's limit (128 KiB) makes its line a bad line.
* ``nsrl``: NSRL RDS 2.x ``NSRLFile.txt`` -- CSV with the quoted header
  ``"SHA-1","MD5","CRC32","FileName","FileSize","ProductCode","OpSystemCode","SpecialCode"``;
  SHA-1 and MD5 are loaded (CRC32 is not a file identity).
* ``rds3``: the NSRL RDSv3 SQLite release; the ``FILE`` view (or table, in the minimal
  releases) with columns ``sha256, sha1, md5, file_name, file_size, package_id``. Read as
  hostile input, within limits (:mod:`.rds3`). Bad rows are named ``FILE row N``.

Text files may be gzip-compressed (detected by content). ``auto`` detects the format from
the content: SQLite header -> ``rds3``; the NSRL header -> ``nsrl``; a first line starting
with a digest -> ``text``; a first line with a delimiter -> ``csv``; else ``text``.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pcapwire.errors import PcapwireError
from pcapwire.hashlist.digests import ALGORITHM_BY_BYTES, ALGORITHMS, is_digest, parse_digest

if TYPE_CHECKING:
    from pcapwire.hashlist.limits import Budget

_HEX_LENGTHS = frozenset((32, 40, 64))

FORMATS: tuple[str, ...] = ("auto", "text", "csv", "nsrl", "rds3")
#: Longest label kept per entry (characters); longer ones are cut.
MAX_LABEL_CHARS = 200
#: Text lines read between two checks of the import's budget (time limit, cancel): a
#: mask, every 65,536 lines (a few milliseconds).
BUDGET_CHECK_MASK = 0xFFFF
SQLITE_MAGIC = b"SQLite format 3\x00"
GZIP_MAGIC = b"\x1f\x8b"
NSRL_HEADER = ("SHA-1", "MD5", "CRC32", "FileName", "FileSize", "ProductCode",
               "OpSystemCode", "SpecialCode")
LABEL_COLUMNS = ("signature", "family", "malware", "threat", "name", "filename",
                 "description", "comment")
_HASH_COLUMN = re.compile(r"(file)?(hash)?(md5|sha1|sha256)(hash|sum|digest|value)?")
_DELIMITERS = (",", ";", "\t", "|")


class HashListError(PcapwireError):
    """A hash-list file or operation that cannot go ahead at all (a wrong format, an
    unreadable file, no hash column, a name already taken); bad lines are not errors of
    this kind but :class:`BadLine` entries of the import report. ``code`` is the stable
    name the API answers with."""

    code = "invalid_hashlist"


@dataclass(frozen=True)
class BadLine:
    """One line (or SQLite row, ``unit="row"``) that was skipped, and why."""

    file: str
    line: int
    message: str
    unit: str = "line"

    def __str__(self) -> str:
        if self.unit == "row":
            return f"{self.file}: FILE row {self.line}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "unit": self.unit,
                "message": self.message}


@dataclass
class Source:
    """One file to read. ``shown`` names it in errors (the API shows the upload's name,
    never a server path)."""

    path: Path
    shown: str = ""
    format: str = "auto"
    columns: tuple[str, ...] = ()
    label_column: str | None = None
    algorithms: frozenset[str] = frozenset(ALGORITHMS)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.shown = self.shown or str(self.path)
        if self.format not in FORMATS:
            raise HashListError(f"unknown format {self.format!r}; use one of "
                                f"{', '.join(FORMATS)}")
        unknown = set(self.algorithms) - set(ALGORITHMS)
        if unknown or not self.algorithms:
            raise HashListError(f"algorithms must be a non-empty subset of "
                                f"{', '.join(ALGORITHMS)}")


Bad = Callable[[BadLine], None]


@dataclass
class Reader:
    """Iterate to get ``(digest, label)``; ``records`` counts lines/rows that held data,
    ``skipped`` digests of algorithms not asked for; ``format``, ``columns`` and
    ``label_column`` say how the file was read. ``budget`` bounds and cancels the read of
    an RDSv3 file (default: :class:`~pcapwire.hashlist.limits.ImportLimits`)."""

    source: Source
    bad: Bad
    format: str = ""
    columns: list[str] = field(default_factory=list)
    label_column: str | None = None
    records: int = 0
    skipped: int = 0
    budget: Budget | None = None

    def __iter__(self) -> Iterator[tuple[bytes, str | None]]:
        fmt = self.source.format
        if fmt == "auto":
            fmt = detect(self.source.path)
        self.format = fmt
        if fmt == "rds3":
            return self._rds3()
        if fmt == "text":
            return self._text()
        return self._csv(nsrl=fmt == "nsrl")

    def keep(self, digest: bytes) -> bool:
        if ALGORITHM_BY_BYTES[len(digest)] in self.source.algorithms:
            return True
        self.skipped += 1
        return False

    def error(self, line: int, message: str, unit: str = "line") -> None:
        self.bad(BadLine(self.source.shown, line, message, unit))

    # ---- text -----------------------------------------------------------------------------
    def _text(self) -> Iterator[tuple[bytes, str | None]]:
        every = self.source.algorithms == frozenset(ALGORITHMS)
        fromhex = bytes.fromhex
        with open_text(self.source) as fh:
            for n, line in enumerate(fh, 1):
                if not n & BUDGET_CHECK_MASK and self.budget is not None:
                    self.budget.check(self.source.shown)
                s = line.strip()
                if not s or s[0] == "#":
                    continue
                self.records += 1
                if len(s) in _HEX_LENGTHS:  # the common line: just a digest
                    try:
                        digest = fromhex(s)
                    except ValueError:
                        digest = b""
                    if len(digest) * 2 == len(s):
                        if every or self.keep(digest):
                            yield digest, None
                        continue
                token, *rest = s.split(None, 1)
                try:
                    digest = parse_digest(token)
                except ValueError as exc:
                    self.error(n, str(exc))
                    continue
                if every or self.keep(digest):
                    yield digest, _label(rest[0].lstrip("*")) if rest else None

    # ---- csv and NSRL RDS 2.x ------------------------------------------------------------
    def _csv(self, nsrl: bool) -> Iterator[tuple[bytes, str | None]]:
        with open_text(self.source) as fh:
            lines = _CountingLines(fh, self)
            first, comment = lines.first_data_line()
            if first is None:
                return
            delimiter = max(_DELIMITERS, key=first.count) if not nsrl else ","
            header_line = lines.number
            rows = csv.reader(lines.rest(first), delimiter=delimiter)
            try:
                head = next(rows)
            except csv.Error as exc:
                raise HashListError(f"{self.source.shown}:{header_line}: unreadable CSV "
                                    f"header: {exc}") from None
            if nsrl:
                cols, label, data_first = self._nsrl_header(head, header_line)
            else:
                cols, label, data_first = self._csv_header(head, comment, delimiter,
                                                           header_line)
            self.columns = [name for _, name in cols]
            self.label_column = label[1] if label else None
            if data_first:
                yield from self._row(head, header_line, cols, label)
            while True:
                try:
                    row = next(rows)
                except StopIteration:
                    return
                except csv.Error as exc:
                    self.records += 1
                    self.error(lines.number, f"unreadable CSV: {exc}")
                    continue
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if row[0].lstrip().startswith("#"):
                    continue
                yield from self._row(row, lines.number, cols, label)

    def _row(self, row: list[str], line: int, cols: list[tuple[int, str]],
             label: tuple[int, str] | None) -> Iterator[tuple[bytes, str | None]]:
        self.records += 1
        text = _label(row[label[0]]) if label and label[0] < len(row) else None
        found = problems = 0
        for idx, name in cols:
            value = row[idx].strip() if idx < len(row) else ""
            if not value:
                continue
            try:
                digest = parse_digest(value)
            except ValueError as exc:
                problems += 1
                self.error(line, f"column {name!r}: {exc}")
                continue
            found += 1
            if self.keep(digest):
                yield digest, text
        if not found and not problems:
            self.error(line, f"no hash in column(s) {', '.join(n for _, n in cols)}")

    def _nsrl_header(self, head: list[str], line: int
                     ) -> tuple[list[tuple[int, str]], tuple[int, str] | None, bool]:
        names = [h.strip() for h in head]
        if "SHA-1" not in names or "MD5" not in names:
            raise HashListError(
                f"{self.source.shown}:{line}: not an NSRL RDS 2.x NSRLFile.txt: its header "
                f"must be {','.join(repr(h) for h in NSRL_HEADER)} (found "
                f"{','.join(names[:8])!r}); for RDSv3 use the .db file (format rds3)")
        return [(names.index("SHA-1"), "SHA-1"), (names.index("MD5"), "MD5")], None, False

    def _csv_header(self, head: list[str], comment: str | None, delimiter: str, line: int
                    ) -> tuple[list[tuple[int, str]], tuple[int, str] | None, bool]:
        """(hash columns, label column, whether ``head`` is data rather than a header)."""
        names = [h.strip() for h in head]
        wanted = self.source.columns
        if wanted:
            cols = _named(names, wanted)
            if cols is None and comment is not None:
                commented = _parse_comment_header(comment, delimiter)
                cols = _named(commented, wanted)
                if cols is not None:
                    return cols, self._label(commented), True
            if cols is None and all(w.isascii() and w.isdigit() for w in wanted):
                cols = [(int(w) - 1, f"#{w}") for w in wanted if int(w) >= 1]
                return cols, self._label(names) if self.source.label_column else None, True
            if cols is None:
                raise HashListError(
                    f"{self.source.shown}:{line}: no column named "
                    f"{', '.join(repr(w) for w in wanted)}; the header has "
                    f"{', '.join(repr(n) for n in names[:30])} (or give 1-based column "
                    "numbers for a file without a header)")
            return cols, self._label(names), False
        cols = _hash_columns(names)
        if cols:
            return cols, self._label(names), False
        if comment is not None:
            commented = _parse_comment_header(comment, delimiter)
            cols = _hash_columns(commented)
            if cols:
                return cols, self._label(commented), True
        digests = [(i, f"#{i + 1}") for i, v in enumerate(names) if is_digest(v)]
        if digests:
            return digests, None, True
        raise HashListError(
            f"{self.source.shown}:{line}: no hash column found: the header has "
            f"{', '.join(repr(n) for n in names[:30])}; name the column(s) with --column "
            "(API: column=)")

    def _label(self, names: list[str]) -> tuple[int, str] | None:
        wanted = self.source.label_column
        if wanted:
            norm = [_norm(n) for n in names]
            if _norm(wanted) in norm:
                i = norm.index(_norm(wanted))
                return i, names[i]
            if wanted.isascii() and wanted.isdigit() and int(wanted) >= 1:
                return int(wanted) - 1, f"#{wanted}"
            raise HashListError(f"{self.source.shown}: no label column {wanted!r}; the "
                                f"header has {', '.join(repr(n) for n in names[:30])}")
        norm = [_norm(n) for n in names]
        for cand in LABEL_COLUMNS:
            if cand in norm:
                i = norm.index(cand)
                return i, names[i]
        return None

    # ---- RDSv3 (SQLite) -------------------------------------------------------------------
    def _rds3(self) -> Iterator[tuple[bytes, str | None]]:
        from pcapwire.hashlist import rds3  # imports this module

        return rds3.read(self)


class _CountingLines:
    """Lines of a text file with their 1-based numbers, skipping leading blank and ``#``
    lines (the last such comment is kept: it may be a commented-out header)."""

    def __init__(self, fh: IO[str], reader: Reader) -> None:
        self.fh = fh
        self.number = 0
        self.reader = reader

    def _check(self) -> None:
        budget = self.reader.budget
        if not self.number & BUDGET_CHECK_MASK and budget is not None:
            budget.check(self.reader.source.shown)

    def first_data_line(self) -> tuple[str | None, str | None]:
        comment = None
        for line in self.fh:
            self.number += 1
            self._check()
            s = line.strip()
            if not s:
                continue
            if s.startswith("#"):
                comment = s
                continue
            return line, comment
        return None, comment

    def rest(self, first: str) -> Iterator[str]:
        yield first
        for line in self.fh:
            self.number += 1
            self._check()
            yield line


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _hash_columns(names: list[str]) -> list[tuple[int, str]]:
    return [(i, n) for i, n in enumerate(names)
            if _HASH_COLUMN.fullmatch(_norm(n)) or _norm(n) in ("hash", "digest", "filehash")]


def _named(names: list[str], wanted: tuple[str, ...]) -> list[tuple[int, str]] | None:
    norm = [_norm(n) for n in names]
    out = []
    for w in wanted:
        if _norm(w) not in norm:
            return None
        i = norm.index(_norm(w))
        out.append((i, names[i]))
    return out


def _parse_comment_header(comment: str, delimiter: str) -> list[str]:
    text = comment.lstrip("#").strip()
    try:
        row = next(csv.reader([text], delimiter=delimiter))
    except (csv.Error, StopIteration):
        return []
    return [c.strip() for c in row]


def _label(text: str) -> str | None:
    text = text.strip()
    return text[:MAX_LABEL_CHARS] if text else None


def open_text(source: Source) -> IO[str]:
    """The file as text (UTF-8, BOM dropped, undecodable bytes replaced), decompressed
    when it is gzip."""
    try:
        raw: IO[bytes] = open(source.path, "rb")  # noqa: SIM115 - returned, closed by caller
    except OSError as exc:
        raise HashListError(f"{source.shown}: cannot read: {exc.strerror or exc}") from None
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        raw = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
    else:
        raw.seek(0)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def detect(path: Path) -> str:
    """The format of a file, from its first bytes (see the module docstring)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except OSError as exc:
        raise HashListError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head.startswith(SQLITE_MAGIC):
        return "rds3"
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as gz:
                head = gz.read(65536)
        except (OSError, EOFError) as exc:
            raise HashListError(f"{path}: damaged gzip: {exc}") from None
        if head.startswith(SQLITE_MAGIC):
            raise HashListError(f"{path}: a gzip-compressed SQLite database; decompress it "
                                "first (gunzip) and import the .db file")
    text = head.decode("utf-8-sig", errors="replace")
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.replace(" ", "").upper().startswith('"SHA-1","MD5"'):
            return "nsrl"
        first = s.split(None, 1)[0]
        if is_digest(first):
            return "text"
        return "csv" if any(d in s for d in _DELIMITERS) else "text"
    return "text"
