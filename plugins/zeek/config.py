"""Zeek settings (the workflow step's ``with:`` block) and the run's generated script.

Zeek is not packaged for Debian, so the binary comes from the step's ``binary`` setting or
``PATH``; without one the step's result is one clear error (:data:`NOT_FOUND`).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pcapwire.errors import ConfigError
from pcapwire.records import SEVERITIES

#: Seconds Zeek may take, after the end of its input, to finish its logs and exit.
FINISH_TIMEOUT_S = 300.0
LOG_FORMATS = ("json", "tsv")
NOT_FOUND = ("zeek not found; set the step's 'binary' to the zeek executable or put zeek on "
             "PATH (Zeek is not packaged for Debian: see https://zeek.org/get-zeek)")
#: A script is a Zeek package/script path (``policy/frameworks/...``, ``local``) or a file.
_SCRIPT = re.compile(r"^[A-Za-z0-9_./@+-]+$")
#: A redef target: a Zeek identifier with module qualifiers (``Site::local_nets``).
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$")
#: Arguments the runner sets itself.
RESERVED_ARGS = frozenset({"-r", "-i", "-w", "--readfile", "--iface", "--writefile"})


@dataclass(frozen=True)
class ZeekSettings:
    binary: str = "zeek"
    scripts: tuple[str, ...] = ()
    redefs: Mapping[str, str] = field(default_factory=dict)
    intel_files: tuple[str, ...] = ()
    log_format: str = "json"
    args: tuple[str, ...] = ()
    finish_timeout: float = FINISH_TIMEOUT_S
    notice_severity: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None, base_dir: Path | None = None
                     ) -> ZeekSettings:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"zeek: unknown setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(known))}")
        out: dict[str, Any] = {}
        for key, value in cfg.items():
            if key in ("scripts", "intel_files", "args"):
                items = [value] if isinstance(value, str) else value
                if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                    raise ConfigError(f"zeek: '{key}' must be a string or a list of strings")
                if key == "intel_files" and base_dir is not None:
                    items = [p if Path(p).is_absolute() else str(base_dir / p) for p in items]
                out[key] = tuple(items)
            elif key in ("redefs", "notice_severity"):
                if not isinstance(value, Mapping) or not all(
                        isinstance(k, str) and isinstance(v, str | int | float | bool)
                        for k, v in value.items()):
                    raise ConfigError(f"zeek: '{key}' must map names to values")
                out[key] = {k: str(v) for k, v in value.items()}
            elif key == "finish_timeout":
                if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                    raise ConfigError("zeek: 'finish_timeout' must be a positive number of "
                                      "seconds")
                out[key] = float(value)
            elif key == "log_format":
                if value not in LOG_FORMATS:
                    raise ConfigError(f"zeek: 'log_format' must be one of "
                                      f"{', '.join(LOG_FORMATS)}")
                out[key] = value
            else:
                if not isinstance(value, str) or not value:
                    raise ConfigError(f"zeek: '{key}' must be a non-empty string")
                out[key] = value
        settings = cls(**out)
        settings.validate()
        return settings

    def validate(self) -> None:
        for script in self.scripts:
            if not _SCRIPT.match(script):
                raise ConfigError(f"zeek: script {script!r} is not a Zeek script path")
        for name, value in self.redefs.items():
            if not _IDENT.match(name):
                raise ConfigError(f"zeek: redef target {name!r} is not a Zeek identifier")
            if "\n" in value or ";" in value:
                raise ConfigError(f"zeek: redef value for {name} must be one expression "
                                  "(no ';' or newline)")
        for path in self.intel_files:
            if not Path(path).is_file():
                raise ConfigError(f"zeek: intel file {path!r} does not exist")
            if '"' in path or "\\" in path:
                raise ConfigError(f"zeek: intel file path {path!r} has a quote or backslash")
        for note, sev in self.notice_severity.items():
            if sev not in SEVERITIES:
                raise ConfigError(f"zeek: notice_severity for {note}: {sev!r} is not one of "
                                  f"{', '.join(SEVERITIES)}")
        for arg in self.args:
            if arg.split("=", 1)[0] in RESERVED_ARGS:
                raise ConfigError(f"zeek: argument {arg!r} is set by the runner itself")

    def resolve_binary(self) -> str | None:
        return shutil.which(self.binary)

    def script_text(self) -> str:
        """The run's ``pcapwire.zeek``: scripts to load, redefs, log format, intel files."""
        lines = ["# generated by pcapwire for one run"]
        lines += [f"@load {s}" for s in self.scripts]
        if self.intel_files:
            lines.append("@load frameworks/intel/seen")
            files = ", ".join(f'"{p}"' for p in self.intel_files)
            lines.append(f"redef Intel::read_files += {{ {files} }};")
        if self.log_format == "json":
            lines.append("redef LogAscii::use_json = T;")
        lines += [f"redef {name} = {value};" for name, value in self.redefs.items()]
        return "\n".join(lines) + "\n"
