"""Every file and email fact of the corpus manifest, checked against pcapwire's carving.

Data-driven: one test per (case, fact). The manifest's ``hash_semantics`` decides which of
our hashes a peer's value is compared with:

* ``zeek-file-analysis``: the decoded file (our primary hashes); for quoted-printable MIME
  parts Zeek hashes the decoded bytes plus the CRLF before the boundary, which we expose
  as ``extra["zeek_hashes"]`` (only on quoted-printable parts; the test checks that too).
* ``arkime-http-body``: the body as transferred (``extra["transferred"]`` when a
  Content-Encoding was decoded, else the primary hashes).
* ``suricata-fileinfo`` / ``suricata-filestore``: the decoded file; filestore's
  ``<sha256[:2]>/<sha256>`` layout is ours as well.

Peer spellings kept as they are (Zeek logs rcpt_to as a set, so order is not compared;
Arkime strips the angle brackets of Message-ID and keeps only the first physical line of
folded headers, lower-cased addresses); each such normalisation is in a helper below.
"""

from __future__ import annotations

import email.utils
from pathlib import Path
from typing import Any

import pytest
from conftest import CASES, corpus_file
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.extract.carve import CarveResult
from pcapwire.extract.source import carve_pcap, carve_streams
from pcapwire.records import EmailRecord, FileRecord
from tshark_streams import stream_records

try:
    import pcapwire.reassembly  # noqa: F401
    HAVE_REASSEMBLY = True
except ImportError:
    HAVE_REASSEMBLY = False

#: Two sources of reassembled bytes: tshark's (independent of pcapwire, always run) and
#: pcapwire's own reassembler (the product path, run when the build has it).
SOURCES = ["tshark", pytest.param("pcapwire", marks=pytest.mark.skipif(
    not HAVE_REASSEMBLY, reason="pcapwire.reassembly is not in this build yet"))]
_CACHE: dict[tuple[str, str], CarveResult] = {}


@pytest.fixture(scope="module", params=SOURCES)
def store_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Path:
    return tmp_path_factory.mktemp(f"fidelity-{request.param}-", numbered=True)


def carve(case_id: str, root: Path) -> CarveResult:
    key = (root.name.split("-")[1], case_id)  # the source is in the directory name
    if key not in _CACHE:
        store = ArtifactStore(root / case_id)
        if key[0] == "tshark":
            assert root.name.startswith("fidelity-tshark-")
            _CACHE[key] = carve_streams(stream_records(corpus_file(case_id)), store)
        else:
            result, _damage = carve_pcap(corpus_file(case_id), store)
            _CACHE[key] = result
    return _CACHE[key]


def _tuple(flow: dict[str, Any]) -> tuple[Any, ...]:
    if "orig_h" in flow:
        return flow["orig_h"], flow["orig_p"], flow["resp_h"], flow["resp_p"]
    if "src_ip" in flow:
        return flow["src_ip"], flow["src_port"], flow["dest_ip"], flow["dest_port"]
    return flow["src"], flow["sport"], flow["dst"], flow["dport"]


def _same_flow(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """A peer's None port (Zeek left it out) matches any port."""
    return all(t is None or o == t for o, t in zip(_tuple(ours), _tuple(theirs), strict=True))


def _flow_match(rec: FileRecord | EmailRecord, flow: dict[str, Any]) -> bool:
    return _same_flow(rec.flow.to_dict(), flow)


def _facts(kind: str) -> list[Any]:
    out = []
    for cid, case in CASES.items():
        if kind in ("files", "emails", "file_parts", "http", "imap", "ftp"):
            items = (case.get("expect") or {}).get(kind) or []
            if kind == "imap" and items:
                items = [items]
        else:
            items = ((case.get("computed") or {}).get(kind) or {})
            items = items.get("messages") or items.get("connections") or []
        out += [pytest.param(cid, i, item, id=f"{cid}-{kind}-{i}")
                for i, item in enumerate(items)]
    return out


def _ours(rec: FileRecord, semantics: str) -> dict[str, Any]:
    """Our hashes in the peer's semantics."""
    primary = {"size": rec.size, "md5": rec.md5, "sha1": rec.sha1, "sha256": rec.sha256}
    if semantics.startswith("arkime-http-body"):
        return rec.extra.get("transferred") or primary
    return primary


# ---- expect.files -----------------------------------------------------------------------
@pytest.mark.parametrize("case_id,index,fact", _facts("files"))
def test_peer_file(case_id: str, index: int, fact: dict[str, Any], store_root: Path) -> None:
    result = carve(case_id, store_root)
    sem = fact.get("hash_semantics", "")
    files = [f for f in result.files if "flow" not in fact or _flow_match(f, fact["flow"])]
    if "protocol" in fact:
        files = [f for f in files if f.protocol == fact["protocol"]]
    if "direction" in fact:
        want = {"request": "orig", "response": "resp"}[fact["direction"]]
        files = [f for f in files if f.direction == want]
    assert files, f"no {fact.get('protocol', '')} file carved on {fact.get('flow')}"

    if "md5_set" in fact:  # Arkime: distinct MD5s of the request bodies, sorted
        assert sorted({_ours(f, sem)["md5"] for f in files}) == fact["md5_set"]
        return
    keys = [k for k in ("sha256", "sha1", "md5") if fact.get(k)]
    if not keys:  # zeek-gzip-pcap-iso-download: only name and type are known
        named = [f for f in files if f.filename == fact["filename"]]
        assert [f.mime_type for f in named] == [fact["mime_type"]]
        return

    def hit(f: FileRecord) -> dict[str, Any] | None:
        for variant in (_ours(f, sem), f.extra.get("zeek_hashes")):
            if variant and all(variant[k] == fact[k] for k in keys):
                return variant
        return None

    matches = [(f, hit(f)) for f in files if hit(f)]
    assert matches, f"no carved file has {keys[0]} {fact[keys[0]]}"
    f, variant = matches[0]
    if variant is f.extra.get("zeek_hashes"):
        # the CRLF variant exists only for quoted-printable parts, as the manifest says
        assert sem == "zeek-file-analysis" and f.extra["transfer_encoding"] == \
            "quoted-printable"
    if "size" in fact:
        assert variant["size"] == fact["size"]
    if fact.get("filename"):
        assert f.filename == fact["filename"]
    if "mime_depth" in fact:
        assert f.extra["mime_entity"] == fact["mime_depth"]
    if fact.get("missing_bytes") == 0:
        assert not f.incomplete and f.missing_ranges == []
    if sem == "suricata-filestore":
        assert Path(f.path).relative_to(store_root / case_id) == Path(
            f"{f.sha256[:2]}/{f.sha256}")
    if fact.get("mime_type"):
        want = KNOWN_MIME_DIFFERENCES.get(f.sha256, (fact["mime_type"], fact["mime_type"]))
        assert want[0] == fact["mime_type"]
        assert f.mime_type == _libmagic_equivalent(want[1])
    if fact.get("magic"):  # Arkime: libmagic of the body as transferred
        assert _ours(f, sem).get("mime_type", f.mime_type) == _libmagic_equivalent(
            fact["magic"])


#: Files where Zeek's own signatures and libmagic name the type differently, by SHA-256:
#: (Zeek's type, libmagic's type). libmagic reads the JavaScript as C source because of
#: its braces and comments; Zeek's signature set has no JavaScript and calls it text.
KNOWN_MIME_DIFFERENCES = {
    "6a509fd05aa7c8fa05080198894bb19e638554ffcee0e0b3d7bc8ff54afee1da": ("text/plain",
                                                                         "text/x-c"),
}


def _libmagic_equivalent(peer: str) -> str:
    """libmagic's name for a peer's MIME type. Zeek's own signatures say text/json where
    libmagic says application/json; Arkime uses the legacy application/x-gzip."""
    return {"text/json": "application/json", "application/x-gzip": "application/gzip"}.get(
        peer, peer)


# ---- expect.emails ----------------------------------------------------------------------
def _email_on(result: CarveResult, flow: dict[str, Any]) -> EmailRecord:
    found = [e for e in result.emails if _flow_match(e, flow)]
    assert len(found) == 1, f"{len(found)} emails on {flow}"
    return found[0]


@pytest.mark.parametrize("case_id,index,fact", _facts("emails"))
def test_peer_email(case_id: str, index: int, fact: dict[str, Any], store_root: Path) -> None:
    e = _email_on(carve(case_id, store_root), fact["flow"])
    zeek = fact["source"].startswith("zeek/")
    assert e.mail_from == fact["mail_from"]
    if zeek:  # Zeek's rcpt_to is a set
        assert sorted(e.rcpt_to) == sorted(fact["rcpt_to"])
    else:
        assert e.rcpt_to == fact["rcpt_to"]
    assert e.subject == fact["subject"]
    if zeek:
        assert e.from_ == fact["from"]
        assert e.to == (fact["to"] or [])
        assert e.cc == (fact["cc"] or [])
        assert e.date == fact["date"]
        assert e.message_id == fact["message_id"]
        assert e.extra["in_reply_to"] == (fact.get("in_reply_to") or "")
        assert e.extra["user_agent"] == (fact.get("user_agent") or "")
    else:
        if "message_id" in fact:  # Arkime drops the angle brackets
            assert e.message_id.strip("<>") == fact["message_id"]
        if "user_agent" in fact:
            assert e.extra["user_agent"] == fact["user_agent"]
    for att in fact.get("attachments") or []:
        mine = [a for a in e.extra["attachment_details"] if a["filename"] == att["filename"]]
        assert len(mine) == 1
        rec = next(f for f in carve(case_id, store_root).files if f.id == mine[0]["file_id"])
        assert (rec.md5, rec.sha256, rec.mime_type) == (att["md5"], att["sha256"],
                                                        att["magic"])
        assert rec.id in e.attachments


# ---- computed.smtp_messages / pop3_messages ---------------------------------------------
def _leaf_files(result: CarveResult, e: EmailRecord) -> list[FileRecord]:
    ids = e.extra["file_ids"]
    return sorted((f for f in result.files if f.id in ids), key=lambda f: f.extra["mime_entity"])


def _check_leaves(files: list[FileRecord], leaves: list[dict[str, Any]]) -> None:
    assert [f.sha256 for f in files] == [p["sha256"] for p in leaves]
    for f, p in zip(files, leaves, strict=True):
        assert (f.size, f.md5, f.sha1) == (p["size"], p["md5"], p["sha1"])
        assert f.filename == (p.get("filename") or "")
        assert f.extra["declared_mime_type"] == p["content_type"]
        if "zeek_style_plus_crlf" in p:
            z = p["zeek_style_plus_crlf"]
            assert f.extra["zeek_hashes"] == {k: z[k] for k in ("size", "md5", "sha1", "sha256")}
        else:
            assert "zeek_hashes" not in f.extra
        if p.get("disposition") == "attachment":
            assert f.extra["mime_role"] == "attachment"


def _same_date(ours: str, theirs: str) -> bool:
    return email.utils.parsedate_to_datetime(ours) == email.utils.parsedate_to_datetime(theirs)


@pytest.mark.parametrize("case_id,index,fact", _facts("smtp_messages"))
def test_computed_smtp_message(case_id: str, index: int, fact: dict[str, Any],
                               store_root: Path) -> None:
    result = carve(case_id, store_root)
    e = _email_on(result, fact["flow"])
    assert (e.sha256, e.size) == (fact["message_sha256"], fact["message_size"])
    assert Path(e.path).read_bytes().__len__() == fact["message_size"]
    assert (e.mail_from, e.rcpt_to) == (fact["mail_from"], fact["rcpt_to"])
    assert e.extra["transfer"] == fact["transfer"]
    assert e.subject == fact["subject"]
    assert e.extra["from_address"] == email.utils.parseaddr(fact["from"])[1]
    assert e.extra["to_addresses"] == [a for _, a in email.utils.getaddresses([fact["to"]])]
    if fact.get("date"):
        assert _same_date(e.date, fact["date"])
    assert e.message_id == fact.get("message_id", "")
    _check_leaves(_leaf_files(result, e), fact["leaf_parts"])


@pytest.mark.parametrize("case_id,index,fact", _facts("pop3_messages"))
def test_computed_pop3_connection(case_id: str, index: int, fact: dict[str, Any],
                                  store_root: Path) -> None:
    result = carve(case_id, store_root)
    mine = [e for e in result.emails if _flow_match(e, fact["flow"])]
    assert [e.extra["command"] for e in mine] == [m["command"] for m in fact["messages"]]
    for e, m in zip(mine, fact["messages"], strict=True):
        assert (e.protocol, e.sha256, e.size) == ("pop3", m["message_sha256"],
                                                  m["message_size"])
        assert e.subject == m["subject"] and e.message_id == m["message_id"]
        assert _same_date(e.date, m["date"])
        assert e.extra["from_address"] == email.utils.parseaddr(m["from"])[1]
        assert e.extra["cc_addresses"] == [a for _, a in email.utils.getaddresses(
            [m["cc"]])] if m.get("cc") else e.extra["cc_addresses"] == []
        _check_leaves(_leaf_files(result, e), m["leaf_parts"])
    octets = CASES[case_id]["expect"]["server_reported"]["octets"]
    assert sum(e.size for e in mine) == octets  # what the server's STAT announced


# ---- computed.http_transactions and expect.http -----------------------------------------
@pytest.mark.parametrize("case_id,index,fact", _facts("http_transactions"))
def test_computed_http_connection(case_id: str, index: int, fact: dict[str, Any],
                                  store_root: Path) -> None:
    result = carve(case_id, store_root)
    flow = fact["flow"]
    log = [t for t in result.http if _same_flow(t["flow"], flow)]
    assert [t["request"]["start_line"] for t in log] == [r["start_line"]
                                                          for r in fact["requests"]]
    assert [t["response"]["start_line"] for t in log] == [r["start_line"]
                                                           for r in fact["responses"]]
    files = [f for f in result.files if _flow_match(f, flow) and "email_id" not in f.extra
             and "assembled_from_ranges" not in f.extra]
    for direction, key in (("orig", "requests"), ("resp", "responses")):
        expected = [m for m in fact[key] if m["body_as_transferred"]["size"]]
        mine = [f for f in files if f.direction == direction]
        if key == "requests" and any("multipart_parts" in m for m in expected):
            parts = [p for m in expected for p in m["multipart_parts"]]
            assert [f.sha256 for f in mine] == [p["sha256"] for p in parts]
            assert [f.extra["container"]["sha256"] for f in mine] == [
                m["body_as_transferred"]["sha256"] for m in expected for _ in m[
                    "multipart_parts"]]
            assert [f.extra["form_field"] for f in mine] == [p["name"] for p in parts]
            continue
        assert len(mine) == len(expected)
        for f, m in zip(mine, expected, strict=True):
            assert _ours(f, "arkime-http-body")["sha256"] == m["body_as_transferred"]["sha256"]
            assert _ours(f, "arkime-http-body")["size"] == m["body_as_transferred"]["size"]
            decoded = m.get("body_decoded") or m["body_as_transferred"]
            assert (f.sha256, f.size) == (decoded["sha256"], decoded["size"])
            assert f.incomplete is (not m.get("complete", True))


@pytest.mark.parametrize("case_id,index,fact", _facts("http"))
def test_peer_http_transaction(case_id: str, index: int, fact: dict[str, Any],
                               store_root: Path) -> None:
    result = carve(case_id, store_root)
    f = fact["flow"]
    log = [t for t in result.http if _same_flow(t["flow"], f)]
    t = log[fact.get("trans_depth", 1) - 1]
    req, resp = t["request"], t["response"]
    assert req["start_line"].split(" ")[:2] == [fact["method"], fact["uri"]]
    if "host" in fact:
        assert req["headers"].get("host", "") == (fact["host"] or "")
    if "request_body_len" in fact:
        assert req["body_size"] == fact["request_body_len"]
    if "response_body_len" in fact:  # Zeek counts the body after Content-Encoding decoding
        assert resp.get("decoded_size", resp["body_size"]) == fact["response_body_len"]
    if fact["status_code"] is None:  # an HTTP request answered by something else (SSH)
        assert resp is None
    else:
        assert int(resp["start_line"].split(" ")[1]) == fact["status_code"]


# ---- 206 ranges ------------------------------------------------------------------------
@pytest.mark.parametrize("case_id,index,fact", _facts("file_parts"))
def test_peer_file_part(case_id: str, index: int, fact: dict[str, Any],
                        store_root: Path) -> None:
    result = carve(case_id, store_root)
    parts = [f for f in result.files if _flow_match(f, fact["flow"]) and "content_range"
             in f.extra]
    assert len(parts) == 1
    r = parts[0].extra["content_range"]
    assert f"bytes {r['first']}-{r['last']}/{r['total']}" == fact["content_range"]
    assert parts[0].size == r["last"] - r["first"] + 1


def test_range_assembled_objects(store_root: Path) -> None:
    case_id = "zeek-http-206-ranges-two-connections"
    (want,) = CASES[case_id]["computed"]["http_transactions"]["range_assembled_objects"]
    joined = [f for f in carve(case_id, store_root).files
              if "assembled_from_ranges" in f.extra]
    assert [(f.sha256, f.size, f.incomplete) for f in joined] == [
        (want["sha256"], want["size"], not want["complete"])]
    info = joined[0].extra["assembled_from_ranges"]
    assert len(info["parts"]) == want["pieces"]
    assert info["conflicting_overlaps"] == want["conflicting_overlaps"]


# ---- IMAP (Arkime) and FTP (Zeek) --------------------------------------------------------
def _first_line(value: str) -> str:
    return value.split("\n", 1)[0].rstrip("\r")


@pytest.mark.parametrize("case_id,index,fact", _facts("imap"))
def test_peer_imap_session(case_id: str, index: int, fact: dict[str, Any],
                           store_root: Path) -> None:
    """Arkime lists senders, recipients and subjects of the fetched headers; it reads only
    the first physical line of a folded header and lower-cases addresses."""
    from pcapwire.extract import mime

    mails = [e for e in carve(case_id, store_root).emails if _flow_match(e, fact["flow"])]
    assert mails and all(e.protocol == "imap" for e in mails)
    assert sorted({e.extra["folder"] for e in mails}) == fact["folder"]
    heads = [mime.parse_message(Path(e.path).read_bytes()) for e in mails]
    first = {k: [_first_line(v) for h in heads for n, v in h.headers if n.lower() == k]
             for k in ("from", "to", "cc", "subject")}
    senders = {a.lower() for a in mime.bare_addresses(first["from"])}
    rcpts = {a.lower() for a in mime.bare_addresses(first["to"] + first["cc"]) if "@" in a}
    assert sorted(senders) == fact["senders"]
    assert sorted(rcpts) == fact["recipients"]
    assert sorted(set(first["subject"])) == sorted(fact["subjects"])  # raw, trailing space too
    # our own records keep the whole (unfolded) header
    assert {e.extra["from_address"].lower() for e in mails} == senders
    assert any(e.subject.endswith("king.....") for e in mails)


def test_peer_ftp_session(store_root: Path) -> None:
    case_id = "zeek-ftp-ipv6-epsv-eprt"
    facts = CASES[case_id]["expect"]["ftp"]
    result = carve(case_id, store_root)
    announced = [x["data_channel.resp_p"] for x in facts if x["data_channel.resp_p"]]
    assert sorted({t["data_port"] for t in result.ftp}) == sorted(announced)
    retr = [x for x in facts if x["command"] == "RETR"]
    files = [f for f in result.files if f.protocol == "ftp"]
    assert [(f.filename, f.size) for f in files] == [
        (x["arg"].rsplit("/", 1)[-1], x["file_size"]) for x in retr]
    assert [f.extra["ftp"]["passive"] for f in files] == [True, False]
    assert all(f.extra["ftp"]["user"] == "anonymous" for f in files)
    assert all("test" not in repr(f.extra) for f in files)  # the password is never kept
