"""A synthetic rule set shaped like Emerging Threats Open (files per category, classtypes,
ET-style metadata, some rules commented out, some continued over two lines), with bad
lines at known places, for the rule-group tests and timing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FILES = tuple(f"emerging-{c}.rules" for c in (
    "malware", "trojan", "policy", "info", "scan", "dos", "exploit", "web_client",
    "web_server", "dns", "hunting", "phishing", "mobile_malware", "coinminer", "user_agents",
    "attack_response", "current_events", "ja3", "adware_pup", "worm"))
CLASSTYPES = ("trojan-activity", "policy-violation", "misc-activity", "bad-unknown",
              "attempted-recon", "web-application-attack", "attempted-admin", "misc-attack",
              "network-scan", "command-and-control", "protocol-command-decode")  # + none
SEVERITIES = ("Major", "Minor", "Informational", "Critical")
TARGETS = ("Client_Endpoint", "Server", "Networking_Equipment")
PROTOS = ("tcp", "udp", "http", "dns", "tls")
BAD = 'alert tcp $HOME_NET any -> $EXTERNAL_NET any (msg:"ET BROKEN no end"; sid:1'


@dataclass
class Generated:
    rules: int
    disabled: set[int] = field(default_factory=set)  # sids commented out
    bad: list[tuple[str, int]] = field(default_factory=list)  # (file, line)


def classtype(i: int) -> str | None:
    return CLASSTYPES[i % 12] if i % 12 < len(CLASSTYPES) else None


def rule_text(i: int) -> str:
    sid = 2_000_000 + i
    cls = classtype(i)
    meta = (f"metadata: attack_target {TARGETS[i % 3]}, created_at 2020_01_{i % 28 + 1:02d}, "
            f"signature_severity {SEVERITIES[i % 4]}, former_category "
            f"{FILES[i % 20][9:-6].upper()};")
    body = (f'msg:"ET {FILES[i % 20][9:-6].upper()} synthetic rule {i}"; flow:established,'
            f'to_server; content:"pcapwire-synthetic-{i}"; fast_pattern; '
            f"reference:url,example.org/{i}; "
            + (f"classtype:{cls}; " if cls else "") + f"sid:{sid}; rev:{i % 5 + 1}; {meta}")
    head = f"alert {PROTOS[i % 5]} $HOME_NET any -> $EXTERNAL_NET any ("
    if i % 7 == 0:  # a rule continued over two lines
        cut = body.index("; ") + 2
        return head + body[:cut] + "\\\n    " + body[cut:] + ")"
    return head + body + ")"


def write(root: Path, n: int, *, bad_every: int = 0) -> Generated:
    """``n`` rules in the 20 files of :data:`FILES` (rule ``i`` in file ``i % 20``); every
    tenth rule commented out; a bad line after every ``bad_every``-th rule."""
    root.mkdir(parents=True, exist_ok=True)
    out = Generated(n)
    texts: dict[str, list[str]] = {f: ["# synthetic ET-like rules", ""] for f in FILES}
    for i in range(n):
        name = FILES[i % 20]
        lines = texts[name]
        text = rule_text(i)
        if i % 10 == 3:
            text = "# " + text
            out.disabled.add(2_000_000 + i)
        lines.extend(text.split("\n"))
        if bad_every and i % bad_every == bad_every - 1:
            lines.append(BAD)
            out.bad.append((str(root / name), len(lines)))
    for name, lines in texts.items():
        (root / name).write_text("\n".join(lines) + "\n")
    return out
