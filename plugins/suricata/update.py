"""Rule maintenance: check rule files with the real Suricata (errors by file and line) and
build a rule set with ``suricata-update`` from local sources, offline, or remote sources
when the network allows.

``suricata-update`` adds Emerging Threats Open whenever no source URL is given, which
cannot work offline; a local-only update therefore passes one empty ``file://`` source so
that only the local files (and the distribution's rules in /etc/suricata/rules) are used.
Nothing is written outside the given output and cache directories.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pcapwire.errors import ConfigError
from pcapwire.plugins.suricata.config import SuricataSettings, build_config
from pcapwire.plugins.suricata.ruleload import RuleLoadLog
from pcapwire.plugins.suricata.rulesources import Sources

log = logging.getLogger(__name__)

#: Seconds ``suricata -T`` may take to load a rule set.
CHECK_TIMEOUT_S = 300.0
#: Seconds ``suricata-update`` may take (downloads included).
UPDATE_TIMEOUT_S = 900.0
_WRITING = re.compile(r"Writing rules to (?P<path>\S+): total: (?P<total>\d+); "
                      r"enabled: (?P<enabled>\d+)")
_ERROR = re.compile(r"<Error> -- (?P<msg>.*)$")


def check_rules(rule_paths: list[str], *, binary: str = "suricata",
                base_config: str | None = None) -> RuleLoadLog:
    """Load the rules with ``suricata -T`` and the plugin's own configuration."""
    kw = {"rules": rule_paths, "binary": binary}
    if base_config:
        kw["base_config"] = base_config
    settings = SuricataSettings.from_mapping(kw)
    exe = settings.resolve_binary()
    files = settings.rule_files()
    rule_log = RuleLoadLog()
    with tempfile.TemporaryDirectory(prefix="pcapwire-rulecheck-") as tmp:
        config = Path(tmp) / "suricata.yaml"
        config.write_text(build_config(settings, Path(tmp), Path(tmp) / "eve.sock", files))
        try:
            proc = subprocess.run([exe, "-T", "-c", str(config), "-l", tmp],
                                  capture_output=True, text=True, check=False,
                                  timeout=CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"suricata -T did not finish within {CHECK_TIMEOUT_S:g} s") \
                from None
    for line in (proc.stdout + proc.stderr).splitlines():
        rule_log.feed(line)
    return rule_log


@dataclass
class UpdateResult:
    rules_file: Path
    total: int
    enabled: int
    returncode: int
    output: str
    errors: list[str] = field(default_factory=list)
    sources: Sources | None = None


#: ``confs`` keys of :func:`update_rules` (suricata-update's ``--KIND-conf`` options).
CONF_KINDS = ("enable", "disable", "modify")


def update_rules(output_dir: Path, cache_dir: Path, *, local: list[str], urls: list[str],
                 etopen: bool = False, suricata_conf: str = "/etc/suricata/suricata.yaml",
                 test: bool = True, offline: bool = False,
                 confs: Mapping[str, Path] | None = None) -> UpdateResult:
    """Run ``suricata-update`` into ``output_dir`` (one merged ``suricata.rules``).

    ``confs`` names the enable/disable/modify files (rule groups write them); without
    them suricata-update reads none (not even /etc/suricata's). The result's ``sources``
    says what was given and which files were loaded (:mod:`.rulesources`)."""
    exe = shutil.which("suricata-update")
    if exe is None:
        raise ConfigError("suricata-update not found; install the Debian package "
                          "'suricata-update' (scripts/setup.sh does)")
    for path in local:
        if not Path(path).exists():
            raise ConfigError(f"local rule source {path!r} does not exist")
    output_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    argv = [exe, "update", "-D", str(cache_dir), "-o", str(output_dir), "--no-reload",
            "--suricata-conf", suricata_conf, "-c", str(cache_dir / "update.yaml")]
    (cache_dir / "update.yaml").write_text("# pcapwire: every setting is on the command line\n")
    sources = list(urls)
    if not sources and not etopen:
        placeholder = cache_dir / "pcapwire-no-remote-source.rules"
        placeholder.write_text("")
        sources.append(placeholder.resolve().as_uri())
    for url in sources:
        argv += ["--url", url]
    for path in local:
        argv += ["--local", str(Path(path).resolve())]
    if etopen:
        argv.append("--etopen")
    if offline:
        argv.append("--offline")
    if not test:
        argv.append("--no-test")
    for kind in CONF_KINDS:
        conf = (confs or {}).get(kind)
        if conf is None:
            conf = cache_dir / f"pcapwire-empty-{kind}.conf"
            conf.write_text("")
        argv += [f"--{kind}-conf", str(conf)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=UPDATE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"suricata-update did not finish within {UPDATE_TIMEOUT_S:g} s") \
            from None
    text = proc.stdout + proc.stderr
    errors = [m["msg"] for m in map(_ERROR.search, text.splitlines()) if m]
    written = _WRITING.search(text)
    total = int(written["total"]) if written else 0
    enabled = int(written["enabled"]) if written else 0
    sources = Sources.from_output(text, local=[str(Path(p).resolve()) for p in local],
                                  urls=list(urls), etopen=etopen,
                                  suricata_conf=suricata_conf)
    return UpdateResult(output_dir / "suricata.rules", total, enabled, proc.returncode, text,
                        errors, sources)
