"""``pcapwire trigger create|edit|list|show|matches|pause|resume|abort|delete|run``: standing
questions over the store (:mod:`pcapwire.triggers`): a hunt through history, then a watch
on what arrives, one result set.

Rules come from files (``--suricata-rules FILE``; the trigger keeps their *text*),
indicators from STIX 2.1, MISP or text files (``--indicators FILE``, a bad line stops the
command unless ``--skip-bad``: then the rest imports and the exit code is 1) and from
options (``--ip``, ``--domain`` …). A webhook's HMAC key comes from an environment variable
(``--webhook-secret-env VAR``), never from the command line, and is never printed.
``edit`` takes the same options: each one given replaces that part of the definition (all
the indicators, all the workflows, all the targets), a new version and hunt follow when
what decides the results changed. Every command prints JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pcapwire import custody
from pcapwire.cli import EXIT_OK, EXIT_PARTIAL
from pcapwire.cli.signals import stopped_by_signals
from pcapwire.errors import ConfigError
from pcapwire.store import Store
from pcapwire.triggers import pivot, views
from pcapwire.triggers.db import Trigger, TriggerDB
from pcapwire.triggers.indicators import FORMATS, ImportResult, load_indicator_file, merge
from pcapwire.triggers.model import INDICATOR_KINDS, Indicators, from_dict

#: How often --wait shows the hunt's progress.
PROGRESS_S = 1.0
# Indicator options: --ip → "ips" …
INDICATOR_OPTIONS = {"ip": "ips", "domain": "domains", "url": "urls", "ja3": "ja3",
                     "ja4": "ja4", "sha256": "sha256", "md5": "md5", "sha1": "sha1"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trigger", help="triggers: hunt through history, then watch new "
                       "traffic", description=__doc__.split("\n\n")[0])
    cmds = p.add_subparsers(dest="trigger_command", required=True, metavar="ACTION")

    c = cmds.add_parser("create", help="a new trigger; its hunt over history is queued")
    c.add_argument("name")
    _definition_options(c)
    c.add_argument("--wait", action="store_true", help="run the hunt now, in the foreground, "
                   "showing its progress")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_create)

    e = cmds.add_parser("edit", help="change a trigger: a new version (and hunt) when its "
                        "rules, indicators or scope change")
    e.add_argument("name")
    e.add_argument("--rename", metavar="NEW", help="a new name")
    _definition_options(e)
    e.add_argument("--no-notify", action="store_true", help="remove every target")
    e.add_argument("--no-workflows", action="store_true", help="run no workflow")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=run_edit)

    ls = cmds.add_parser("list", help="triggers with state, hunt status, progress, matches")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=run_list)

    sh = cmds.add_parser("show", help="definition (no secrets), versions, hunts with "
                         "progress, ETA and failed units")
    sh.add_argument("name")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=run_show)

    m = cmds.add_parser("matches", help="the result set (hunt and watch), oldest first")
    m.add_argument("name")
    m.add_argument("--version", type=int, metavar="N", help="only what version N found")
    m.add_argument("--diff", type=int, metavar="N", help="what version N found that N-1 "
                   "did not (new) and what N-1 found that N does not (gone)")
    m.add_argument("--after", type=int, default=0, metavar="ID", help="matches after this id")
    m.add_argument("--limit", type=int, default=1000)
    m.add_argument("--json", action="store_true", help="one JSON object per line (--diff: "
                   "one object)")
    m.set_defaults(func=run_matches)

    for action, text in (("pause", "pause the hunt and stop the watch"),
                         ("resume", "resume the hunt and the watch"),
                         ("abort", "abort the current hunt (the watch goes on)"),
                         ("delete", "delete the trigger (hunt and watch end)")):
        a = cmds.add_parser(action, help=text)
        a.add_argument("name")
        a.add_argument("--json", action="store_true")
        a.set_defaults(func=run_control, action=action)

    r = cmds.add_parser("run", help="run the store's hunts, watches and notifications in "
                        "the foreground (what `pcapwire serve` does per tenant)")
    r.add_argument("--workflows", action="append", default=[], metavar="DIR", type=Path,
                   help="where the triggers' workflows are loaded from (as serve --workflows)")
    r.set_defaults(func=run_service)


def _definition_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to look for")
    g.add_argument("--definition", metavar="FILE", help="a JSON definition (as the API "
                   "takes it); the options below add to it")
    g.add_argument("--suricata-rules", metavar="FILE", help="Suricata rules (their text is "
                   "kept)")
    g.add_argument("--yara-rules", metavar="FILE", help="YARA rules (their text is kept)")
    g.add_argument("--bpf", metavar="EXPR", help="packets matching this BPF")
    g.add_argument("--indicators", action="append", default=[], metavar="FILE",
                   help="indicator file (repeat); STIX 2.1 bundle, MISP event JSON or text")
    g.add_argument("--format", choices=FORMATS, default="auto",
                   help="of the --indicators files (default: detected)")
    g.add_argument("--skip-bad", action="store_true", help="import the good entries of an "
                   "indicator file with bad ones (they are listed; exit code 1)")
    for opt, kind in INDICATOR_OPTIONS.items():
        g.add_argument(f"--{opt}", action="append", default=[], dest=f"ind_{kind}",
                       metavar="VALUE", help=f"{kind} indicator (repeat)")
    s = p.add_argument_group("scope")
    s.add_argument("--start", metavar="T", help="ISO 8601 or Unix seconds")
    s.add_argument("--end", metavar="T", help="ISO 8601 or Unix seconds")
    s.add_argument("--scope-bpf", metavar="EXPR", help="only packets matching this BPF")
    s.add_argument("--sensor", metavar="NAME", help="only this sensor's traffic")
    a = p.add_argument_group("on a match")
    a.add_argument("--workflow", action="append", default=[], metavar="NAME",
                   help="workflow to run on what matches (repeat)")
    a.add_argument("--webhook", action="append", default=[], metavar="URL",
                   help="POST each match here (repeat)")
    a.add_argument("--webhook-secret-env", metavar="VAR", help="environment variable "
                   "holding the webhooks' HMAC-SHA256 key")
    a.add_argument("--syslog", action="append", default=[], metavar="[tcp://]HOST:PORT",
                   help="send each match as RFC 5424 syslog (udp unless tcp://)")


# -- building a definition -------------------------------------------------------------------
def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None


def definition(args: argparse.Namespace, base: dict[str, Any]
               ) -> tuple[dict[str, Any], list[ImportResult]]:
    """``base`` with what the options give (each given part replaces base's); the import
    results of the indicator files."""
    raw = dict(base)
    if args.definition:
        try:
            raw.update(json.loads(_read_text(args.definition, "--definition")))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{args.definition}:{exc.lineno}:{exc.colno}: not JSON "
                              f"({exc.msg})") from None
    if args.suricata_rules is not None:
        raw["suricata_rules"] = _read_text(args.suricata_rules, "--suricata-rules")
    if args.yara_rules is not None:
        raw["yara_rules"] = _read_text(args.yara_rules, "--yara-rules")
    if args.bpf is not None:
        raw["bpf"] = args.bpf
    imports = [load_indicator_file(f, args.format, args.skip_bad) for f in args.indicators]
    given = Indicators(**{k: getattr(args, f"ind_{k}") for k in INDICATOR_KINDS})
    if imports or given.count():
        start = raw.get("indicators") if not base else {}
        start = start if isinstance(start, dict) else {}  # from_dict says what is wrong
        if not all(isinstance(start.get(k, []), list) for k in INDICATOR_KINDS):
            raise ConfigError(f"{args.definition}: indicators: an object of lists")
        merged = merge(Indicators(**{k: start.get(k, []) for k in INDICATOR_KINDS}),
                       *(r.indicators for r in imports), given)
        raw["indicators"] = {**start, **vars(merged)}
    scope = dict(raw.get("scope", {}))
    for key in ("start", "end"):
        if getattr(args, key) is not None:
            scope.pop(f"{key}_ns", None)
            scope[key] = getattr(args, key)
    if args.scope_bpf is not None:
        scope["bpf"] = args.scope_bpf
    if args.sensor is not None:
        scope["sensor"] = args.sensor
    raw["scope"] = scope
    if args.workflow or getattr(args, "no_workflows", False):
        raw["workflows"] = args.workflow
    if args.webhook or args.syslog or getattr(args, "no_notify", False):
        raw["notify"] = _targets(args)
    elif args.webhook_secret_env:
        raise ConfigError("--webhook-secret-env goes with --webhook")
    return raw, imports


def _targets(args: argparse.Namespace) -> list[dict[str, str]]:
    secret = ""
    if args.webhook_secret_env:
        secret = os.environ.get(args.webhook_secret_env, "")
        if not secret:
            raise ConfigError(f"--webhook-secret-env: the environment variable "
                              f"{args.webhook_secret_env} is not set or empty")
    out: list[dict[str, str]] = [{"type": "webhook", "url": u, **({"secret": secret}
                                                                 if secret else {})}
                                 for u in args.webhook]
    for s in args.syslog:
        transport, sep, address = s.partition("://")
        if not sep:
            transport, address = "udp", s
        if transport not in ("udp", "tcp"):
            raise ConfigError(f"--syslog {s!r}: udp://HOST:PORT or tcp://HOST:PORT")
        out.append({"type": "syslog", "address": address, "transport": transport})
    return out


def _report_imports(imports: list[ImportResult], as_json: bool) -> int:
    code = EXIT_OK
    for r in imports:
        if r.problems:
            code = EXIT_PARTIAL
            for p in r.problems:
                print(f"pcapwire: skipped: {p}", file=sys.stderr)
            if r.more_problems:
                print(f"pcapwire: skipped: {r.source}: … and {r.more_problems} more",
                      file=sys.stderr)
        if not as_json:
            counts = ", ".join(f"{len(getattr(r.indicators, k))} {k}"
                               for k in INDICATOR_KINDS if getattr(r.indicators, k))
            print(f"{r.source} ({r.format}): {counts or 'no indicators'}"
                  + (f"; {len(r.ignored)} ignored" if r.ignored else ""))
            for p in r.ignored:
                print(f"  ignored {p}")
    return code


# -- commands ------------------------------------------------------------------------------
def _open(args: argparse.Namespace) -> TriggerDB:
    with Store.existing(args.data_dir) as store:
        root = store.root
    return TriggerDB(root)


def _get(db: TriggerDB, name: str) -> Trigger:
    try:
        return db.by_name(name)
    except KeyError:
        raise ConfigError(f"no trigger named {name!r} (see `pcapwire trigger list`)") from None


def run_create(args: argparse.Namespace) -> int:
    raw, imports = definition(args, {})
    raw["name"] = args.name
    defn = from_dict(raw, "trigger")
    with _open(args) as db:
        trig, hunt = views.create(db, defn, custody.actor_cli())
        view = views.trigger_view(db, trig)
    code = _report_imports(imports, args.json)
    if args.json:
        print(json.dumps({"trigger": view, "imports": [r.summary() for r in imports]}))
    else:
        print(f"trigger {trig.name} created (id {trig.id}, version 1): looks for "
              f"{', '.join(view['looks_for'])}")
        print(f"hunt {hunt.id} queued" + ("" if args.wait else
                                          "; `pcapwire trigger run` or `pcapwire serve` "
                                          "runs it"))
    if args.wait:
        _wait(args, hunt.id, args.json)
    return code


def run_edit(args: argparse.Namespace) -> int:
    with _open(args) as db:
        trig = _get(db, args.name)
        raw, imports = definition(args, trig.definition.to_dict())
        if args.rename:
            raw["name"] = args.rename
        trig, hunt = views.edit(db, trig, from_dict(raw, "trigger"), custody.actor_cli())
        view = views.trigger_view(db, trig)
    code = _report_imports(imports, args.json)
    if args.json:
        print(json.dumps({"trigger": view, "imports": [r.summary() for r in imports]}))
    elif hunt is None:
        print(f"trigger {trig.name} updated (version {trig.version}: what it looks for is "
              "unchanged, no new hunt)")
    else:
        print(f"trigger {trig.name}: version {trig.version}; hunt {hunt.id} queued")
    return code


def run_list(args: argparse.Namespace) -> int:
    with _open(args) as db:
        rows = [views.trigger_view(db, t) for t in db.triggers()]
    if args.json:
        for v in rows:
            print(json.dumps(v))
        return EXIT_OK
    print(f"{'ID':>4} {'NAME':24} {'STATE':7} {'VER':>3} {'HUNT':9} {'PROGRESS':>8} "
          f"{'ETA':>8} {'MATCHES':>7}  LOOKS FOR")
    for v in rows:
        h = v["hunt"] or {}
        print(f"{v['id']:>4} {v['name'][:24]:24} {v['state']:7} {v['version']:>3} "
              f"{h.get('status', '-'):9} {_percent(h):>8} {_eta(h):>8} {v['matches']:>7}  "
              f"{', '.join(v['looks_for'])}")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    with _open(args) as db:
        view = views.trigger_view(db, _get(db, args.name), detail=True)
    if args.json:
        print(json.dumps(view))
        return EXIT_OK
    for key in ("id", "name", "state", "version", "created_by", "matches"):
        print(f"{key:10} {view[key]}")
    print(f"{'created':10} {_when(view['created'])}")
    print(f"{'looks for':10} {', '.join(view['looks_for'])}")
    print("definition:")
    print(json.dumps(view["definition"], indent=1))
    print("versions:")
    for v in view["versions"]:
        print(f"  {v['version']:>3} {_when(v['created'])} {v['created_by']} {v['reason']} "
              f"{v['digest'][:12]}")
    print("hunts:")
    for h in view["hunts"]:
        print(f"  hunt {h['id']} (version {h['version']}): {h['status']}, {_percent(h)}, "
              f"{h['units_done']}/{h['units_total']} units, {h['bytes_done']}/"
              f"{h['bytes_total']} bytes, {h['units_failed']} failed, ETA {_eta(h)}"
              + (f"; error: {h['error']}" if h["error"] else ""))
        for u in h["failed_units"]:
            print(f"    failed unit: segment {u['segment_id']} after {u['attempts']} "
                  f"attempt(s): {u['error']}")
    return EXIT_OK


def run_matches(args: argparse.Namespace) -> int:
    with _open(args) as db:
        trig = _get(db, args.name)
        if args.diff is not None:
            diff = views.version_diff(db, trig, args.diff)
            doc = {"version": args.diff, "new": diff["new"], "gone": diff["gone"]}
            if args.json:
                print(json.dumps(doc))
            else:
                for what in ("new", "gone"):
                    print(f"{what} in version {args.diff}: {len(doc[what])}")
                    for m in doc[what]:
                        print(f"  {_match_line(m)}")
            return EXIT_OK
        rows = [views.match_view(m, trig) for m in db.matches(trig.id, args.version,
                                                                args.after, args.limit)]
    for m in rows:
        print(json.dumps(m) if args.json else _match_line(m))
    return EXIT_OK


def run_control(args: argparse.Namespace) -> int:
    with _open(args) as db:
        trig = _get(db, args.name)
        if args.action == "pause":
            trig = views.pause(db, trig)
        elif args.action == "resume":
            trig = views.resume(db, trig)
        elif args.action == "abort":
            views.abort(db, trig)
        else:
            trig = db.set_state(trig.id, "deleted")
        view = views.trigger_view(db, db.get(trig.id))
    if args.json:
        print(json.dumps(view))
    else:
        h = view["hunt"] or {}
        print(f"trigger {view['name']}: {view['state']}; hunt {h.get('id', '-')} "
              f"{h.get('status', '-')}")
    return EXIT_OK


def run_service(args: argparse.Namespace) -> int:
    """The store's trigger service (:func:`pcapwire.triggers.service.run_foreground`)
    until SIGINT/SIGTERM."""
    from pcapwire.triggers.service import run_foreground

    with Store.existing(args.data_dir) as store:
        root = store.root
    stop = threading.Event()
    with stopped_by_signals(stop.set):
        run_foreground(root, stop, args.workflows or None)
    return EXIT_OK


def _wait(args: argparse.Namespace, hunt_id: int, as_json: bool) -> None:
    """Run the hunt in the foreground (:func:`pcapwire.triggers.hunt.run_hunt`, in a
    thread), its progress on stderr every PROGRESS_S; Ctrl-C stops it resumable."""
    from pcapwire.triggers.hunt import run_hunt

    with Store.existing(args.data_dir) as store:
        root = store.root
    stop = threading.Event()
    runner = threading.Thread(target=run_hunt, args=(root, hunt_id, stop),
                              kwargs={"wait_paused": False}, name="hunt", daemon=True)
    runner.start()
    with TriggerDB(root) as db:
        try:
            while runner.is_alive():
                runner.join(PROGRESS_S)
                if not as_json and sys.stderr.isatty():
                    h = views.hunt_view(db, db.hunt(hunt_id))
                    print(f"\rhunt {hunt_id}: {h['status']} {_percent(h)} "
                          f"{h['units_done']}/{h['units_total']} units, ETA {_eta(h)}   ",
                          end="", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            stop.set()
            runner.join()
        hunt = views.hunt_view(db, db.hunt(hunt_id))
        found = db.match_count(db.hunt(hunt_id).trigger_id)
    if as_json:
        print(json.dumps({"hunt": hunt}))
        return
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"hunt {hunt_id}: {hunt['status']}, {hunt['units_done']}/{hunt['units_total']} "
          f"units ({hunt['bytes_done']} bytes), {hunt['units_failed']} failed; {found} "
          "match(es)")


# -- text ----------------------------------------------------------------------------------
def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _percent(h: dict[str, Any]) -> str:
    return f"{100 * h['progress']:.1f}%" if h else "-"


def _eta(h: dict[str, Any]) -> str:
    return "-" if not h or h.get("eta_s") is None else f"{h['eta_s']:.0f}s"


def _match_line(m: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(m["ts"]))
    proto = pivot.flow(m)["proto"]
    return (f"{m['id']:>6} {when}Z {m['rule']:32} {proto} {m['src_ip']}:{m['src_port']} -> "
            f"{m['dest_ip']}:{m['dest_port']} flow {m['flow_id'] or '-'} {m['source']} "
            f"v{','.join(map(str, m['versions']))} hits {m['hits']}")
