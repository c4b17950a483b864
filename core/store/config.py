"""A store's own settings: ``<data-dir>/store.toml`` (optional; every value has a default).

::

    [retention]
    high_watermark = "90%"      # start deleting above this: a percent of the filesystem,
    low_watermark = "80%"       # ... and stop at this; or a byte budget ("500 GiB", "64 MiB")
    max_age = "30d"             # packets older than this go regardless of space ("" = none)
    flow_max_age = "365d"       # flow rows of expired packets are kept this long ("" = for ever)
    interval = "10s"            # how often the background loop checks (capture, serve)
    when_full = "drop"          # only held data left and the disk full: "drop" new packets
                                # (counted, alarmed); "stop" the recorder

    [compression]
    policy = "never"            # "on-seal", "after-age" or "never"
    after_age = "1d"            # with "after-age": segments whose last packet is this old
    level = 3                   # zstd level
    frame_bytes = "1 MiB"       # uncompressed bytes per independently readable frame

Both watermarks must be of one kind (percent or bytes) and ``low <= high``. Errors name
the file, the key and what is allowed; a TOML syntax error carries its line and column.
:func:`save` writes the file back (``pcapwire retention set``, the API's policy route)
atomically.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pcapwire.errors import ConfigError

CONFIG_FILE = "store.toml"
COMPRESSION_POLICIES = ("never", "on-seal", "after-age")
WHEN_FULL = ("drop", "stop")
#: Bounds: below MIN_INTERVAL_S the loop would spin, a frame must hold a record.
MIN_INTERVAL_S = 0.05
MIN_FRAME_BYTES = 64 * 2**10
MAX_FRAME_BYTES = 64 * 2**20

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40,
          "tib": 2**40}
_DURATION = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_bytes(value: str | int, what: str) -> int:
    """``"64 MiB"``, ``"1.5G"``, ``4096`` -> bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: a size such as '64 MiB', not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{what}: a size of 0 bytes or more, not {value}")
        return value
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if m is None or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"{what}: a size such as '64 MiB', '500 GiB' or a number of bytes, "
                          f"not {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_duration(value: str | int | float, what: str) -> float | None:
    """``"30d"``, ``"12h"``, ``"90s"``, ``"500ms"``, seconds as a number; ``""`` -> None."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: a duration such as '30d', not {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{what}: a duration of 0 or more, not {value}")
        return float(value)
    if not str(value).strip():
        return None
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)\s*", str(value))
    if m is None:
        raise ConfigError(f"{what}: a duration such as '500ms', '90s', '12h', '30d' or '2w', "
                          f"not {value!r}")
    return float(m.group(1)) * _DURATION[m.group(2)]


@dataclass(frozen=True)
class Watermark:
    """A percent of the filesystem (``percent``) or a byte budget (``bytes``)."""

    percent: float | None = None
    bytes: int | None = None

    @classmethod
    def parse(cls, value: str | int, what: str) -> Watermark:
        text = str(value).strip()
        if text.endswith("%"):
            try:
                pct = float(text[:-1])
            except ValueError:
                pct = -1.0
            if not 0 < pct <= 100:
                raise ConfigError(f"{what}: a percent above 0 and at most 100, not {value!r}")
            return cls(percent=pct)
        return cls(bytes=parse_bytes(value, what))

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.bytes} B"


@dataclass(frozen=True)
class RetentionPolicy:
    high_watermark: Watermark | None = None  # None: no space limit
    low_watermark: Watermark | None = None
    max_age_s: float | None = None
    flow_max_age_s: float | None = None
    interval_s: float = 10.0
    when_full: str = "drop"


@dataclass(frozen=True)
class CompressionPolicy:
    policy: str = "never"
    after_age_s: float = 86400.0
    level: int = 3
    frame_bytes: int = 2**20


@dataclass(frozen=True)
class StoreConfig:
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    compression: CompressionPolicy = field(default_factory=CompressionPolicy)
    #: the values as written in the file (what :func:`save` writes back)
    raw: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)


def config_path(root: str | os.PathLike[str]) -> Path:
    return Path(root) / CONFIG_FILE


def load(root: str | os.PathLike[str]) -> StoreConfig:
    """The store's settings; defaults when ``store.toml`` does not exist."""
    path = config_path(root)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return StoreConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message carries line and column
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(raw, str(path))


def from_dict(raw: dict[str, Any], where: str) -> StoreConfig:
    """Check and convert the settings (``where`` names their origin in errors)."""
    unknown = set(raw) - {"retention", "compression"}
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}; known: "
                          "retention, compression")
    ret = _section(raw, "retention", where, {"high_watermark", "low_watermark", "max_age",
                                             "flow_max_age", "interval", "when_full"})
    comp = _section(raw, "compression", where, {"policy", "after_age", "level",
                                                "frame_bytes"})
    return StoreConfig(_retention(ret, where), _compression(comp, where),
                       {k: dict(v) for k, v in raw.items()})


def _section(raw: dict[str, Any], name: str, where: str, keys: set[str]) -> dict[str, Any]:
    sec = raw.get(name, {})
    if not isinstance(sec, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    unknown = set(sec) - keys
    if unknown:
        raise ConfigError(f"{where}: [{name}] has unknown key(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(keys))}")
    return sec


def _retention(sec: dict[str, Any], where: str) -> RetentionPolicy:
    def key(k: str) -> str:
        return f"{where}: retention.{k}"

    high = (Watermark.parse(sec["high_watermark"], key("high_watermark"))
            if "high_watermark" in sec else None)
    low = Watermark.parse(sec["low_watermark"], key("low_watermark")) \
        if "low_watermark" in sec else high
    if (high is None) != (low is None):
        raise ConfigError(f"{key('low_watermark')}: needs a high_watermark as well")
    if high is not None and low is not None:
        if (high.percent is None) != (low.percent is None):
            raise ConfigError(f"{key('low_watermark')}: both watermarks are percents or both "
                              "are byte budgets")
        if (low.percent or low.bytes or 0) > (high.percent or high.bytes or 0):
            raise ConfigError(f"{key('low_watermark')}: {low} is above the high watermark "
                              f"{high}")
    interval = parse_duration(sec.get("interval", 10), key("interval"))
    if interval is None or interval < MIN_INTERVAL_S:
        raise ConfigError(f"{key('interval')}: at least {MIN_INTERVAL_S} s")
    when_full = sec.get("when_full", "drop")
    if when_full not in WHEN_FULL:
        raise ConfigError(f"{key('when_full')}: one of {', '.join(WHEN_FULL)}, not "
                          f"{when_full!r}")
    return RetentionPolicy(high, low, parse_duration(sec.get("max_age", ""), key("max_age")),
                           parse_duration(sec.get("flow_max_age", ""), key("flow_max_age")),
                           interval, when_full)


def _compression(sec: dict[str, Any], where: str) -> CompressionPolicy:
    policy = sec.get("policy", "never")
    if policy not in COMPRESSION_POLICIES:
        raise ConfigError(f"{where}: compression.policy: one of "
                          f"{', '.join(COMPRESSION_POLICIES)}, not {policy!r}")
    after = parse_duration(sec.get("after_age", "1d"), f"{where}: compression.after_age")
    level = sec.get("level", 3)
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 19:
        raise ConfigError(f"{where}: compression.level: an integer from 1 to 19, not {level!r}")
    frame = parse_bytes(sec.get("frame_bytes", 2**20), f"{where}: compression.frame_bytes")
    if not MIN_FRAME_BYTES <= frame <= MAX_FRAME_BYTES:
        raise ConfigError(f"{where}: compression.frame_bytes: between "
                          f"{MIN_FRAME_BYTES // 2**10} KiB and {MAX_FRAME_BYTES // 2**20} MiB")
    return CompressionPolicy(policy, after or 0.0, level, frame)


def save(root: str | os.PathLike[str], raw: dict[str, dict[str, Any]]) -> StoreConfig:
    """Check ``raw`` (sections of plain values), then write it as ``store.toml``
    atomically; returns what it now says."""
    path = config_path(root)
    config = from_dict(raw, str(path))
    lines: list[str] = []
    for section in ("retention", "compression"):
        values = raw.get(section) or {}
        if not values:
            continue
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return config


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    s = str(v)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def describe(config: StoreConfig) -> dict[str, Any]:
    """The effective settings as JSON-ready values (status output, the API)."""
    r, c = config.retention, config.compression
    return {"retention": {f.name: (str(getattr(r, f.name)) if isinstance(
                getattr(r, f.name), Watermark) else getattr(r, f.name)) for f in fields(r)},
            "compression": asdict(c)}
