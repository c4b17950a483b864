"""Domain and URL indicators narrowed through the metadata index: after a Suricata
workflow run over the whole store (its DNS and HTTP records indexed), a hunt scans only
the segments whose indexed records name an indicator, and those the index does not cover
(ingested after the run); it finds exactly the matches of the hunt that scans every
segment. The expected segments come from the capture itself (dpkt), not from the index.
JA3/JA4 likewise, when the run's TLS records carry them."""

from __future__ import annotations

import threading
from pathlib import Path

import dpkt
import pytest
from conftest import CASES, corpus_file
from pcapwire.cli import main
from pcapwire.store import Store
from pcapwire.synth import generate
from pcapwire.triggers import TriggerDB, from_dict
from pcapwire.triggers.hunt import run_hunt
from pcapwire.triggers.match_metadata import narrowable

REPO = Path(__file__).resolve().parents[1]
SEGMENT_BYTES = 2**20
WORKFLOW = f"""name: metadata
version: 1
"on":
  query: true
steps:
  - id: ids
    uses: suricata
    input: pcap
    with:
      rules: [{REPO}/workflows/rules/pcapwire-demo.rules]
      checksum_validation: "no"
"""


def _packets(path: Path) -> list[tuple[int, tuple, str]]:
    """(time ns, flow key either way, DNS query name or HTTP request "host path" or "")."""
    out = []
    with open(path, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(buf).data
            l4 = ip.data
            key = (ip.p, *sorted([(ip.src, l4.sport), (ip.dst, l4.dport)]))
            what = ""
            if ip.p == 17 and l4.dport == 53:
                what = dpkt.dns.DNS(l4.data).qd[0].name
            elif ip.p == 6 and l4.data.startswith(b"GET "):
                req = dpkt.http.Request(l4.data)
                what = f"{req.headers['host']} {req.uri}"
            out.append((round(ts * 1e9), key, what))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple], list[tuple]]:
    """4 segments analysed by Suricata (indexed), then a fifth ingested after the run."""
    base = tmp_path_factory.mktemp("narrow")
    root = base / "store"
    generate(base / "old.pcap", 4 * 2**20, seed=7)
    generate(base / "new.pcap", 2**18, seed=8, start_s=1_700_000_100)
    with Store(root) as st:
        st.ingest([base / "old.pcap"], segment_max_bytes=SEGMENT_BYTES)
    (base / "wf.yaml").write_text(WORKFLOW)
    assert main(["--data-dir", str(root), "run", str(base / "wf.yaml")]) == 0
    with Store(root) as st:
        st.ingest([base / "new.pcap"], segment_max_bytes=SEGMENT_BYTES)
        segments = [(s.id, s.first_ns, s.last_ns) for s in st.catalog.segments()]
    assert len(segments) == 5
    return root, [*_packets(base / "old.pcap"), *_packets(base / "new.pcap")], segments


def _hunt(root: Path, name: str, indicators: dict, narrow: bool) -> tuple[set, int]:
    with TriggerDB(root) as tdb:
        trig, hunt = tdb.create(from_dict({"name": name, "indicators": indicators}), "test")
    run_hunt(root, hunt.id, threading.Event(), workers=2, narrow=narrow)
    with TriggerDB(root) as tdb:
        done = tdb.hunt(hunt.id)
        assert (done.status, done.units_failed) == ("finished", 0)
        return ({(m["rule"], m["flow_key"]) for m in tdb.matches(trig.id, limit=10**6)},
                done.units_total)


def test_narrowed_hunt_finds_the_same_in_fewer_units(store) -> None:
    root, packets, segments = store
    def segments_of(names: set[str]) -> set[int]:
        keys = {key for _ts, key, what in packets if what in names}
        return {sid for ts, key, _ in packets if key in keys
                for sid, lo, hi in segments if lo <= ts <= hi}

    dns = [what for _ts, _key, what in packets if what.endswith(".example.com")]
    first_name, late_name = dns[0], dns[-1]  # in segment 1; in the one after the run
    # a request whose session lies in one segment (most span several)
    request = next(what for _ts, _key, what in packets if what.startswith("demo.example ")
                   and segments_of({what}) == {3})
    host, path = request.split(" ")
    indicators = {"domains": [first_name.upper(), late_name, "absent.example",
                              "*.nothing.test"],
                  "urls": [f"http://{host}{path}", "http://demo.example/not/there"]}
    expected = segments_of({first_name, request}) | {5}  # 5: not covered by the run
    assert expected == {1, 3, 5}
    assert late_name in {what for ts, _, what in packets if ts >= segments[4][1]}

    full, full_units = _hunt(root, "everything", indicators, narrow=False)
    narrowed, units = _hunt(root, "narrowed", indicators, narrow=True)
    assert (full_units, units) == (len(segments), len(expected))
    assert narrowed == full
    assert {rule for rule, _ in full} == {f"domain:{first_name}",
                                          f"domain:{late_name}", f"url:http://{host}{path}"}


def test_what_is_narrowed() -> None:
    assert narrowable(from_dict({"name": "a", "indicators": {"domains": ["x.example"],
                                                             "ja3": ["0" * 32]}}))
    for other in ({"indicators": {"domains": ["x.example"], "ips": ["10.0.0.1"]}},
                  {"indicators": {"urls": ["http://x.example/"]}, "bpf": "tcp"},
                  {"indicators": {"ja4": ["t13d1516h2_8daaf6152771_02713d6af862"],
                                  "sha256": ["0" * 64]}},
                  {"indicators": {"domains": ["x.example"]},
                   "suricata_rules": 'alert ip any any -> any any (msg:"x"; sid:1;)'},
                  {"indicators": {"ips": ["10.0.0.1"]}}):
        assert not narrowable(from_dict({"name": "a", **other}))


def _fingerprint_store(base: Path, ja3_on: bool) -> Path:
    """A TLS 1.3 client hello (its own segment) beside 1 MiB of generated traffic (no
    TLS), analysed by Suricata with JA3/JA4 on or off."""
    root = base / "store"
    generate(base / "synth.pcap", 2**20, seed=9)
    with Store(root) as st:
        st.ingest([corpus_file("arkime-tls13-ja3-ja4")])
        st.ingest([base / "synth.pcap"], segment_max_bytes=2 * SEGMENT_BYTES)
    flag = "true" if ja3_on else "false"
    (base / "wf.yaml").write_text(WORKFLOW + f"      ja3: {flag}\n      ja4: {flag}\n")
    assert main(["--data-dir", str(root), "run", str(base / "wf.yaml")]) == 0
    return root


@pytest.mark.parametrize("ja3_on", [True, False])
def test_ja3_and_ja4_narrowed_when_the_index_has_them(tmp_path: Path, ja3_on: bool) -> None:
    """With JA3/JA4 in the indexed TLS records, only the client hello's segment is
    scanned; a run that recorded TLS without them covers nothing: every segment is."""
    root = _fingerprint_store(tmp_path, ja3_on)
    (tls,) = CASES["arkime-tls13-ja3-ja4"]["expect"]["tls"]
    indicators = {"ja3": [tls["ja3"], "0" * 32], "ja4": [tls["ja4"]]}
    full, full_units = _hunt(root, "everything", indicators, narrow=False)
    narrowed, units = _hunt(root, "narrowed", indicators, narrow=True)
    assert (full_units, units) == (2, 1 if ja3_on else 2)
    assert narrowed == full
    assert {rule for rule, _ in full} == {f"ja3:{tls['ja3']}", f"ja4:{tls['ja4']}"}
