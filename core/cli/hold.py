"""``pcapwire hold create|list|show|release``: legal holds (:mod:`pcapwire.holds`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pcapwire import custody
from pcapwire.cli.filters import spec_from_args
from pcapwire.holds import create_hold, get_hold, hold_view, list_holds, release_hold
from pcapwire.holds.table import STATES
from pcapwire.store import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hold", help="legal holds: keep a case's packets as evidence")
    cmds = p.add_subparsers(dest="hold_command", required=True, metavar="ACTION")

    c = cmds.add_parser("create", help="copy the matching packets into the case's evidence "
                        "now (and, while the window reaches into the future, those recorded "
                        "later); retention never deletes evidence")
    c.add_argument("--case", required=True, help="the case the evidence belongs to")
    c.add_argument("--reason", required=True, help="why (kept in the custody log)")
    g = c.add_argument_group("what to hold (all combine with AND; at least one)")
    g.add_argument("--flow", action="append", default=[], type=int, metavar="ID",
                   help="flow id from `pcapwire flows` (repeat: any of them)")
    g.add_argument("--five-tuple", metavar="PROTO:SRC:SPORT:DST:DPORT",
                   help="one flow, either direction (IPv6 addresses in [brackets])")
    g.add_argument("--bpf", default="", metavar="EXPR", help="BPF expression (tcpdump syntax)")
    g.add_argument("--host", action="append", default=[], metavar="IP",
                   help="an endpoint of the flow (repeat: every one must be)")
    g.add_argument("--port", action="append", default=[], type=int, metavar="N",
                   help="a port of the flow (repeat: any of them)")
    g.add_argument("--start", metavar="T", help="ISO 8601, Unix seconds or now (inclusive; "
                   "default: the oldest packet)")
    g.add_argument("--end", metavar="T", help="ISO 8601 or Unix seconds (exclusive; default: "
                   "none, the hold keeps copying until released)")
    c.add_argument("--json", action="store_true", help="print the hold as JSON")
    c.set_defaults(func=run_create, net=[], proto=[], event="")

    ls = cmds.add_parser("list", help="holds with their size and what they protect")
    ls.add_argument("--case", help="only this case's holds")
    ls.add_argument("--state", choices=STATES, help="only holds in this state")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=run_list)

    sh = cmds.add_parser("show", help="one hold: selection, window, parts and their hashes")
    sh.add_argument("id", type=int)
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=run_show)

    r = cmds.add_parser("release", help="stop protecting and copying (audited); the "
                        "evidence already copied is NOT deleted")
    r.add_argument("id", type=int)
    r.add_argument("--reason", required=True, help="why (kept in the custody log)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=run_release)


def run_create(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    with Store.existing(args.data_dir) as store:
        hold = create_hold(store, spec, args.reason, custody.actor_cli())
        view = hold_view(store, hold)
    if args.json:
        print(json.dumps(view))
        return 0
    print(f"hold {view['id']} created for case {view['case']}: {view['packets']} packets, "
          f"{view['bytes']} bytes in {len(view['parts'])} parts")
    _print_parts(view)
    if view["state"] == "open":
        print(f"open: packets recorded later in {_window(view)} are copied as they are "
              f"sealed; it protects {len(view['protects']['segments'])} segments meanwhile")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with Store.existing(args.data_dir) as store:
        views = [hold_view(store, h) for h in list_holds(
            store.root, args.case, [args.state] if args.state else None)]
    if args.json:
        for v in views:
            print(json.dumps(v))
        return 0
    print(f"{'ID':>5} {'STATE':9} {'CASE':16} {'PACKETS':>9} {'BYTES':>12} {'PARTS':>5} "
          f"{'PROTECTS':>18}  WINDOW / SELECTION")
    for v in views:
        prot = v["protects"]
        print(f"{v['id']:>5} {v['state']:9} {v['case'][:16]:16} {v['packets']:>9} "
              f"{v['bytes']:>12} {len(v['parts']):>5} "
              f"{len(prot['segments']):>5} seg {prot['bytes']:>8} B  {_window(v)} "
              f"{_selection(v)}")
        if v["released"]:
            rel = v["released"]
            print(f"{'':>5} released {rel['at']} by {rel['by']}: {rel['reason']}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    with Store.existing(args.data_dir) as store:
        view = hold_view(store, get_hold(store.root, args.id))
    _show(view, args.json)
    return 0


def run_release(args: argparse.Namespace) -> int:
    with Store.existing(args.data_dir) as store:
        view = hold_view(store, release_hold(store.root, args.id, args.reason,
                                             custody.actor_cli()))
    if not args.json:
        print(f"hold {view['id']} released; its {len(view['parts'])} evidence parts stay "
              f"in {args.data_dir}/evidence")
    _show(view, args.json)
    return 0


def _show(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(view))
        return
    for key in ("id", "case", "state", "reason", "created_by", "created", "completed"):
        print(f"{key:11} {view[key]}")
    print(f"{'window':11} {_window(view)}")
    print(f"{'selection':11} {_selection(view)}")
    print(f"{'evidence':11} {view['packets']} packets, {view['bytes']} bytes, "
          f"{len(view['parts'])} parts")
    _print_parts(view)
    prot = view["protects"]
    print(f"{'protects':11} {len(prot['segments'])} segments, {prot['bytes']} bytes not "
          f"copied yet: {prot['segments']}")
    if view["released"]:
        rel = view["released"]
        print(f"{'released':11} {rel['at']} by {rel['by']}: {rel['reason']}")


def _print_parts(view: dict[str, Any]) -> None:
    for p in view["parts"]:
        print(f"  part {p['n']}: {p['path']} {p['packets']} packets {p['size']} bytes "
              f"sha256 {p['sha256']} (segments {p['segments']})")


def _window(view: dict[str, Any]) -> str:
    w = view["window"]
    return f"[{w['start'] or '-'}, {w['end'] or 'open'})"


def _selection(view: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in view["selection"].items())
