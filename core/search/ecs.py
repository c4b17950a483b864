"""Stored outputs as ECS documents (Elastic Common Schema 8.11 field names, see
:data:`pcapwire.search.fields.FIELDS`), one :class:`Doc` each: flows of the catalog,
Suricata EVE metadata (http, dns, tls, fileinfo, smtp, anomaly), Zeek logs (conn, http,
dns, ssl, files, smtp), carved files and emails, verdicts.

Every document carries its pivots under ``pcapwire.pivot``: ``query`` (a body for
``POST /api/v1/queries``: the 5-tuple and a time window), ``flow_id`` (the catalog's flow
when known) and ``case``/``run_id``/``query_id`` when it came from a workflow run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pcapwire.cases.export import ECS_VERSION, verdict_to_ecs
from pcapwire.records import FlowKey, Verdict
from pcapwire.search.values import us_iso

if TYPE_CHECKING:
    from pcapwire.plugins.suricata.eve import EveMetadata

#: Seconds before and after a record's time in its pivot query (the API's event margin).
PIVOT_MARGIN_S = 60.0
#: Characters of an email's text body that are indexed (the rest stays in the .eml).
MAX_BODY_CHARS = 64 * 1024


@dataclass(frozen=True)
class Origin:
    """Where a record came from: its run and step, or nothing (a flow of the store)."""

    case: str = ""
    run_id: str = ""
    query_id: str = ""
    step: str = ""


@dataclass(frozen=True)
class Doc:
    """An ECS document and its identity in the index (the same key replaces it)."""

    key: str
    body: dict[str, Any]


def pivot_query(flow: FlowKey | None, start_us: int, end_us: int, case: str = ""
                ) -> dict[str, Any]:
    body: dict[str, Any] = {"start": us_iso(start_us), "end": us_iso(end_us)}
    if flow is not None and flow.src and flow.dst:
        # FlowKey.to_dict's names and order, the protocol by name when the API knows it
        body["five_tuple"] = {"proto": flow.proto_name if flow.proto in (6, 17, 1, 58, 132)
                              else flow.proto, "src_ip": flow.src, "src_port": flow.sport,
                              "dest_ip": flow.dst, "dest_port": flow.dport}
    if case:
        body["case"] = case
    return body


def _pivot(flow: FlowKey | None, lo: int, hi: int, flow_id: int | None,
           origin: tuple[str, str, str, str]) -> dict[str, Any]:
    """``pcapwire.pivot``: the query of ``flow`` from ``lo`` to ``hi`` (µs), the flow's id
    and ``origin`` (case, run id, query id, step: those not empty)."""
    pivot: dict[str, Any] = {"query": pivot_query(flow, lo, hi, origin[0]),
                             "flow_id": flow_id}
    pivot.update(_named(origin))
    return pivot


_ORIGIN_NAMES = ("case", "run_id", "query_id", "step")
_MARGIN_US = round(PIVOT_MARGIN_S * 1e6)
#: Origins whose non-empty (name, value) pairs :func:`_named` keeps (then it starts
#: again): a run's documents come from a few.
ORIGINS_KEPT = 256
_NAMED: dict[tuple[str, str, str, str], tuple[tuple[str, str], ...]] = {}


def _named(origin: tuple[str, str, str, str]) -> tuple[tuple[str, str], ...]:
    """(name, value) of an origin's case, run id, query id and step, those not empty, in
    that order (what a document's ``pcapwire`` and its pivot carry)."""
    named = _NAMED.get(origin)
    if named is None:
        named = tuple((n, v) for n, v in zip(_ORIGIN_NAMES, origin, strict=True) if v)
        if len(_NAMED) >= ORIGINS_KEPT:
            _NAMED.clear()
        _NAMED[origin] = named
    return named


def _base(dataset: str, kind: str, ts: float, flow: FlowKey | None, origin: Origin,
          flow_id: int | None, window: tuple[int, int] | None = None) -> dict[str, Any]:
    """The common part; ``window``: the pivot's time window in µs (default: ``ts`` ±
    :data:`PIVOT_MARGIN_S`), whose start is then also ``@timestamp``."""
    module = dataset.split(".", 1)[0]
    us = math.floor(ts * 1e6)  # ts_iso's microsecond
    doc: dict[str, Any] = {
        "@timestamp": us_iso(window[0] if window else us),
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": kind, "dataset": dataset, "module": module},
        "pcapwire": {}}
    if flow is not None and flow.src:
        doc["source"] = {"ip": flow.src, "port": flow.sport}
        doc["destination"] = {"ip": flow.dst, "port": flow.dport}
        doc["network"] = {"transport": flow.proto_name, "iana_number": str(flow.proto)}
        doc["related"] = {"ip": sorted({flow.src, flow.dst})}
    lo, hi = window or (us - _MARGIN_US, us + _MARGIN_US)
    names = (origin.case, origin.run_id, origin.query_id, origin.step)
    pw = doc["pcapwire"]
    pw.update(_named(names))
    if flow_id is not None:
        pw["flow"] = {"id": flow_id}
    pw["pivot"] = _pivot(flow, lo, hi, flow_id, names)
    return doc


_PATHS: dict[str, tuple[list[str], str]] = {}


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path, skipping empty values (None, '', [])."""
    if not value and (value is None or value == "" or value == []):  # one test if truthy
        return
    split = _PATHS.get(path)
    if split is None:  # the paths are this module's constants: a few dozen
        *parents, leaf = path.split(".")
        split = _PATHS[path] = (parents, leaf)
    for p in split[0]:
        doc = doc.setdefault(p, {})
    doc[split[1]] = value


# ---- flows ---------------------------------------------------------------------------------
def flow_doc(f: dict[str, Any], first_ns: int, last_ns: int) -> Doc:
    """A flow of the catalog (:func:`pcapwire.query.flows.flow_dict`, with
    ``packets_expired`` when retention deleted some of its packets)."""
    key = FlowKey.from_dict(f) if f["proto"] in ("tcp", "udp", "icmp", "icmp6", "sctp") \
        or str(f["proto"]).isdigit() else None
    doc = _base("pcapwire.flow", "event", first_ns / 1e9, key, Origin(), f["flow_id"],
                (first_ns // 1000, last_ns // 1000 + 1))
    doc["event"].update({"category": ["network"], "type": ["connection"],
                         "start": us_iso(first_ns // 1000), "end": us_iso(last_ns // 1000)})
    packets = f["pkts_toserver"] + f["pkts_toclient"]
    nbytes = f["bytes_toserver"] + f["bytes_toclient"]
    doc.setdefault("network", {}).update({"packets": packets, "bytes": nbytes})
    if key is not None:
        doc["source"].update({"packets": f["pkts_toserver"], "bytes": f["bytes_toserver"]})
        doc["destination"].update({"packets": f["pkts_toclient"],
                                   "bytes": f["bytes_toclient"]})
    if f.get("packets_expired"):
        doc["pcapwire"]["flow"]["packets_expired"] = f["packets_expired"]
    return Doc(f"flow:{f['flow_id']}", doc)


# ---- Suricata EVE --------------------------------------------------------------------------
def _hex_fingerprint(value: Any) -> str:
    return str(value or "").replace(":", "").lower()


def _http(doc: dict[str, Any], h: dict[str, Any]) -> None:
    _put(doc, "url.domain", h.get("hostname"))
    url = h.get("url")
    if isinstance(url, str) and url:
        parts = urlsplit(url)
        _put(doc, "url.original", url)
        _put(doc, "url.path", parts.path or None)
        _put(doc, "url.query", parts.query or None)
    _put(doc, "http.request.method", h.get("http_method"))
    _put(doc, "http.response.status_code", h.get("status"))
    _put(doc, "http.request.referrer", h.get("http_refer"))
    _put(doc, "http.response.mime_type", h.get("http_content_type"))
    _put(doc, "http.response.body.bytes", h.get("length"))
    _put(doc, "http.version", h.get("protocol"))
    _put(doc, "user_agent.original", h.get("http_user_agent"))


def _dns(doc: dict[str, Any], d: dict[str, Any]) -> None:
    queries = d.get("queries") if isinstance(d.get("queries"), list) else []
    first = queries[0] if queries and isinstance(queries[0], dict) else d
    _put(doc, "dns.question.name", first.get("rrname"))
    _put(doc, "dns.question.type", first.get("rrtype"))
    _put(doc, "dns.type", d.get("type") or ("answer" if d.get("answers") else "query"))
    _put(doc, "dns.response_code", d.get("rcode"))
    _put(doc, "dns.id", str(d["id"]) if d.get("id") is not None else None)
    answers: list[Any] = d["answers"] if isinstance(d.get("answers"), list) else []
    _put(doc, "dns.answers.data", [str(a["rdata"]) for a in answers
                                   if isinstance(a, dict) and a.get("rdata") is not None])


def _tls(doc: dict[str, Any], t: dict[str, Any]) -> None:
    _put(doc, "tls.client.server_name", t.get("sni"))
    _put(doc, "tls.version", t.get("version"))
    _put(doc, "tls.cipher", t.get("cipher_suite"))
    _put(doc, "tls.server.subject", t.get("subject"))
    _put(doc, "tls.server.issuer", t.get("issuerdn"))
    _put(doc, "tls.server.x509.serial_number", t.get("serial"))
    _put(doc, "tls.server.hash.sha1", _hex_fingerprint(t.get("fingerprint")) or None)
    for field, key in (("tls.server.not_before", "notbefore"),
                       ("tls.server.not_after", "notafter")):
        if isinstance(t.get(key), str):
            _put(doc, field, t[key] if t[key].endswith("Z") else t[key] + "Z")
    ja3, ja3s = t.get("ja3"), t.get("ja3s")
    _put(doc, "tls.client.ja3", ja3.get("hash") if isinstance(ja3, dict) else None)
    _put(doc, "tls.server.ja3s", ja3s.get("hash") if isinstance(ja3s, dict) else None)
    ja4 = t.get("ja4")
    _put(doc, "tls.client.ja4", ja4 if isinstance(ja4, str) else None)


def _file(doc: dict[str, Any], f: dict[str, Any]) -> None:
    _put(doc, "file.name", f.get("filename"))
    _put(doc, "file.size", f.get("size"))
    _put(doc, "file.mime_type", f.get("mime_type"))
    for algo in ("md5", "sha1", "sha256"):
        _put(doc, f"file.hash.{algo}", f.get(algo))
    hashes = [f[a] for a in ("md5", "sha1", "sha256") if f.get(a)]
    _put(doc, "related.hash", hashes)


def _email(doc: dict[str, Any], e: dict[str, Any]) -> None:
    _put(doc, "email.from.address", [e["from"]] if isinstance(e.get("from"), str) else None)
    for field, key in (("email.to.address", "to"), ("email.cc.address", "cc")):
        values = e.get(key)
        _put(doc, field, [str(v) for v in values] if isinstance(values, list) else None)
    _put(doc, "email.subject", e.get("subject"))
    names = e.get("attachment")
    if isinstance(names, list) and names:
        doc.setdefault("email", {})["attachments"] = [{"file": {"name": str(n)}}
                                                      for n in names]


_EVE_DATASET_KIND = {"anomaly": "event"}


def eve_doc(event: dict[str, Any], origin: Origin, n: int, flow_id: int | None,
            meta: EveMetadata | None = None) -> Doc | None:
    """One line of a run's ``eve-metadata.json`` (Suricata's own EVE): the ``n``-th;
    ``meta``: its :func:`~pcapwire.plugins.suricata.eve.metadata_record` when the caller
    made it already (to find its flow)."""
    if meta is None:
        from pcapwire.plugins.suricata.eve import metadata_record

        meta = metadata_record(event)
    if meta is None:
        return None
    etype = meta.event_type
    doc = _base(f"suricata.{etype}", _EVE_DATASET_KIND.get(etype, "event"), meta.ts,
                meta.flow, origin, flow_id)
    _put(doc, "network.protocol", meta.app_proto or None)
    body: dict[str, Any] = event[etype] if isinstance(event.get(etype), dict) else {}
    if etype == "http" or (etype == "fileinfo" and isinstance(event.get("http"), dict)):
        _http(doc, event["http"] if etype == "fileinfo" else body)
    if etype == "dns":
        _dns(doc, body)
    elif etype == "tls":
        _tls(doc, body)
    elif etype == "fileinfo":
        _file(doc, {**body, "mime_type": body.get("magic")})
    elif etype == "smtp":
        _put(doc, "email.sender.address", body.get("mail_from"))
        if isinstance(event.get("email"), dict):
            _email(doc, event["email"])
    elif etype == "anomaly":
        _put(doc, "event.reason", body.get("event"))
    return Doc(f"eve:{origin.run_id}:{origin.step}:{n}", doc)


# ---- Zeek ----------------------------------------------------------------------------------
def zeek_doc(meta: dict[str, Any], origin: Origin, n: int, flow_id: int | None) -> Doc:
    """One line of a Zeek step's ``metadata.json`` (:class:`ZeekMetadata` as a dict)."""
    log, row = str(meta.get("log", "")), meta.get("record") or {}
    flow = FlowKey.from_dict(meta["flow"]) if meta.get("flow") else None
    doc = _base(f"zeek.{log}", "event", float(meta.get("ts") or 0.0), flow, origin, flow_id)
    _put(doc, "zeek.uid", meta.get("uid"))
    get = row.get
    if log == "conn":
        _put(doc, "network.protocol", get("service"))
        _put(doc, "zeek.conn.state", get("conn_state"))
    elif log == "http":
        _http(doc, {"hostname": get("host"), "url": get("uri"), "http_method": get("method"),
                    "status": get("status_code"), "http_refer": get("referrer"),
                    "http_user_agent": get("user_agent"), "protocol": get("version")})
    elif log == "dns":
        _put(doc, "dns.question.name", get("query"))
        _put(doc, "dns.question.type", get("qtype_name"))
        _put(doc, "dns.response_code", get("rcode_name"))
        _put(doc, "dns.answers.data", [str(a) for a in get("answers") or []])
    elif log == "ssl":
        _tls(doc, {"sni": get("server_name"), "version": get("version"),
                   "cipher_suite": get("cipher"), "subject": get("subject"),
                   "issuerdn": get("issuer"), "ja3": {"hash": get("ja3")} if get("ja3")
                   else None, "ja4": get("ja4")})
    elif log == "files":
        _file(doc, {"filename": get("filename"), "size": get("seen_bytes"),
                    "mime_type": get("mime_type"), "md5": get("md5"), "sha1": get("sha1"),
                    "sha256": get("sha256")})
    elif log == "smtp":
        _put(doc, "email.sender.address", get("mailfrom"))
        _email(doc, {"from": get("from"), "to": get("to"), "cc": get("cc"),
                     "subject": get("subject")})
        _put(doc, "email.message_id", get("msg_id"))
        _put(doc, "email.x_mailer", get("user_agent"))
    return Doc(f"zeek:{origin.run_id}:{origin.step}:{n}", doc)


# ---- carved files and emails -----------------------------------------------------------------
def file_doc(rec: dict[str, Any], origin: Origin, flow_id: int | None,
             sandbox: dict[str, Any] | None = None) -> Doc:
    """A carved file (FileRecord as a dict); ``sandbox``: the worst sandbox verdict about
    its SHA-256 (severity, score, signature)."""
    flow = FlowKey.from_dict(rec["flow"])
    doc = _base("pcapwire.file", "event", float(rec["ts"]), flow, origin, flow_id)
    doc["event"].update({"category": ["file"], "type": ["info"]})
    _put(doc, "network.protocol", rec.get("protocol"))
    _file(doc, {**rec, "filename": rec.get("filename")})
    _put(doc, "file.direction", rec.get("direction"))
    if sandbox:
        doc["pcapwire"]["sandbox"] = sandbox
    return Doc(f"file:{origin.run_id or origin.query_id}:{rec['id']}", doc)


def email_doc(rec: dict[str, Any], origin: Origin, flow_id: int | None) -> Doc:
    """A reconstructed email (EmailRecord as a dict)."""
    flow = FlowKey.from_dict(rec["flow"])
    extra = rec.get("extra") or {}
    doc = _base("pcapwire.email", "event", float(rec["ts"]), flow, origin, flow_id)
    doc["event"].update({"category": ["email"], "type": ["info"]})
    _put(doc, "network.protocol", rec.get("protocol"))
    _put(doc, "email.from.address", [extra["from_address"]] if extra.get("from_address")
         else None)
    _put(doc, "email.to.address", list(extra.get("to_addresses") or []))
    _put(doc, "email.cc.address", list(extra.get("cc_addresses") or []))
    _put(doc, "email.sender.address", rec.get("mail_from"))
    _put(doc, "email.subject", rec.get("subject"))
    _put(doc, "email.message_id", rec.get("message_id"))
    _put(doc, "email.x_mailer", extra.get("user_agent"))
    attachments = [{"file": {k: v for k, v in (("name", a.get("filename")),
                                                ("mime_type", a.get("mime_type")),
                                                ("size", a.get("size")),
                                                ("hash", {"sha256": a.get("sha256")}))
                             if v}} for a in extra.get("attachment_details") or []]
    _put(doc, "email", {**doc.get("email", {}), "attachments": attachments}
         if attachments else None)
    _put(doc, "file.hash.sha256", rec.get("sha256"))
    _put(doc, "related.hash", [rec["sha256"]] if rec.get("sha256") else None)
    body = str(rec.get("text_body") or "")[:MAX_BODY_CHARS]
    _put(doc, "pcapwire.email.body", body)
    return Doc(f"email:{origin.run_id or origin.query_id}:{rec['id']}", doc)


# ---- verdicts ------------------------------------------------------------------------------
def verdict_doc(v: Verdict, origin: Origin, verdict_id: int, flow_id: int | None) -> Doc:
    """A verdict of the case store: the ECS export's document, with its pivots."""
    return Doc(f"verdict:{verdict_id}", verdict_body(v, origin, verdict_id, flow_id))


def verdict_body(v: Verdict, origin: Origin, verdict_id: int, flow_id: int | None
                 ) -> dict[str, Any]:
    """:func:`verdict_doc`'s document (a run's indexer keys it by run and number:
    :func:`.sources.run_docs`)."""
    doc = verdict_to_ecs(v, run_id=origin.run_id, verdict_id=verdict_id)
    us = math.floor(v.ts * 1e6)  # as _base's
    flow = v.flow
    pw = doc["pcapwire"]
    pw["pivot"].update(_pivot(flow, us - _MARGIN_US, us + _MARGIN_US, flow_id, (
        v.case or origin.case, origin.run_id, v.query_id or origin.query_id, v.step)))
    if flow_id is not None:
        pw["flow"] = {"id": flow_id}
    doc["related"] = {"ip": sorted({flow.src, flow.dst})} if flow is not None and flow.src \
        else {}
    for empty in [k for k, val in pw.items() if val in ("", None)]:
        del pw[empty]
    return doc


# ---- trigger hits --------------------------------------------------------------------------
def hit_doc(trigger: str, hit: Any, key: str, case: str = "") -> Doc:
    """A trigger's hit (:class:`pcapwire.triggers.db.Hit`: rule, 5-tuple, ts, evidence,
    flow_id) as an alert document; ``key`` its identity (e.g. the match id); ``case`` the
    case its pivots name (the trigger's). Hunts and watches: :mod:`pcapwire.triggers.searchdocs`."""
    flow = FlowKey(int(hit.proto), str(hit.src_ip), int(hit.src_port), str(hit.dest_ip),
                   int(hit.dest_port))
    doc = _base("pcapwire.trigger", "alert", float(hit.ts), flow, Origin(case=case),
                hit.flow_id)
    kind, _, value = str(hit.rule).partition(":")
    doc["rule"] = {"id": hit.rule, "ruleset": kind, "name": value or hit.rule}
    doc["pcapwire"]["trigger"] = trigger
    doc["pcapwire"]["evidence"] = hit.evidence
    return Doc(f"trigger:{trigger}:{key}", doc)
