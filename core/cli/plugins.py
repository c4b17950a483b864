"""``pcapwire plugins list [--json]``: every plugin, where it came from, its hooks,
commands and analyzers; plugins that failed to load, with the reason (exit 1 when there
are any)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="show installed plugins and analyzers")
    psub = p.add_subparsers(dest="plugins_command", required=True, metavar="ACTION")
    ls = psub.add_parser("list", help="list plugins, their analyzers and load failures")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=list_plugins)


def list_plugins(args: argparse.Namespace) -> int:
    from pcapwire.hooks.host import build_host

    host = build_host()
    desc = host.describe()
    if args.json:
        print(json.dumps(desc, indent=2, default=str))
        return 1 if host.failures else 0
    analyzers = {a["name"]: a for a in desc["analyzers"]}
    for p in desc["plugins"]:
        print(f"{p['name']}  [{p['source']}]")
        if p["error"]:
            print(f"  partly failed: {p['error']}")
        if p["hooks"]:
            print(f"  hooks: {', '.join(p['hooks'])}")
        if p["commands"]:
            print(f"  commands: {', '.join(p['commands'])}")
        for name in p["analyzers"]:
            a = analyzers[name]
            line = (f"  analyzer {name} {a['version']}: {'|'.join(a['input_kinds'])} -> "
                    f"{', '.join(a['outputs'])}")
            if a["description"]:
                line += f"  ({a['description']})"
            print(line)
            if a["unavailable"]:
                print(f"    unavailable here: {a['unavailable']}")
    failed = [f for f in desc["failures"] if f["name"] not in
              {p["name"] for p in desc["plugins"]}]
    for f in failed:
        print(f"{f['name']}  [{f['source']}]")
        print(f"  FAILED: {f['error']}")
    return 1 if host.failures else 0
