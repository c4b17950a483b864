"""What the atheris harnesses of pcapwire's Python parsers share (fuzz_http.py,
fuzz_mime.py, fuzz_smtp.py): the input layout of a two-direction session, the corpus
directory with its seeds, a libFuzzer dictionary, and the run itself.

A session input is ``MODE ORIG [SEP RESP]``: MODE (one byte) picks the piece sizes each
direction is fed in and whether a gap is reported; ORIG is what the client sent, RESP
(after the first SEP) what the server sent. Seeds are written in that layout, so a corpus
file is readable as a conversation.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import atheris

SEP = b"\n--8<--server--8<--\n"
#: piece sizes a direction is fed in (0: whole)
PIECES = (0, 1, 2, 3, 7, 13, 64, 512)


@dataclass(frozen=True)
class KnownIssue:
    """A finding of these harnesses that is not fixed yet (the parsers are not ours to
    change here): tolerated so that the bounded run in scripts/test.sh gates NEW findings,
    and reproduced by tests/test_fuzz_findings.py, a strict xfail that turns into a failure
    -- "remove the entry" -- once the parser is fixed."""

    name: str
    exc_type: type[BaseException]
    message: str  # a substring of the exception's message
    raised_in: tuple[str, ...]  # functions (module.function), one of them on the traceback
    description: str


KNOWN_ISSUES: tuple[KnownIssue, ...] = ()  # fixed: see tests/test_fuzz_findings.py


def known_issue(exc: BaseException) -> KnownIssue | None:
    """The known issue ``exc`` is an instance of, if any."""
    frames = {f"{fs.filename}:{fs.name}" for fs in traceback.extract_tb(exc.__traceback__)}
    for issue in KNOWN_ISSUES:
        if not isinstance(exc, issue.exc_type) or issue.message not in str(exc):
            continue
        for where in issue.raised_in:
            module, _, func = where.rpartition(".")
            path = module.replace("pcapwire.", "core/", 1).replace(".", "/") + ".py"
            if any(f.endswith(f"{path}:{func}") for f in frames):
                return issue
    return None


def tolerating_known_issues(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    def run_one(data: bytes) -> None:
        try:
            target(data)
        except Exception as exc:
            if known_issue(exc) is None:
                raise
    return run_one


def split_session(data: bytes) -> tuple[int, bytes, bytes]:
    """(mode, orig, resp) of a session input."""
    if not data:
        return 0, b"", b""
    orig, _, resp = data[1:].partition(SEP)
    return data[0], orig, resp


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    if size <= 0 or size >= len(data):
        if data:
            yield data
        return
    for i in range(0, len(data), size):
        yield data[i:i + size]


def interleave(orig: bytes, resp: bytes, mode: int) -> list[tuple[str, bytes]]:
    """Both directions cut into pieces (sizes from MODE's low 6 bits), alternating, each
    direction in order -- as TCP reassembly hands them over."""
    a = list(pieces(orig, PIECES[mode & 7]))
    b = list(pieces(resp, PIECES[(mode >> 3) & 7]))
    out: list[tuple[str, bytes]] = []
    for i in range(max(len(a), len(b))):
        if i < len(a):
            out.append(("orig", a[i]))
        if i < len(b):
            out.append(("resp", b[i]))
    return out


def run(name: str, test_one_input: Callable[[bytes], None], seeds: dict[str, bytes],
        dictionary: list[bytes]) -> None:
    """libFuzzer's command line (flags, then corpus directories or input files); without a
    directory the corpus is $TMPDIR/pcapwire-fuzz-NAME-corpus. The first corpus directory
    gets the seeds; ``-dict`` defaults to DICTIONARY."""
    args = list(sys.argv)
    dirs = [a for a in args[1:] if not a.startswith("-")]
    if not dirs:
        dirs = [str(Path(tempfile.gettempdir()) / f"pcapwire-fuzz-{name}-corpus")]
        args.append(dirs[0])
    first = Path(dirs[0])
    if not first.is_file():  # a file: run that input (e.g. a crash) and exit
        first.mkdir(parents=True, exist_ok=True)
        for seed, blob in seeds.items():
            (first / f"seed-{seed}").write_bytes(blob)
    if dictionary and not any(a.startswith("-dict=") for a in args):
        d = Path(tempfile.gettempdir()) / f"pcapwire-fuzz-{name}.dict"
        d.write_text("".join('"' + "".join(f"\\x{b:02x}" for b in tok) + '"\n'
                             for tok in dictionary))
        args.insert(1, f"-dict={d}")
    atheris.Setup(args, tolerating_known_issues(test_one_input))
    atheris.Fuzz()
