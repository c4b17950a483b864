"""``pcapwire retention status [--json]``, ``retention run [--dry-run] [--json]``,
``retention set KEY=VALUE…``: the store's retention policy (``store.toml``) and its
effect. A run deletes now what the policy says (each segment one line), as the
background loop beside ``capture`` and ``serve`` does every ``interval``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from pcapwire import custody
from pcapwire.cli import EXIT_OK
from pcapwire.errors import ConfigError
from pcapwire.retention import enforce, status
from pcapwire.store import Store
from pcapwire.store import config as store_config

KEYS = ("high_watermark", "low_watermark", "max_age", "flow_max_age", "interval", "when_full")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retention", help="the retention policy: status, run now, set",
        description="Retention deletes whole sealed segments, oldest first, above the high "
        "watermark until the low one and past max_age; never held, open or in-place data. "
        "Flow rows stay (marked packets expired) until flow_max_age.")
    p.add_argument("action", choices=("status", "run", "set"))
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE",
                   help=f"set: {', '.join(KEYS)} (an empty value removes the key)")
    p.add_argument("--dry-run", action="store_true", help="run: only say what would go")
    p.add_argument("--json", action="store_true", help="status, run: as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.settings and args.action != "set":
        raise ConfigError(f"retention {args.action} takes no KEY=VALUE (that is `retention "
                          "set`)")
    if args.dry_run and args.action != "run":
        raise ConfigError("--dry-run goes with `retention run`")
    if args.action == "set":
        return _set(args)
    with Store.existing(args.data_dir) as store:
        config = store_config.load(store.root)
        if args.action == "status":
            doc = status(store, config)
            print(json.dumps(doc, indent=1, sort_keys=True) if args.json else _status_text(doc))
            return EXIT_OK
        report = enforce(store, config.retention, dry=args.dry_run, wait=True,
                         actor=custody.actor_cli())
    out = report.to_dict()
    if args.json:
        print(json.dumps(out, indent=1))
        return EXIT_OK
    verb = "would delete" if args.dry_run else "deleted"
    for row in out["segments"]:
        print(f"{verb} {row['path']} (id {row['id']}, {row['packets']} packets, "
              f"{row['bytes']} bytes, {_when(row['first_ns'])} to {_when(row['last_ns'])}): "
              f"{row['reason']}")
    print(f"{out['deleted_segments']} segment(s), {out['deleted_bytes']} bytes {verb}"
          + (f"; {out['flows_deleted']} flow row(s) past flow_max_age deleted"
             if out["flows_deleted"] else ""))
    if report.alarm:
        print(f"ALARM: {report.alarm_reason}", file=sys.stderr)
    return EXIT_OK


def _set(args: argparse.Namespace) -> int:
    if not args.settings:
        raise ConfigError(f"retention set KEY=VALUE…: one or more of {', '.join(KEYS)}")
    with Store.existing(args.data_dir) as store:
        root = store.root
    raw = store_config.load(root).raw
    section = dict(raw.get("retention", {}))
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"retention set: {item!r} is not KEY=VALUE with KEY one of "
                              f"{', '.join(KEYS)}")
        if value.strip():
            section[key] = value
        else:
            section.pop(key, None)
    config = store_config.save(root, {**raw, "retention": section})
    print(json.dumps(store_config.describe(config)["retention"], indent=1))
    return EXIT_OK


def _when(ns: int | None) -> str:
    if ns is None:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns / 1e9))
    return f"{stamp}.{ns % 10**9 // 10**6:03d}Z"


def _status_text(doc: dict[str, Any]) -> str:
    p, lines = doc["policy"], []
    marks = (f"high {p['high_watermark']}, low {p['low_watermark']}"
             if p["high_watermark"] is not None else "no watermarks")
    ages = (f"max_age {p['max_age_s']} s" if p["max_age_s"] is not None else "no max_age")
    flows = (f"flow_max_age {p['flow_max_age_s']} s" if p["flow_max_age_s"] is not None
             else "flow rows kept for ever")
    lines.append(f"policy: {marks}; {ages}; {flows}; every {p['interval_s']} s; when full: "
                 f"{p['when_full']}")
    usage = doc["usage"]
    if usage is not None:
        shown = (f"{usage['used_percent']}% of the file system" if usage["kind"] == "percent"
                 else f"{usage['used_bytes']} bytes stored")
        lines.append(f"usage: {shown} ({usage['used_bytes']} bytes; high mark "
                     f"{usage['high_bytes']}, low mark {usage['low_bytes']})")
    kept = doc["kept"]
    lines.append(f"kept: {kept['segments']} segment(s), {kept['packets']} packets, "
                 f"{_when(kept['oldest_ns'])} to {_when(kept['newest_ns'])}")
    lines.append(f"deletable: {doc['deletable']['segments']} segment(s), "
                 f"{doc['deletable']['bytes']} bytes")
    prot = ", ".join(f"{k} {v['segments']} ({v['bytes']} bytes)"
                     for k, v in doc["protected"].items() if v["segments"])
    lines.append(f"protected: {prot or 'none'}")
    exp = doc["expired"]
    lines.append(f"expired: {exp['segments']} segment(s), {exp['packets']} packets, "
                 f"{exp['bytes']} bytes, {_when(exp['oldest_ns'])} to "
                 f"{_when(exp['newest_ns'])}; flows: {exp['flows_all']} with all packets "
                 f"expired, {exp['flows_partly']} with some")
    if doc["alarm"]:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["alarm_since"] or 0))
        lines.append(f"ALARM since {since}: {doc['alarm_reason']}")
    lines += [f"warning: {w}" for w in doc["warnings"]]
    return "\n".join(lines)
