"""Which rule files make a data directory's rule set, so that rule groups are read from
the files suricata-update merges (the merged ``suricata.rules`` no longer says which file
a rule came from).

``pcapwire rules update`` records, in ``<data-dir>/suricata-update/sources.json``, its
sources (``--local`` paths, ``--url`` sources, ``--etopen``, the suricata.yaml) and the
files suricata-update said it loaded: local files, the distribution's rule files, and the
remote sources (kept in suricata-update's cache as downloaded: an archive or one file).
A later run (a group enabled or disabled) repeats the same sources offline.

A data directory without that record has a rule set of hand-placed files: the ``*.rules``
in ``<data-dir>/rules/``, read as they are.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import tarfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pcapwire.errors import ConfigError

#: suricata-update's state directory in a data directory (``-D``).
STATE_DIR = "suricata-update"
SOURCES_FILE = "sources.json"
#: The merged rule set ``pcapwire rules update`` writes, in ``<data-dir>/rules/``.
MERGED_RULES = "suricata.rules"
#: File patterns suricata-update skips by default (its ``ignore`` setting).
IGNORED = ("*deleted.rules",)
#: Largest member of a cached rule archive that is read (bytes).
MAX_MEMBER_BYTES = 256 * 2**20
_LOCAL = re.compile(r"Loading local file (?P<path>.+?)\s*$")
_DIST = re.compile(r"Loading distribution rule file (?P<path>.+?)\s*$")
_FETCH = re.compile(r"(?:Fetching |Using latest cached version of rule file: )"
                    r"(?P<url>\S+?)\.?\s*$")


@dataclass
class Sources:
    """What one ``suricata-update`` run was given and what it loaded."""

    local: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    etopen: bool = False
    suricata_conf: str = "/etc/suricata/suricata.yaml"
    loaded_local: list[str] = field(default_factory=list)
    loaded_dist: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)

    @classmethod
    def from_output(cls, output: str, **given: object) -> Sources:
        """The files a run loaded, from suricata-update's log lines."""
        out = cls(**given)  # type: ignore[arg-type]
        for line in output.splitlines():
            for pattern, target in ((_LOCAL, out.loaded_local), (_DIST, out.loaded_dist),
                                    (_FETCH, out.fetched)):
                m = pattern.search(line)
                if m:
                    value = m.groupdict().get("path") or m["url"]
                    if value not in target:
                        target.append(value)
                    break
        return out


def state_dir(data_dir: Path) -> Path:
    return data_dir / STATE_DIR


def record(data_dir: Path, sources: Sources) -> None:
    path = state_dir(data_dir) / SOURCES_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(sources), indent=1) + "\n")
    os.replace(tmp, path)


def recorded(data_dir: Path) -> Sources | None:
    """The last update's sources, or None when ``pcapwire rules update`` never ran here."""
    path = state_dir(data_dir) / SOURCES_FILE
    try:
        raw = json.loads(path.read_text())
        return Sources(**raw)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a sources record written by 'pcapwire rules update' "
                          f"({exc}); run 'pcapwire rules update' again") from None


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(os.path.basename(name), p) for p in IGNORED)


def cache_file(data_dir: Path, url: str) -> Path:
    """Where suricata-update keeps the download of ``url`` (its ``get_tmp_filename``)."""
    digest = hashlib.md5(url.encode(), usedforsecurity=False).hexdigest()
    base = os.path.basename(url).split("?", 1)[0]
    return state_dir(data_dir) / "update" / "cache" / f"{digest}-{base}"


def _remote(data_dir: Path, url: str) -> list[tuple[str, str, bytes]]:
    """The rule files of one cached source as suricata-update names them
    (``<md5(url)>/<member>``)."""
    path = cache_file(data_dir, url)
    prefix = hashlib.md5(url.encode(), usedforsecurity=False).hexdigest()
    files: list[tuple[str, bytes]] = []
    if not path.is_file():
        raise ConfigError(f"the cached copy of rule source {url} is missing ({path}); run "
                          "'pcapwire rules update' with the network")
    if tarfile.is_tarfile(path):
        with tarfile.open(path, mode="r:*") as tf:
            for member in tf:
                if member.isfile() and member.size <= MAX_MEMBER_BYTES:
                    fh = tf.extractfile(member)
                    if fh is not None:
                        files.append((member.name.lstrip("/"), fh.read()))
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir() and info.file_size <= MAX_MEMBER_BYTES:
                    files.append((info.filename.lstrip("/"), zf.read(info)))
    else:
        base = path.name.split("-", 1)[1]
        files.append((base if base.endswith(".rules") else f"{base}.rules",
                      path.read_bytes()))
    return [(f"{prefix}/{name}", f"{prefix}/{name}", data) for name, data in files
            if name.endswith(".rules") and not _ignored(name)]


def rule_files(data_dir: Path) -> tuple[bool, list[tuple[str, str, bytes]]]:
    """(managed by suricata-update, ``(name, group, bytes)`` of every rule file) in the
    order suricata-update reads them (sorted by name)."""
    sources = recorded(data_dir)
    entries: list[tuple[str, str, bytes]] = []
    if sources is None:
        rules_dir = data_dir / "rules"
        paths = sorted(p for p in rules_dir.glob("*.rules") if p.is_file()) \
            if rules_dir.is_dir() else []
        return False, [(str(p), str(p), p.read_bytes()) for p in paths]
    for url in sources.fetched:
        entries.extend(_remote(data_dir, url))
    for name in [*sources.loaded_local, *sources.loaded_dist]:
        if _ignored(name):
            continue
        try:
            entries.append((name, name, Path(name).read_bytes()))
        except OSError as exc:
            raise ConfigError(f"rule source {name}: {exc.strerror}; run 'pcapwire rules "
                              "update' again") from None
    return True, sorted(entries, key=lambda e: e[0])
