"""Suricata settings (the workflow step's ``with:`` block) and the per-engine suricata.yaml.

The generated configuration starts from the distribution's own ``suricata.yaml`` (so
app-layer defaults, address groups and limits are exactly what ``suricata -r`` by hand
uses), then replaces only what the plugin must own: the outputs (alerts as EVE to the
engine's unix socket; the metadata types as EVE to a file, see :func:`eve_types`), the
log directory, the rule files, the command socket (off, so engines never collide) and
stats (off; with checksum validation on, only the final totals, see :data:`STATS_EVE`).
The step's ``set:`` overrides come last.

Thresholds (``threshold_file``): the ``threshold.config`` that ``pcapwire rules group
threshold`` writes beside the merged rules (:data:`THRESHOLD_FILE`) is used by default
whenever it sits in the directory of the step's rule files; a step may name another file.
Without one, Suricata's own default applies (its base configuration's ``threshold-file``).

Checksums (``checksum_validation``): captured traffic is not validated by default
(Suricata's ``-k none``). A host with checksum offload hands its capture packets whose
TCP/UDP checksums the NIC would have filled in later; Suricata's own default validates
them, ignores the "invalid" ones, and the capture gives no alert. ``yes`` (``-k all``)
and ``auto`` (Suricata's default: ``pcap-file.checksum-checks`` of the base config)
validate; the engine then reports how many packets Suricata counted with an invalid
checksum (its ``tcp.invalid_checksum`` counter, from the final stats).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from pcapwire.errors import ConfigError

DEFAULT_BASE_CONFIG = "/etc/suricata/suricata.yaml"
#: The threshold file looked for beside the rule files when ``threshold_file`` is not set.
THRESHOLD_FILE = "threshold.config"
#: Seconds an engine may take from spawn to "rules loaded, reading input".
START_TIMEOUT_S = 120.0
#: Seconds an engine may take, after the end of its input, to finish and exit.
FINISH_TIMEOUT_S = 300.0
#: EVE event types the plugin asks for (alerts become verdicts, the rest metadata).
DEFAULT_EVE_TYPES: tuple[Any, ...] = (
    {"alert": {"tagged-packets": False, "metadata": True}},
    {"anomaly": {"enabled": True}},
    {"http": {"extended": True}},
    "dns",
    {"tls": {"extended": True}},
    {"files": {"force-magic": False}},
    "smtp",
)
#: File (in the engine's log directory) Suricata writes the metadata EVE records to.
METADATA_EVE = "eve-metadata.json"
#: TLS fields logged when JA3/JA4 is on: Suricata 7's ``extended`` set plus the fingerprints
#: (``extended`` alone omits JA4, so the tls logger gets an explicit ``custom`` list).
TLS_CUSTOM_FIELDS = ("subject", "issuer", "session_resumed", "serial", "fingerprint", "sni",
                     "version", "not_before", "not_after", "ja3", "ja3s", "ja4")
#: Command-line options the engine sets itself; a step cannot pass them in ``args``.
RESERVED_ARGS = frozenset({"-c", "-r", "-l", "-S", "-s", "-i", "-T", "--unix-socket",
                           "--pcap", "--af-packet", "--pidfile", "-D", "--daemon",
                           "--pcap-file-continuous", "--user", "--group"})
ON_RULE_ERROR = ("fail", "warn")
#: ``checksum_validation`` values and the ``-k`` argument each passes to Suricata
#: (``auto``: none, Suricata decides from its configuration).
CHECKSUM_VALIDATION: dict[str, tuple[str, ...]] = {
    "no": ("-k", "none"), "yes": ("-k", "all"), "auto": ()}
#: File (in the engine's log directory) the final stats go to when checksums are
#: validated: one EVE ``stats`` record (totals) at exit, and one per
#: :data:`STATS_INTERVAL_S` before it (none in practice).
STATS_EVE = "eve-stats.json"
STATS_INTERVAL_S = 86400
#: What rules may not do in an engine the plugin starts (a step's ``set:`` may change it):
#: run Lua scripts, write dataset files, name dataset files by absolute or ``..`` path.
RULE_SAFETY = {"security.lua.allow-rules": False,
               "datasets.rules.allow-write": False,
               "datasets.rules.allow-absolute-filenames": False}


def _str_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"suricata: '{key}' must be a string or a list of strings")
    return list(value)


@dataclass(frozen=True)
class SuricataSettings:
    """What a workflow step may configure (unknown keys are errors)."""

    binary: str = "suricata"
    rules: tuple[str, ...] = ()
    base_config: str = DEFAULT_BASE_CONFIG
    set: Mapping[str, Any] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    eve_types: tuple[Any, ...] = DEFAULT_EVE_TYPES
    ja3: bool = False
    ja4: bool = False
    start_timeout: float = START_TIMEOUT_S
    finish_timeout: float = FINISH_TIMEOUT_S
    on_rule_error: str = "fail"
    warm_spares: int = 1
    checksum_validation: str = "no"
    threshold_file: str = ""

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None, base_dir: Path | None = None
                     ) -> SuricataSettings:
        """Validate a ``with:`` block; relative rule paths resolve against ``base_dir``."""
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"suricata: unknown setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        out: dict[str, Any] = {}
        for key, value in cfg.items():
            if key in ("rules", "args"):
                items = _str_list(value, key)
                if key == "rules" and base_dir is not None:
                    items = [str(base_dir / p) if not Path(p).is_absolute() else p
                             for p in items]
                out[key] = tuple(items)
            elif key == "set":
                if not isinstance(value, Mapping):
                    raise ConfigError("suricata: 'set' must map suricata.yaml keys to values")
                out[key] = dict(value)
            elif key == "eve_types":
                if not isinstance(value, list):
                    raise ConfigError("suricata: 'eve_types' must be a list")
                out[key] = tuple(value)
            elif key in ("ja3", "ja4"):
                if not isinstance(value, bool):
                    raise ConfigError(f"suricata: '{key}' must be true or false")
                out[key] = value
            elif key in ("start_timeout", "finish_timeout"):
                if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                    raise ConfigError(f"suricata: '{key}' must be a positive number of seconds")
                out[key] = float(value)
            elif key == "warm_spares":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ConfigError("suricata: 'warm_spares' must be an integer >= 0")
                out[key] = value
            elif key == "on_rule_error":
                if value not in ON_RULE_ERROR:
                    raise ConfigError(f"suricata: 'on_rule_error' must be one of "
                                      f"{', '.join(ON_RULE_ERROR)}")
                out[key] = value
            elif key == "checksum_validation":
                if value not in CHECKSUM_VALIDATION:
                    raise ConfigError(f"suricata: 'checksum_validation' must be one of "
                                      f"{', '.join(CHECKSUM_VALIDATION)}")
                out[key] = value
            elif key == "threshold_file":
                if not isinstance(value, str):
                    raise ConfigError("suricata: 'threshold_file' must be a path (or '' for "
                                      f"the {THRESHOLD_FILE} beside the rule files)")
                out[key] = str(base_dir / value) if value and base_dir is not None \
                    and not Path(value).is_absolute() else value
            else:
                if not isinstance(value, str) or not value:
                    raise ConfigError(f"suricata: '{key}' must be a non-empty string")
                out[key] = value
        settings = cls(**out)
        settings.check_args()
        return settings

    def check_args(self) -> None:
        for arg in self.args:
            name = arg.split("=", 1)[0]
            if name in RESERVED_ARGS:
                raise ConfigError(f"suricata: argument {arg!r} is set by the engine itself; "
                                  "use 'rules' and 'set' instead")

    def checksum_mode(self) -> str:
        """``no``, ``yes`` or ``auto``: ``checksum_validation``, unless ``args`` carries
        Suricata's own ``-k`` (``-k none``, ``-k all``), which wins."""
        for i, arg in enumerate(self.args):
            if arg.startswith("-k"):
                value = arg[2:].lstrip("=") or (self.args[i + 1] if i + 1 < len(self.args)
                                                 else "")
                return {"none": "no", "all": "yes"}.get(value, "auto")
        return self.checksum_validation

    def checksum_args(self) -> list[str]:
        """The ``-k`` arguments for ``checksum_validation`` (none when ``args`` has one)."""
        if any(arg.startswith("-k") for arg in self.args):
            return []
        return list(CHECKSUM_VALIDATION[self.checksum_validation])

    def resolve_binary(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise ConfigError(f"suricata not found: {self.binary!r} is not an executable on "
                              "PATH; install Suricata (scripts/setup.sh) or set the step's "
                              "'binary'")
        return found

    def rule_files(self) -> list[Path]:
        """Every rule file, in order: files as given, directories as their sorted ``*.rules``."""
        out: list[Path] = []
        for item in self.rules:
            path = Path(item).expanduser()
            if path.is_dir():
                out.extend(sorted(p.resolve() for p in path.glob("*.rules") if p.is_file()))
            elif path.is_file():
                out.append(path.resolve())
            else:
                raise ConfigError(f"suricata: rule path {item!r} does not exist (a .rules file "
                                  "or a directory of them)")
        for path in out:
            if any(ch in str(path) for ch in "*?["):
                raise ConfigError(f"suricata: rule path {str(path)!r} contains a glob "
                                  "character, which suricata.yaml would expand; rename it")
        return out

    def threshold_path(self) -> Path | None:
        """``threshold_file``, or else the :data:`THRESHOLD_FILE` in the directory of the
        rule files (None when there is none)."""
        if self.threshold_file:
            path = Path(self.threshold_file).expanduser()
            if not path.is_file():
                raise ConfigError(f"suricata: threshold_file {self.threshold_file!r} does not "
                                  "exist")
            return path.resolve()
        found = sorted({p.parent / THRESHOLD_FILE for p in self.rule_files()
                        if (p.parent / THRESHOLD_FILE).is_file()})
        if len(found) > 1:
            raise ConfigError(f"suricata: the rule files' directories hold {len(found)} "
                              f"{THRESHOLD_FILE} files ({', '.join(map(str, found))}); "
                              "Suricata takes one: set 'threshold_file'")
        return found[0] if found else None

    def fingerprint(self) -> str:
        """Changes when anything that shapes a loaded engine changes (rule file contents too)."""
        h = hashlib.sha256()
        h.update(repr((self.binary, self.base_config, sorted(self.set.items(), key=str),
                       self.args, self.eve_types, self.ja3, self.ja4,
                       self.checksum_validation)).encode())
        threshold = self.threshold_path()
        for path in [*self.rule_files(), *([threshold] if threshold else [])]:
            st = path.stat()
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        base = Path(self.base_config)
        if base.exists():
            st = base.stat()
            h.update(f"{st.st_size}\0{st.st_mtime_ns}".encode())
        return h.hexdigest()


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DumperBase = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_DumperBase):  # type: ignore[misc,valid-type]
    """Suricata reads an empty value where PyYAML would write ``null``."""


_Dumper.add_representer(type(None),
                        lambda d, _v: d.represent_scalar("tag:yaml.org,2002:null", ""))


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(cfg, "app-layer.protocols.tls.ja3-fingerprints", True)``.

    Numeric parts index lists (``outputs.0.eve-log.enabled``)."""
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"suricata: 'set' key {dotted!r}: {part!r} is not an index of "
                                  f"the list at {'.'.join(parts[:i]) or '(top)'}")
            idx = int(part)
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"suricata: 'set' key {dotted!r}: {'.'.join(parts[:i])} is a "
                              "value, not a section")
        if last:
            node[part] = value
        else:
            if not isinstance(node.get(part), dict | list):
                node[part] = {}
            node = node[part]


def _type_name(item: Any) -> str:
    return next(iter(item)) if isinstance(item, Mapping) else str(item)


def eve_types(settings: SuricataSettings) -> tuple[list[Any], list[Any]]:
    """(types streamed to the plugin's socket, types Suricata writes to the metadata file).

    Only alerts cross into Python (they become verdicts the moment they fire); the
    metadata types go straight to ``METADATA_EVE`` in Suricata's own EVE format, so an
    event-heavy capture costs the plugin nothing per event."""
    types = [dict(t) if isinstance(t, Mapping) else t for t in settings.eve_types]
    if settings.ja3 or settings.ja4:
        for i, item in enumerate(types):
            if _type_name(item) == "tls":
                types[i] = {"tls": {"custom": list(TLS_CUSTOM_FIELDS)}}
    streamed = [t for t in types if _type_name(t) == "alert"]
    written = [t for t in types if _type_name(t) != "alert"]
    return streamed, written


def load_base_config(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_Loader)  # a SafeLoader (libyaml when present)
    except FileNotFoundError:
        raise ConfigError(f"suricata: base config {path!r} not found; install Suricata or set "
                          "'base_config'") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"suricata: base config {path!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"suricata: base config {path!r} is not a YAML mapping")
    return data


def build_config(settings: SuricataSettings, log_dir: Path, eve_socket: Path,
                 rule_files: list[Path]) -> str:
    """The text of the engine's suricata.yaml."""
    cfg = load_base_config(settings.base_config)
    cfg["default-log-dir"] = str(log_dir)
    streamed, written = eve_types(settings)
    cfg["outputs"] = [{"eve-log": {
        "enabled": True, "filetype": "unix_stream", "filename": str(eve_socket),
        "types": streamed or [{"alert": {"tagged-packets": False}}],
    }}]
    if written:
        cfg["outputs"].append({"eve-log": {
            "enabled": True, "filetype": "regular", "filename": str(log_dir / METADATA_EVE),
            "types": written,
        }})
    logging_cfg = cfg.setdefault("logging", {})
    logging_cfg["default-log-level"] = "info"  # the rule summary lines are info
    logging_cfg["outputs"] = [{"console": {"enabled": True}}]
    cfg["unix-command"] = {"enabled": False}
    cfg["stats"] = {"enabled": False}
    if settings.checksum_mode() != "no":
        # The final counters only (invalid checksums): Suricata keeps its counters either
        # way; this logs their totals once, at exit (the interval is never reached).
        cfg["stats"] = {"enabled": True, "interval": STATS_INTERVAL_S}
        cfg["outputs"].append({"eve-log": {
            "enabled": True, "filetype": "regular", "filename": str(log_dir / STATS_EVE),
            "types": [{"stats": {"totals": True, "threads": False, "deltas": False}}],
        }})
    cfg["default-rule-path"] = str(log_dir)
    cfg["rule-files"] = [str(p) for p in rule_files]
    threshold = settings.threshold_path()
    if threshold is not None:
        cfg["threshold-file"] = str(threshold)
    for key, value in RULE_SAFETY.items():
        set_dotted(cfg, key, value)
    if settings.ja3:
        set_dotted(cfg, "app-layer.protocols.tls.ja3-fingerprints", True)
    if settings.ja4:
        set_dotted(cfg, "app-layer.protocols.tls.ja4-fingerprints", True)
    for key, value in settings.set.items():
        set_dotted(cfg, str(key), value)
    return "%YAML 1.1\n---\n" + yaml.dump(cfg, Dumper=_Dumper, sort_keys=False)
