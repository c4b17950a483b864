"""The metadata index over corpus captures, filled the way a user's store is: ingest (the
flows, pcapwire.search.indexer.index_flows, as a search catches up after an ingest) and one
workflow run with the real Suricata and the carver (indexed by the engine's own hook when
the run ends). Searches are checked against the corpus manifest's facts (domains, hosts,
subjects, addresses, hashes, TLS fingerprints, DNS names); every hit's pivot query finds
packets through the API's own query body parser; the rebuild gives the same index; the
export's lines are ECS the shipped index template maps completely."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from apiutil import GET_RULE
from conftest import CASES, corpus_file
from pcapwire.api import ApiConfig
from pcapwire.api.routes_queries import spec_from_body
from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.cli import main
from pcapwire.hooks.host import build_host
from pcapwire.query import QuerySpec
from pcapwire.search.fields import OPAQUE_OBJECTS
from pcapwire.search.index import SearchIndex, flatten
from pcapwire.search.indexer import index_flows, rebuild
from pcapwire.search.query import iter_docs, search
from pcapwire.search.template import template
from pcapwire.store import Store
from pcapwire.workflow.document import load_workflow
from pcapwire.workflow.engine import Engine

CAPTURES = ("zeek-http-get", "zeek-smtp-two-messages", "arkime-tls13-ja3-ja4",
            "suricata-dns-udp-cname-a", "arkime-smtp-base64-zip")
RULES = GET_RULE + (
    'alert dns any any -> any any (msg:"pcapwire DNS query"; dns.query; content:"."; '
    'sid:1000002; rev:1;)\n'
    'alert tls any any -> any any (msg:"pcapwire TLS SNI"; tls.sni; content:"."; '
    'sid:1000003; rev:1;)\n')
WORKFLOW = """
name: search-corpus
version: 1
"on": {query: true}
steps:
  - {id: ids, uses: suricata, input: pcap, with: {rules: [local.rules], ja3: true, ja4: true}}
  - {id: carve, uses: carve, input: pcap}
"""


def expect(case: str) -> dict[str, Any]:
    return CASES[case]["expect"]


def five(flow: dict[str, Any]) -> tuple[Any, ...]:
    return (flow["orig_h"], flow["orig_p"], flow["resp_h"], flow["resp_p"])


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def hit_five(hit: dict[str, Any]) -> tuple[Any, ...]:
    d = hit["doc"]
    return (d["source"]["ip"], d["source"]["port"], d["destination"]["ip"],
            d["destination"]["port"])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    host = build_host()
    if not {"suricata", "carve"} <= set(host.analyzers()):
        pytest.skip("suricata or carve analyzer missing")
    root = tmp_path_factory.mktemp("search") / "data"
    with Store(root) as store:
        store.ingest([corpus_file(c) for c in CAPTURES])
    assert index_flows(root) > 0
    wf_dir = root.parent / "wf"
    wf_dir.mkdir()
    (wf_dir / "local.rules").write_text(RULES)
    (wf_dir / "search.yaml").write_text(WORKFLOW)
    wf = load_workflow(wf_dir / "search.yaml", host)
    cases = CaseStore(root / CASES_FILE)
    engine = Engine(host, store=cases, data_dir=root, keep_warm=False)

    async def chunks():
        with Store(root) as store:
            for chunk in store.query_engine().iter_chunks(QuerySpec(), query_id="q1"):
                yield chunk

    import asyncio

    async def run() -> Any:
        try:
            return await engine.run(wf, chunks(), case="IR-15", query_id="q1")
        finally:
            await host.analyzer("suricata").aclose()

    summary = asyncio.run(run())
    cases.close()
    assert summary.status == "ok", summary.to_dict()
    return root


def hits(root: Path, q: str, **kw: Any) -> list[dict[str, Any]]:
    with SearchIndex.of(root) as index:
        return search(index, q, limit=1000, **kw).hits


def test_domains_dns_and_tls_facts(root: Path) -> None:
    http = expect("zeek-http-get")["http"][0]
    found = hits(root, f"url.domain:{http['host']}")
    assert Counter(h["dataset"] for h in found) == {"suricata.http": 1, "suricata.fileinfo": 1}
    assert {frozenset(hit_five(h)) for h in found} == {frozenset(five(http["flow"]))}
    assert [h["doc"]["url"]["path"] for h in hits(
        root, f"url.domain:*.org AND http.request.method:{http['method']}")
    ] == [http["uri"]] * 2  # the transaction and its file

    tls = expect("arkime-tls13-ja3-ja4")["tls"][0]
    (one,) = hits(root, f"tls.client.server_name:{tls['server_name']}")
    assert one["dataset"] == "suricata.tls"
    assert hit_five(one) == five(tls["flow"])
    assert one["doc"]["tls"]["client"] == {"server_name": tls["server_name"],
                                           "ja3": tls["ja3"], "ja4": tls["ja4"]}
    assert [h["key"] for h in hits(root, f"tls.client.ja4:{tls['ja4']} OR "
                                         f"tls.client.ja3:{tls['ja3']}")] == [one["key"]]
    assert [h["key"] for h in hits(root, "tls.client.server_name:*.tls13.com")] == [one["key"]]

    dns = [c["filter"]["match"] for c in expect("suricata-dns-udp-cname-a")["dns_eve_checks"]
           if "dns.rrname" in c["filter"]["match"]]
    name = dns[0]["dns.rrname"]
    assert len(hits(root, f"dns.question.name:{name}")) == len(dns) == 2
    (answer,) = hits(root, f"dns.answers.data:{dns[1]['dns.answers[1].rdata']}")
    assert answer["doc"]["dns"]["type"] == "answer"
    # the alerts: one per TLS session with a server name, as verdicts with their rule
    alerts = hits(root, 'rule.name:"pcapwire TLS SNI"')
    assert {h["doc"]["event"]["kind"] for h in alerts} == {"alert"}
    assert sorted(hit_five(h) for h in alerts) == sorted(
        hit_five(h) for h in hits(root, "tls.client.server_name:*"))
    assert five(tls["flow"]) in {hit_five(h) for h in alerts}


def test_emails_subjects_addresses_and_attachment_hashes(root: Path) -> None:
    emails = (expect("zeek-smtp-two-messages")["emails"]
              + expect("arkime-smtp-base64-zip")["emails"])
    for mail in emails:
        # a phrase of a text field matches its words in order: the messages whose
        # subjects hold them, by the manifest
        found = hits(root, f'email.subject:"{mail["subject"]}"')
        assert sorted((h["dataset"], hit_five(h)) for h in found) == sorted(
            ("pcapwire.email", five(m["flow"])) for m in emails
            if _words(mail["subject"]) in _words(m["subject"]))
        mine = [h for h in found if h["doc"]["email"]["subject"] == mail["subject"]]
        assert [hit_five(h) for h in mine] == [five(mail["flow"])]
        assert mine[0]["pivots"]["case"] == "IR-15"
        sender = hits(root, f"email.sender.address:{mail['mail_from']} AND "
                            "event.dataset:pcapwire.email")
        assert [h["key"] for h in sender] == [mine[0]["key"]]
    cc = expect("zeek-smtp-two-messages")["emails"][1]["cc"]
    found = hits(root, f"email.cc.address:{cc[0]} AND email.cc.address:{cc[1]}")
    assert [h["doc"]["email"]["subject"] for h in found
            if h["dataset"] == "pcapwire.email"] == ["Re: Bro SMTP CC Header"]
    attachment = expect("arkime-smtp-base64-zip")["emails"][0]["attachments"][0]
    (mail,) = hits(root, f"email.attachments.file.hash.sha256:{attachment['sha256']}")
    assert mail["doc"]["email"]["subject"] == "zip test"
    assert mail["doc"]["email"]["attachments"][0]["file"]["name"] == attachment["filename"]
    (carved,) = hits(root, f"file.hash.sha256:{attachment['sha256']}")
    assert (carved["dataset"], carved["doc"]["file"]["name"]) == ("pcapwire.file", "a.zip")
    assert carved["doc"]["file"]["hash"]["md5"] == attachment["md5"]
    http_file = expect("zeek-http-get")["files"][0]
    (f,) = hits(root, f"file.hash.sha256:{http_file['sha256']}")
    assert f["doc"]["file"]["size"] == http_file["size"]
    assert hits(root, f"related.hash:{http_file['md5']}") == [f]


def test_hosts_and_networks_are_the_manifest_conversations(root: Path) -> None:
    conversations = [c for case in CAPTURES
                     for c in CASES[case]["computed"]["conversations"]["conversations"]]
    hosts = Counter(ip for c in conversations for ip in {c["src"], c["dst"]})
    for host, count in hosts.items():
        found = hits(root, f"event.dataset:pcapwire.flow AND related.ip:{host} AND NOT "
                           "network.transport:icmp")
        assert len(found) == count, host
    inside = [c for c in conversations if c["src"].startswith("10.10.1.")]
    found = hits(root, "event.dataset:pcapwire.flow AND source.ip:10.10.1.0/24 AND NOT "
                       "network.transport:icmp")
    assert sorted(h["doc"]["network"]["packets"] for h in found) == sorted(
        c["packets"] for c in inside)


def test_every_hit_pivots_to_its_packets(root: Path) -> None:
    config = ApiConfig(data_dir=root)
    with SearchIndex.of(root) as index:
        docs = list(iter_docs(index))
    assert len(docs) > 40
    seen = Counter()
    with Store(root) as store:
        engine = store.query_engine()
        for key, doc in docs:
            pivot = doc["pcapwire"]["pivot"]
            spec = spec_from_body(pivot["query"], config)
            packets = sum(c.packets for c in engine.iter_chunks(spec))
            assert packets > 0, (key, pivot)
            if pivot["flow_id"] is not None:
                flow = sum(c.packets for c in engine.iter_chunks(QuerySpec(
                    flow_ids=[pivot["flow_id"]])))
                assert flow >= packets > 0, key
            seen[doc["event"]["dataset"]] += 1
    assert {"pcapwire.flow", "suricata.http", "suricata.dns", "suricata.tls",
            "suricata.fileinfo", "pcapwire.file", "pcapwire.email",
            "pcapwire.suricata"} <= set(seen)


def test_rebuild_export_and_the_index_template(root: Path, capsys) -> None:
    with SearchIndex.of(root) as index:
        before = sorted(k for k, _ in iter_docs(index))
    counts = rebuild(root)
    with SearchIndex.of(root) as index:
        after = sorted(k for k, _ in iter_docs(index))
    assert after == before and counts["documents"] == len(before) and counts["runs"] == 1

    assert main(["--data-dir", str(root), "export", "--base-url", "https://pw:8443"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert sorted(d["event"]["id"] for d in lines) == before
    assert all(d["event"]["url"].startswith("https://pw:8443/api/v1/search?q=event.id")
               for d in lines)
    # every leaf of every exported document is mapped by the template
    shipped = Path(__file__).resolve().parents[1] / "core/search/templates/pcapwire-ecs.json"
    assert json.loads(shipped.read_text()) == template()
    mapped = _mapped_paths(template()["template"]["mappings"]["properties"])
    unmapped = {name for d in lines for name, _ in flatten(d) if name not in mapped}
    opaque = {n for d in lines for n in _objects(d) if n in OPAQUE_OBJECTS}
    assert unmapped == set() and opaque == set(OPAQUE_OBJECTS)


def _mapped_paths(props: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, m in props.items():
        if "properties" in m:
            out.update(_mapped_paths(m["properties"], f"{prefix}{name}."))
        else:
            out[prefix + name] = m["type"]
    return out


def _objects(doc: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for k, v in doc.items():
        if isinstance(v, dict):
            out.add(prefix + k)
            out |= _objects(v, f"{prefix}{k}.")
    return out
