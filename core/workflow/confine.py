"""Confinement of workflows that come from outside the server (the REST API).

A workflow an operator puts in ``pcapwire serve --workflows DIR`` or runs with the CLI is
trusted like any other configuration file. A workflow *posted* by an API caller is not:
whatever its ``with:`` blocks name must stay inside that tenant's own directories and
must never choose what runs on the server. The rules, enforced here in the core for every
analyzer (not by each plugin):

* Each ``with:`` option declares what it is (``option(kind=...)``):
  ``"path"`` a file or directory the analyzer reads, ``"glob"`` a file, directory or glob
  pattern (a list of them for ``list[str]``), ``"server"`` something only the server's
  configuration may set (a program, engine arguments or settings, scripts, where output
  is written, an outbound URL, an environment variable's name), ``"text"`` plain data.
  Numbers, booleans and ``Literal`` choices need no declaration.
* A confined workflow may not change a ``"server"`` option, nor any string option whose
  kind the analyzer did not declare (a third-party analyzer that says nothing about an
  option is not trusted with it).
* ``"path"``/``"glob"`` values resolve against the tenant's workflow directory,
  ``{data_dir}`` is the tenant's directory, and the *real* path (symbolic links resolved)
  must lie inside one of the :attr:`Confinement.roots`; otherwise the same message is
  given whether or not the path exists, so nothing outside can be probed. Globs and
  directories are walked without following symbolic links, a link that leads out of the
  roots is refused, and walks are bounded (entries visited, files named, bytes).
* The values are replaced by the resolved absolute paths (globs by the files they match)
  before the analyzer sees them; analyzers that read further files named *inside* a file
  (YARA's ``include``) ask :meth:`Confinement.allows` for each.

No message produced here quotes a file's contents.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import stat
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pcapwire.errors import ConfigError

#: Files one ``path``/``glob`` option may name after directories and globs are expanded.
MAX_CONFINED_FILES = 1_000
#: Largest single file a confined option may name (bytes).
MAX_CONFINED_FILE_BYTES = 16 * 2**20
#: All files named by the options of one confined step, together (bytes).
MAX_CONFINED_TOTAL_BYTES = 64 * 2**20
#: Directory entries one directory walk or glob may visit before it is refused.
MAX_CONFINED_WALK_ENTRIES = 20_000
#: Deepest directory level a walk or ``**`` glob descends to below its starting directory.
MAX_CONFINED_WALK_DEPTH = 16

OptionKind = Literal["path", "glob", "server", "text"]
OPTION_KINDS: tuple[str, ...] = typing.get_args(OptionKind)
_GLOB_CHARS = "*?["
DATA_DIR_PLACEHOLDER = "{data_dir}"


class OutsideRoots(ConfigError):
    """A path that resolves outside the confinement roots (or cannot be resolved)."""


@dataclass(frozen=True)
class Confinement:
    """Where a confined workflow may read: ``roots`` (real, absolute directories);
    relative paths start at ``base_dir``; ``{data_dir}`` is ``data_dir``."""

    roots: tuple[Path, ...]
    base_dir: Path
    data_dir: Path | None = None

    @classmethod
    def for_tenant(cls, tenant_root: Path) -> Confinement:
        """A tenant's ``workflows/`` (where relative paths start) and ``rules/``."""
        roots = tuple(Path(os.path.realpath(tenant_root / d)) for d in ("workflows", "rules"))
        return cls(roots=roots, base_dir=roots[0], data_dir=Path(os.path.realpath(tenant_root)))

    def to_dict(self) -> dict[str, Any]:
        return {"roots": [str(r) for r in self.roots], "base_dir": str(self.base_dir),
                "data_dir": str(self.data_dir) if self.data_dir else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Confinement:
        return cls(roots=tuple(Path(r) for r in data["roots"]), base_dir=Path(data["base_dir"]),
                   data_dir=Path(data["data_dir"]) if data.get("data_dir") else None)

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.roots)

    def allows(self, path: Path | str) -> bool:
        """Whether the real path of ``path`` lies inside a root."""
        try:
            real = os.path.realpath(path, strict=False)
        except (OSError, ValueError):
            return False
        return any(real == str(r) or real.startswith(str(r) + os.sep) for r in self.roots)

    def resolve(self, text: str, option: str) -> Path:
        """The real absolute path of ``text`` (a ``with:`` value), inside the roots."""
        if "\0" in text or not text:
            raise OutsideRoots(f"{option}: not a usable path")
        if DATA_DIR_PLACEHOLDER in text:
            if self.data_dir is None:
                raise OutsideRoots(f"{option}: {DATA_DIR_PLACEHOLDER} is not available here")
            text = text.replace(DATA_DIR_PLACEHOLDER, str(self.data_dir))
        p = Path(text)
        if not p.is_absolute():
            p = self.base_dir / p
        if not self.allows(p):
            raise OutsideRoots(f"{option}: {text!r} is outside this tenant's workflow and rule "
                               f"directories; a workflow submitted through the API reads only "
                               f"files inside them (relative paths start in workflows/)")
        return Path(os.path.realpath(p))

    # ---- expansion ------------------------------------------------------------------------
    def expand(self, text: str, option: str, budget: _Budget) -> list[str]:
        """``text`` as real absolute paths: a file or a directory as itself (a directory's
        tree checked for links out of the roots), a glob as the sorted files it matches."""
        if any(ch in text for ch in _GLOB_CHARS):
            return [str(p) for p in self._glob(text, option, budget)]
        path = self.resolve(text, option)
        try:
            st = path.stat()
        except OSError:
            return [str(path)]  # the analyzer reports a missing file in its own words
        if stat.S_ISDIR(st.st_mode):
            for f in self._walk(path, option, budget, depth_limit=MAX_CONFINED_WALK_DEPTH):
                budget.file(f, option)
        elif stat.S_ISREG(st.st_mode):
            budget.file(path, option, st.st_size)
        else:
            raise OutsideRoots(f"{option}: {text!r} is neither a file nor a directory")
        return [str(path)]

    def _glob(self, text: str, option: str, budget: _Budget) -> list[Path]:
        if DATA_DIR_PLACEHOLDER in text and self.data_dir is not None:
            text = text.replace(DATA_DIR_PLACEHOLDER, str(self.data_dir))
        parts = Path(text).parts
        fixed = next(i for i, part in enumerate(parts) if any(c in part for c in _GLOB_CHARS))
        start = self.resolve(str(Path(*parts[:fixed])) if fixed else ".", option)
        pattern = parts[fixed:]
        if ".." in pattern:
            raise OutsideRoots(f"{option}: '..' is not allowed after a glob character")
        out: list[Path] = []
        depth = MAX_CONFINED_WALK_DEPTH if "**" in pattern else len(pattern) - 1
        for f in self._walk(start, option, budget, depth_limit=depth):
            rel = f.relative_to(start)
            if _matches(rel.parts, pattern):
                budget.file(f, option)
                out.append(f)
        if not out:
            raise ConfigError(f"{option}: {text!r} matches no file")
        return sorted(out)

    def _walk(self, top: Path, option: str, budget: _Budget, depth_limit: int
              ) -> typing.Iterator[Path]:
        """Regular files below ``top``, never following a link to a directory; a link
        leading out of the roots is refused."""
        stack = [(top, 0)]
        while stack:
            directory, depth = stack.pop()
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                budget.visit(option)
                path = Path(entry.path)
                if entry.is_symlink():
                    if not self.allows(path):
                        raise OutsideRoots(f"{option}: {path.relative_to(top)} under "
                                           f"{top.name}/ is a link out of this tenant's "
                                           "directories")
                    if entry.is_file():
                        yield Path(os.path.realpath(path))
                    continue  # links to directories are not followed
                if entry.is_dir(follow_symlinks=False):
                    if depth < depth_limit:
                        stack.append((path, depth + 1))
                elif entry.is_file(follow_symlinks=False):
                    yield path


def _matches(names: tuple[str, ...], pat: tuple[str, ...]) -> bool:
    """Glob match of a relative path, segment by segment; ``**`` matches zero or more
    directories."""

    def go(i: int, j: int) -> bool:
        if j == len(pat):
            return i == len(names)
        if pat[j] == "**":
            return any(go(k, j + 1) for k in range(i, len(names) + 1))
        return i < len(names) and fnmatch.fnmatchcase(names[i], pat[j]) and go(i + 1, j + 1)

    return go(0, 0)


class _Budget:
    """What one confined step may name: files, bytes, directory entries visited."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.bytes = 0
        self.entries = 0

    def visit(self, option: str) -> None:
        self.entries += 1
        if self.entries > MAX_CONFINED_WALK_ENTRIES:
            raise ConfigError(f"{option}: more than MAX_CONFINED_WALK_ENTRIES="
                              f"{MAX_CONFINED_WALK_ENTRIES} directory entries to look through; "
                              "name the files or a smaller directory")

    def file(self, path: Path, option: str, size: int | None = None) -> None:
        key = str(path)
        if key in self.files:
            return
        if size is None:
            try:
                size = path.stat().st_size
            except OSError:
                return
        if size > MAX_CONFINED_FILE_BYTES:
            raise ConfigError(f"{option}: {path.name} is larger than MAX_CONFINED_FILE_BYTES="
                              f"{MAX_CONFINED_FILE_BYTES} ({size} bytes)")
        self.files.add(key)
        self.bytes += size
        if len(self.files) > MAX_CONFINED_FILES:
            raise ConfigError(f"{option}: more than MAX_CONFINED_FILES={MAX_CONFINED_FILES} "
                              "files")
        if self.bytes > MAX_CONFINED_TOTAL_BYTES:
            raise ConfigError(f"{option}: the files named add up to more than "
                              f"MAX_CONFINED_TOTAL_BYTES={MAX_CONFINED_TOTAL_BYTES} bytes")


# ---- options -------------------------------------------------------------------------------
def needs_kind(tp: Any) -> bool:
    """Whether a field of this type can carry a string that could name something (str,
    containers of str, ``Any``); numbers, booleans and ``Literal`` choices cannot."""
    if tp is Any or tp is str:
        return True
    origin = get_origin(tp)
    if origin is Literal:
        return False
    return any(needs_kind(a) for a in get_args(tp))


def confine_config(config_cls: type, with_: dict[str, Any], confinement: Confinement
                   ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``with_`` with every ``path``/``glob`` value resolved inside the roots, and the
    problems as ``(key, message)``: server-only options changed, undeclared string options
    set, paths outside the roots, limits exceeded."""
    if not dataclasses.is_dataclass(config_cls):
        return dict(with_), []
    hints = typing.get_type_hints(config_cls)
    out = dict(with_)
    problems: list[tuple[str, str]] = []
    budget = _Budget()
    for f in dataclasses.fields(config_cls):
        if f.name not in with_:
            continue
        kind = f.metadata.get("kind")
        value = with_[f.name]
        if kind == "server":
            default = (f.default if f.default is not dataclasses.MISSING
                       else f.default_factory() if f.default_factory is not dataclasses.MISSING
                       else None)
            if value != default:
                problems.append((f.name, f"{f.name!r} is set by the server's configuration, "
                                 "not by a workflow submitted through the API"))
        elif kind in ("path", "glob"):
            items = value if isinstance(value, list) else [value]
            try:
                expanded = [p for item in items
                            for p in _expand(confinement, str(item), f.name, budget, kind)]
            except ConfigError as exc:
                problems.append((f.name, str(exc)))
                continue
            out[f.name] = expanded if isinstance(value, list) else expanded[0]
        elif kind is None and needs_kind(hints[f.name]):
            problems.append((f.name, f"the analyzer does not declare what {f.name!r} is "
                             "(option(kind=...)): a workflow submitted through the API may "
                             "not set it"))
    return out, problems


def _expand(confinement: Confinement, value: str, option: str, budget: _Budget,
            kind: str) -> list[str]:
    if kind == "path" and any(ch in value for ch in _GLOB_CHARS):
        raise ConfigError(f"{option}: globs are not accepted here; name a file or directory")
    return confinement.expand(value, option, budget)
