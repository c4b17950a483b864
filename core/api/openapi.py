"""The OpenAPI 3.1 document, served at ``/api/v1/openapi.json``.

Written by hand from :mod:`.schemas`; ``x-required-role`` on every operation is what the
route declares (a test checks that they agree and that every ``/api`` route is here).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pcapwire.api.auth import PUBLIC, role
from pcapwire.api.schemas import NAME, SCHEMAS, ref
from pcapwire.api.verdicts import DEFAULT_VERDICT_FORMAT, VERDICT_FORMATS
from pcapwire.cluster.tls import ON_BEHALF_OF_HEADER, ROLE_HEADER

routes = web.RouteTableDef()
OPENAPI_PATH = "/api/v1/openapi.json"
ON_BEHALF_DOC = (
    f"Optional headers on any authenticated request, from a cluster central to its sensor: "
    f"`{ON_BEHALF_OF_HEADER}: <the central's user>` (named in the custody log) and "
    f"`{ROLE_HEADER}: viewer|analyst|admin` (that user's role: the request runs with the "
    "lesser of it and the token's role; a 403 then names it). Honoured only by a server "
    "with mutual TLS (`pcapwire serve --client-ca`); elsewhere 400 on_behalf_of_needs_mtls.")

_ERR = {"application/json": {"schema": ref("Error")}}
_REASONS = {400: "Invalid input", 401: "Missing, unknown or revoked token",
            403: "Role too low, CSRF token missing, or path not allowed",
            404: "Not found in your tenant", 409: "Conflicts with the current state",
            413: "Body or upload over its limit", 415: "Wrong Content-Type",
            422: "The query ended without a complete result",
            429: "Too many running queries in your tenant",
            507: "The tenant's storage quota would be exceeded"}
_AUTH_ERRS = (400, 401, 403)


def _json(schema: str, desc: str = "OK") -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": ref(schema)}}}


def _param(name: str, where: str = "query", schema: dict[str, Any] | None = None,
           desc: str = "", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "description": desc, "schema": schema or {"type": "string"}}


def op(summary: str, need: str, ok: dict[int, dict[str, Any]], *, errors: tuple[int, ...] = (),
       body: str | dict[str, Any] | None = None, params: tuple[dict[str, Any], ...] = (),
       tag: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "x-required-role": need,
                           "tags": [tag] if tag else [], "parameters": list(params),
                           "responses": {str(k): v for k, v in ok.items()}}
    codes = set(errors) | (set(_AUTH_ERRS) if need != PUBLIC else set())
    if body is not None:
        codes |= {400, 413, 415}
        content = {"application/json": {"schema": ref(body)}} if isinstance(body, str) else body
        out["requestBody"] = {"required": True, "content": content}
    for code in sorted(codes):
        out["responses"][str(code)] = {"description": _REASONS[code], "content": _ERR}
    if need == PUBLIC:
        out["security"] = []
    return out


QID = _param("id", "path", {"type": "string"}, "query id")
CASE = _param("case", "path", {"type": "string"}, "case name")
LIMIT = _param("limit", schema={"type": "integer", "minimum": 1, "maximum": 1000})
OFFSET = _param("offset", schema={"type": "integer", "minimum": 0})
SHA = _param("sha256", "path", {"type": "string"}, "SHA-256 of the file (hex)")
BINARY = {"description": "the bytes", "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}
TIMEQ = {"type": "string", "description": "ISO 8601 or Unix seconds"}
VERDICT_FORMAT = _param("format", schema={"enum": list(VERDICT_FORMATS),
                                          "default": DEFAULT_VERDICT_FORMAT},
                        desc="verdicts as ECS documents (ecs, the default: the form of "
                             "`pcapwire run --json`, accepted by POST /api/v1/events) or in "
                             "pcapwire's native form (native)")
PCAP = {"description": "One continuous capture (classic pcap; pcapng when link types mix), "
        "sent while the query runs", "content": {"application/vnd.tcpdump.pcap": {
            "schema": {"type": "string", "format": "binary"}}}}
EVENT_PARAMS = (
    _param("margin", schema={"type": "number", "minimum": 0, "maximum": 86400},
           desc="seconds added before and after the event (server default otherwise)"),
    _param("case", schema={"type": "string", "minLength": 1, "maxLength": 200}),
    _param("event", schema={"type": "string", "maxLength": 200},
           desc="event name for the history (default: derived from the event)"),
    _param("workflows", desc="comma-separated workflow names to run on the result"))
UPLOAD = {"application/vnd.tcpdump.pcap": {"schema": {"type": "string", "format": "binary"}},
          "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
          "application/json": {"schema": ref("IngestPath")}}

HASHLIST = _param("list", "path", {"type": "string"}, "list name")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
HASHLIST_UPLOAD = {"text/plain": {"schema": {"type": "string"}},
                   "text/csv": {"schema": {"type": "string"}},
                   "application/gzip": _BINARY, "application/vnd.sqlite3": _BINARY,
                   "application/octet-stream": _BINARY}
HASHLIST_PARAMS = (
    _param("name", schema=NAME, required=True, desc="list name"),
    _param("kind", schema={"enum": ["allow", "deny"]}, required=True),
    _param("severity", schema={"enum": ["info", "low", "medium", "high", "critical"]},
           desc="severity of a match (default: deny critical, allow info)"),
    _param("format", schema={"enum": ["auto", "text", "csv", "nsrl", "rds3"]},
           desc="default auto (detected from the content)"),
    _param("column", schema={"type": "string", "maxLength": 1000},
           desc="CSV hash column(s), comma-separated (default: columns named like a hash)"),
    _param("label_column", schema={"type": "string", "maxLength": 200},
           desc="CSV column with each entry's label"),
    _param("description", schema={"type": "string", "maxLength": 500}),
    _param("mode", schema={"enum": ["create", "replace", "append"]}, desc="default create"),
    _param("filename", schema={"type": "string", "maxLength": 200},
           desc="name shown in errors (default: upload)"))

HOLD_ID = _param("hold_id", "path", {"type": "integer", "minimum": 1, "maximum": 2**62},
                 "hold id")
HOLD_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/holds": {
        "post": op("Create a legal hold: the matching packets are copied into the case's "
                   "evidence now (standard pcap, SHA-256 recorded), and while the window "
                   "reaches into the future, as they are recorded; retention never deletes "
                   "evidence", "analyst", {201: _json("Hold", "Created")}, errors=(429,),
                   body="HoldRequest", tag="holds"),
        "get": op("The tenant's holds: size, parts and what each still protects", "viewer",
                  {200: _json("HoldList")}, tag="holds", params=(
                      _param("case", desc="only this case's holds"),
                      _param("state", schema={"enum": ["open", "complete", "released"]})))},
    "/api/v1/holds/{hold_id}": {"get": op(
        "One hold: selection, window, reason, parts with their hashes, what it protects",
        "viewer", {200: _json("Hold")}, errors=(404,), params=(HOLD_ID,), tag="holds")},
    "/api/v1/holds/{hold_id}/release": {"post": op(
        "Release a hold (a reason is required; audited in the custody log): protection and "
        "copying stop, the evidence already copied stays", "admin", {200: _json("Hold")},
        errors=(404, 409), body="HoldRelease", params=(HOLD_ID,), tag="holds")},
    "/api/v1/holds/{hold_id}/parts/{n}": {"get": op(
        "One evidence part of a hold, as an attachment", "viewer", {200: {
            "description": "the part (classic pcap; pcapng when link types mix)", "content": {
                "application/vnd.tcpdump.pcap": {"schema": {"type": "string",
                                                            "format": "binary"}}}}},
        errors=(404,), params=(HOLD_ID, _param("n", "path", {
            "type": "integer", "minimum": 1, "maximum": 2**62}, "part number")),
        tag="holds")},
}

RETENTION_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/retention": {
        "get": op("The tenant store's retention: policy, usage against the watermarks, what "
                  "is kept (deletable, protected by reason), what has expired, the alarm",
                  "viewer", {200: _json("RetentionStatus")}, errors=(409,), tag="retention"),
        "put": op("Replace the tenant store's retention policy (store.toml [retention]; the "
                  "other settings stay); applies from the next run", "admin",
                  {200: _json("RetentionStatus")}, errors=(409,), body="RetentionPolicy",
                  tag="retention")},
    "/api/v1/retention/run": {"post": op(
        "Run retention now: segments past max_age, then oldest first above the high "
        "watermark until the low one; never held, open or in-place data (dry_run: only say "
        "what would go)", "admin", {200: _json("RetentionRun")}, errors=(409,),
        params=(_param("dry_run", schema={"enum": ["true", "false"]}),), tag="retention")},
}

TRIGGER_ID = _param("trigger_id", "path", {"type": "integer", "minimum": 1,
                                            "maximum": 2**62}, "trigger id")
_TRIGGER_OK = {200: _json("Trigger")}
SEARCH_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/search": {"get": op(
        "Search the metadata index (flows, Suricata/Zeek records, carved files and emails, "
        "verdicts; ECS field names) with the search language of docs/search.md; every hit "
        "carries its pivots (a PCAP query body, its flow, its case). A query that does not "
        "parse: 400 with details.column", "viewer", {200: _json("SearchResult")},
        tag="search", params=(
            _param("q", required=True, schema={"type": "string", "minLength": 1,
                                                "maxLength": 4096},
                   desc="e.g. url.domain:*.example AND http.request.method:POST"),
            _param("case", schema={"type": "string", "minLength": 1, "maxLength": 200},
                   desc="only records of this case"),
            _param("limit", schema={"type": "integer", "minimum": 1, "maximum": 1000})))},
}

TRIGGER_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/triggers": {
        "post": op("Create a trigger (rules as text, indicators, scope, workflows, targets; "
                   "indicator_files: STIX 2.1, MISP or text content, problems answered 400 "
                   "with file and line or object): its hunt over history is queued, then it "
                   "watches what arrives", "analyst", {201: _json("TriggerSaved", "Created")},
                   errors=(409,), body="TriggerRequest", tag="triggers"),
        "get": op("The tenant's triggers with state, current hunt (progress, ETA) and number "
                  "of matches", "viewer", {200: _json("TriggerList")}, tag="triggers")},
    "/api/v1/triggers/{trigger_id}": {
        "get": op("One trigger: definition (no secrets), versions, hunts with progress, ETA "
                  "and failed units", "viewer", _TRIGGER_OK, errors=(404,),
                  params=(TRIGGER_ID,), tag="triggers"),
        "put": op("Replace a trigger's definition: a new version and hunt when its rules, "
                  "indicators or scope change (the previous hunt is aborted); a webhook "
                  "secret sent as (set) keeps the stored one", "analyst",
                  {200: _json("TriggerSaved")}, errors=(404, 409), body="TriggerRequest",
                  params=(TRIGGER_ID,), tag="triggers"),
        "delete": op("Delete a trigger: its hunt and watch end", "admin",
                     {204: {"description": "Deleted"}}, errors=(404,), params=(TRIGGER_ID,),
                     tag="triggers")},
    "/api/v1/triggers/{trigger_id}/pause": {"post": op(
        "Pause: the hunt stops after its running units, the watch stops", "analyst",
        _TRIGGER_OK, errors=(404,), params=(TRIGGER_ID,), tag="triggers")},
    "/api/v1/triggers/{trigger_id}/resume": {"post": op(
        "Resume the hunt (finished units are kept) and the watch", "analyst", _TRIGGER_OK,
        errors=(404,), params=(TRIGGER_ID,), tag="triggers")},
    "/api/v1/triggers/{trigger_id}/abort": {"post": op(
        "Abort the current hunt (its matches stay; the watch goes on)", "analyst",
        _TRIGGER_OK, errors=(404, 409), params=(TRIGGER_ID,), tag="triggers")},
    "/api/v1/triggers/{trigger_id}/matches": {"get": op(
        "The result set, hunt and watch alike, one per (rule, flow), oldest first; each with "
        "its pivots (a query body for its PCAP, its flow id)", "viewer",
        {200: _json("TriggerMatchList")}, errors=(404,), params=(
            TRIGGER_ID, _param("version", schema={"type": "integer", "minimum": 1,
                                                  "maximum": 2**62},
                               desc="only what this version found"),
            _param("after", schema={"type": "integer", "minimum": 0, "maximum": 2**62},
                   desc="matches with a greater id (next_after of the previous page)"),
            LIMIT), tag="triggers")},
    "/api/v1/triggers/{trigger_id}/diff": {"get": op(
        "What version `to` found that version `from` did not (new) and what `from` found "
        "that `to` does not (gone), as matches with pivots; the first `limit` of each and "
        "their totals", "viewer", {200: _json("TriggerDiff")}, errors=(404,), params=(
            TRIGGER_ID, _param("to", schema={"type": "integer", "minimum": 1,
                                             "maximum": 2**62},
                               desc="a version of the trigger (default: the current one)"),
            _param("from", schema={"type": "integer", "minimum": 0, "maximum": 2**62},
                   desc="the version to compare with (default: to - 1; 0: none)"),
            LIMIT), tag="triggers")},
    "/api/v1/triggers/{trigger_id}/events": {"get": op(
        "Live events (Server-Sent Events): hunt (state, hunt progress and ETA; first and on "
        "every change), match (each new match, its id the event id: Last-Event-ID "
        "resumes), end (deleted, or reconnect)", "viewer", {200: {
            "description": "text/event-stream", "content": {"text/event-stream": {
                "schema": {"type": "string"}}}}}, errors=(404,), params=(
            TRIGGER_ID, _param("after", schema={"type": "integer", "minimum": 0,
                                                "maximum": 2**62},
                               desc="send the matches after this id first")),
        tag="triggers")},
}

_ENTRY = {"type": "object", "description": "a custody entry as kept (seq, time, actor, "
          "action, case, objects, details, prev), or {line, invalid} for a line that is "
          "not one"}
_PROBLEM = {"type": "object", "required": ["log", "message"], "properties": {
    "log": {"type": "string"}, "message": {"type": "string"}, "line": {"type": "integer"},
    "seq": {"type": "integer"}, "action": {"type": "string"}, "path": {"type": "string"},
    "expected": {"type": "string"}, "actual": {"type": "string"}}}
_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
CUSTODY_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/cases/{case}/custody": {"get": op(
        "The case's chain-of-custody log, oldest first, and its head (hash of its last line)",
        "viewer", {200: {"description": "OK", "content": {"application/json": {"schema": {
            "type": "object", "required": ["case", "total", "head", "entries"],
            "properties": {"case": {"type": "string"}, "total": {"type": "integer"},
                           "head": _HEX, "entries": {"type": "array", "items": _ENTRY}}}}}}},
        errors=(404,), params=(CASE, LIMIT, OFFSET), tag="custody")},
    "/api/v1/cases/{case}/custody/verify": {"post": op(
        "Recompute the case's chain (and the store log's) and hash every file they name; "
        "verified false names the first entry or file that does not match", "analyst",
        {200: {"description": "OK", "content": {"application/json": {"schema": {
            "type": "object", "required": ["case", "verified", "entries", "head", "problems"],
            "properties": {
                "case": {"type": "string"}, "verified": {"type": "boolean"},
                "entries": {"type": "integer"}, "head": _HEX,
                "store_entries": {"type": "integer"}, "files_checked": {"type": "integer"},
                "bytes_hashed": {"type": "integer"},
                "problems": {"type": "array", "items": _PROBLEM},
                "unverified": {"type": "array", "items": {"type": "string"}}}}}}}},
        errors=(404,), params=(CASE,), tag="custody")},
    "/api/v1/custody/public-key": {"get": op(
        "The installation's Ed25519 public key (PEM), which verifies bundle signatures",
        "viewer", {200: {"description": "OK", "content": {"application/json": {"schema": {
            "type": "object", "required": ["algorithm", "public_key_pem",
                                           "fingerprint_sha256"],
            "properties": {"algorithm": {"const": "Ed25519"},
                           "public_key_pem": {"type": "string"},
                           "fingerprint_sha256": _HEX}}}}}}, tag="custody")},
}

EMAIL_ID = _param("email_id", "path", {"type": "string"}, "email id (e-...)")
FLOW_ID = _param("flow_id", "path", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                 "flow id of the index")
BUCKETS = _param("buckets", schema={"type": "integer", "minimum": 1, "maximum": 1000})
DASHBOARD_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/queries/{id}/timeline": {"get": op(
        "Packets and bytes over time of the query's result (so far, while it runs), its "
        "verdicts as marks", "viewer", {200: _json("Timeline")}, errors=(404,),
        params=(QID, BUCKETS), tag="queries")},
    "/api/v1/queries/{id}/flows": {"get": op(
        "Flows the query selects (through the index; for a BPF expression the flows that "
        "may hold a match): its connections graph", "viewer", {200: _json("FlowList")},
        errors=(404,), params=(QID, LIMIT), tag="queries")},
    "/api/v1/cases/{case}/sessions/{flow_id}": {"get": op(
        "A flow as the case saw it: HTTP transactions, files (hashes, triage) and emails "
        "carved from it, Suricata's http/dns/tls/fileinfo/smtp and Zeek's conn/http/dns/ssl/"
        "files/smtp records about it, its verdicts (native form)", "viewer",
        {200: _json("Session")}, errors=(404, 409, 422),
        params=(CASE, FLOW_ID), tag="cases")},
    "/api/v1/queries/{id}/emails/{email_id}": {"get": op(
        "An email reconstructed: headers (decoded), text, attachments with download links, "
        "links to its .eml and its HTML part", "viewer", {200: _json("EmailView")},
        errors=(404, 409, 422), params=(QID, EMAIL_ID), tag="files")},
    "/api/v1/queries/{id}/emails/{email_id}/html": {"get": op(
        "The email's HTML part, served under a CSP that runs no script and loads nothing "
        "(sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'), for a "
        "sandboxed frame", "viewer", {200: {"description": "the HTML part", "content": {
            "text/html": {"schema": {"type": "string"}}}}}, errors=(404, 409, 422),
        params=(QID, EMAIL_ID), tag="files")},
}

RULEGROUP_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/rules/groups": {"get": op(
        "The tenant's Suricata rules grouped by classtype, rule file or a metadata key, with "
        "rules, enabled rules and Suricata alerts per group", "viewer",
        {200: _json("RuleGroupList")}, errors=(409,), tag="rules", params=(
            _param("by", schema={"type": "string", "pattern":
                                 "^(classtype|ruleset|metadata:[^ ]+)$"},
                   desc="classtype (default), ruleset or metadata:KEY"),
            _param("case", desc="count only this case's alerts")))},
    "/api/v1/rules/groups/{group}": {"put": op(
        "Enable, disable or reset a group (suricata-update's enable.conf/disable.conf, the "
        "rule set rebuilt offline) and/or threshold it (threshold.config)", "admin",
        {200: _json("RuleGroupApplied")}, errors=(404, 409), body="RuleGroupChange",
        params=(_param("group", "path", {"type": "string", "maxLength": 512},
                       "classtype:NAME, ruleset:FILE.rules or metadata:KEY=VALUE"),),
        tag="rules")},
}

CLUSTER_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/cluster/sensors": {"get": op(
        "A central's sensors of your tenant: reachable or down (why), the time range each "
        "keeps; 404 on a server without --cluster", "viewer", {200: _json("ClusterSensors")},
        errors=(404,), tag="cluster")},
    "/api/v1/cluster/cases": {"get": op(
        "Every sensor's cases (the parameters of GET /api/v1/cases), each with its sensor; "
        "sensors that did not answer in missing", "viewer", {200: _json("ClusterCases")},
        errors=(404,), tag="cluster", params=(
            _param("q"), _param("since", schema=TIMEQ), _param("until", schema=TIMEQ),
            _param("ip"), _param("hash"), _param("severity", schema={
                "enum": ["info", "low", "medium", "high", "critical"]}), LIMIT, OFFSET))},
    "/api/v1/cluster/cases/{case}/verdicts": {"get": op(
        "The case's verdicts on every sensor that has it, each with its sensor", "viewer",
        {200: _json("ClusterVerdicts")}, errors=(404,), params=(CASE, VERDICT_FORMAT),
        tag="cluster")},
    "/api/v1/cluster/triggers": {
        "get": op("Every sensor's triggers and their hunts, each with its sensor, and the "
                  "central's changes a sensor has not received yet (pending)", "viewer",
                  {200: _json("ClusterTriggers")}, errors=(404,), tag="cluster"),
        "post": op(
            "Create a trigger on every sensor of your tenant its scope.sensor covers (a "
            "name or a list; absent: all); the answer lists each sensor's trigger id and "
            "hunt, or its error; 201 when all created it, 207 when some did not; 400 for "
            "a bad definition or a scope.sensor no sensor of yours has", "analyst",
            {201: _json("ClusterTriggerResult", "Created"),
             207: _json("ClusterTriggerResult", "Multi-status")}, errors=(404,),
            body="TriggerRequest", tag="cluster")},
}

_TRIGGER_NAME = _param("name", "path", {"type": "string", "maxLength": 100},
                      "the trigger's name (the same on every sensor)")
_FANNED = ("; 207 when some sensors did not (each says why: its status and error, or "
           "sensor_unavailable); 404 when no sensor of your tenant has it")


def _cluster_trigger(summary: str, need: str, ok: int, body: bool = False) -> dict[str, Any]:
    return op(summary + _FANNED, need, {ok: _json("ClusterTriggerResult"),
                                        207: _json("ClusterTriggerResult", "Multi-status")},
              errors=(404,), params=(_TRIGGER_NAME,),
              body="TriggerRequest" if body else None, tag="cluster")


#: a central's triggers on its sensors, by name (pcapwire.cluster.triggers)
CLUSTER_TRIGGER_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/cluster/triggers/{name}": {
        "get": op("The trigger on every sensor of your tenant, as each sensor's GET "
                  "/api/v1/triggers/{id} shows it (pending: the central's last change has "
                  "not reached it yet), and the central's record of what it asked for; 207 "
                  "when some sensors did not answer or are pending; 404 when no sensor of "
                  "yours has it and the central never made it", "viewer",
                  {200: _json("ClusterTrigger"), 207: _json("ClusterTrigger", "Multi-status")},
                  errors=(404,), params=(_TRIGGER_NAME,), tag="cluster"),
        "put": _cluster_trigger("Edit the trigger on every sensor that has it (created on "
                                "sensors of its new scope that lack it)", "analyst", 200,
                                body=True),
        "delete": _cluster_trigger("Delete the trigger on every sensor (each sensor's "
                                   "token must allow it: admin)", "admin", 200)},
    **{f"/api/v1/cluster/triggers/{{name}}/{action}": {"post": _cluster_trigger(
        f"{action.capitalize()} the trigger (and its hunt) on every sensor that has it",
        "analyst", 200)} for action in ("pause", "resume", "abort")},
}

#: a central's jobs on its sensors (NATS JetStream, the cluster file's [nats] url)
JOB_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/cluster/jobs": {"post": op(
        "Queue a job (hunt: a trigger's hunt; extract: a carve; workflow: shipped "
        "workflows over a stored result; sandbox: a carved file) on one sensor of your "
        "tenant; a hunt with a version is one unit (submitting it again returns the same "
        "job). 404 without --cluster or for a sensor not serving your tenant; 409 without "
        "a [nats] url or while the queue is unreachable", "analyst",
        {202: _json("ClusterJob", "Queued")}, errors=(404, 409), body="ClusterJobRequest",
        tag="cluster")},
    "/api/v1/cluster/jobs/{unit_id}": {"get": op(
        "A job's state and, once it ended, its result", "viewer", {200: _json("ClusterJob")},
        errors=(404, 409), params=(_param("unit_id", "path", {"type": "string"},
                                          "the unit id POST returned"),), tag="cluster")},
}

PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/health": {"get": op("Liveness and version", PUBLIC, {200: _json("Health")})},
    OPENAPI_PATH: {"get": op("This document", PUBLIC, {200: {
        "description": "OpenAPI 3.1", "content": {"application/json": {"schema": {
            "type": "object"}}}}})},
    "/api/v1/whoami": {"get": op("The caller's token, tenant and role", "viewer",
                                 {200: _json("WhoAmI")})},
    "/api/v1/queries": {
        "post": op("Submit a query; returns at once, the query runs in the background",
                   "analyst", {202: _json("Query", "Accepted")}, errors=(429,),
                   body="QueryRequest", tag="queries"),
        "get": op("The tenant's query history, newest first", "viewer", {200: _json(
            "QueryList")}, tag="queries", params=(
                _param("case"), _param("q", desc="substring of case or event name"),
                _param("status", schema={"enum": ["running", "done", "error", "cancelled"]}),
                LIMIT, OFFSET))},
    "/api/v1/queries/pcap": {"post": op(
        "Submit a query and receive its result as one PCAP in this response (one request "
        "instead of POST /api/v1/queries then GET …/pcap; X-Pcapwire-Query-Id names the "
        "query, X-Pcapwire-Kept-Range gives the stored range as 'OLDEST_NS NEWEST_NS'); it "
        "starts with the first bytes, so a query failing before them is refused (409 "
        "cancelled, 422 error); the query spools only a little ahead of what was sent; "
        "leaving before the end cancels the query; a follow is refused", "analyst",
        {200: PCAP}, errors=(409, 422, 429), body="QueryRequest", tag="queries")},
    "/api/v1/queries/check": {"post": op("Check a BPF expression with libpcap", "viewer",
                                         {200: _json("BpfCheckResult")}, body="BpfCheck",
                                         tag="queries")},
    "/api/v1/queries/{id}": {"get": op("Status and progress of a query", "viewer",
                                       {200: _json("Query")}, errors=(404,), params=(QID,),
                                       tag="queries")},
    "/api/v1/queries/{id}/cancel": {"post": op("Cancel a running query", "analyst",
                                               {200: _json("Query")}, errors=(404, 409),
                                               params=(QID,), tag="queries")},
    "/api/v1/queries/{id}/pcap": {"get": op(
        "The result as one PCAP, streamed from the first match while the query runs "
        "(chunked); the connection is cut without a final chunk if the query fails",
        "viewer", {200: PCAP}, errors=(404, 409, 422), params=(QID,), tag="queries")},
    "/api/v1/queries/{id}/verdicts": {"get": op(
        "Verdicts found so far (ECS documents, or native with format=native)", "viewer", {
            200: _json("VerdictList")}, errors=(404,), params=(QID, VERDICT_FORMAT),
        tag="queries")},
    "/api/v1/queries/{id}/verdicts/stream": {"get": op(
        "Live verdicts (Server-Sent Events: verdict, status, end; each verdict an ECS "
        "document, or native with format=native)", "viewer", {200: {
            "description": "text/event-stream", "content": {"text/event-stream": {
                "schema": {"type": "string"}}}}}, errors=(404,),
        params=(QID, VERDICT_FORMAT), tag="queries")},
    "/api/v1/queries/{id}/files": {"get": op(
        "Files carved from the query's result (carved on first request), with hashes and "
        "triage (the workflows' verdicts about each)", "viewer", {200: _json("FileList")},
        errors=(404, 409, 422), params=(QID,), tag="files")},
    "/api/v1/queries/{id}/emails": {"get": op(
        "Emails rebuilt from the query's result (sender, recipients, subject, attachments)",
        "viewer", {200: _json("EmailList")}, errors=(404, 409, 422), params=(QID,),
        tag="files")},
    "/api/v1/queries/{id}/files/{sha256}": {"get": op(
        "Metadata of one carved file", "viewer", {200: _json("FileMeta")},
        errors=(404, 409, 422), params=(QID, SHA), tag="files")},
    "/api/v1/queries/{id}/files/{sha256}/content": {"get": op(
        "The file's bytes as an attachment (application/octet-stream, safe filename, "
        "nosniff, sandboxing CSP: a browser saves it and never renders it)", "viewer",
        {200: BINARY}, errors=(404, 409, 422), params=(QID, SHA), tag="files")},
    "/api/v1/queries/{id}/emails/{email_id}/eml": {"get": op(
        "The message exactly as carried (.eml, message/rfc822, as an attachment)", "viewer",
        {200: {"description": "the .eml", "content": {"message/rfc822": {
            "schema": {"type": "string", "format": "binary"}}}}}, errors=(404, 409, 422),
        params=(QID, _param("email_id", "path")), tag="files")},
    "/api/v1/events": {"post": op(
        "Event-to-PCAP: turn a Suricata EVE record, a Zeek conn.log JSON record, an ECS "
        "document (such as a pcapwire verdict) or {five_tuple, timestamp} into a query",
        "analyst",
        {202: _json("Query", "Accepted")}, errors=(429,), body="Event",
        params=EVENT_PARAMS, tag="events")},
    "/api/v1/events/pcap": {"post": op(
        "Event-to-PCAP in one call: the PCAP of the event's flow (header "
        "X-Pcapwire-Query-Id names the query)", "analyst", {200: PCAP}, errors=(429,),
        body="Event", params=EVENT_PARAMS, tag="events")},
    "/api/v1/capture/status": {"get": op(
        "The tenant's recorder: its status.json (packets, bytes and drops by cause per "
        "interface, segments, disk, arrival-to-queryable latency histogram) with recording "
        "and age_s, and the loss per interface and of recent segments; {recording: false} "
        "without a recorder", "viewer", {200: _json("CaptureStatus")}, tag="capture")},
    "/api/v1/flows": {"get": op("The flow index", "viewer", {200: _json("FlowList")},
                                tag="flows", params=(
        _param("host", desc="IP; repeat or comma-separate"), _param("net", desc="CIDR"),
        _param("port"), _param("proto"), _param("start", schema=TIMEQ),
        _param("end", schema=TIMEQ), LIMIT))},
    "/api/v1/ingest": {"post": op(
        "Ingest an uploaded capture (pcap, pcapng, gzip) or, for admins, a server-side path "
        "under the configured ingest directories", "analyst", {200: _json("IngestSummary")},
        errors=(404, 409, 507), body={**UPLOAD}, tag="ingest", params=(
            _param("sensor", desc="sensor of your tenant the capture comes from"),
            _param("filename", desc="name shown in errors")))},
    "/api/v1/sensors": {
        "get": op("Sensors of the tenant", "admin", {200: _json("SensorList")}, tag="admin"),
        "post": op("Register a sensor", "admin", {201: _json("Sensor", "Created")},
                   errors=(409,), body="SensorRequest", tag="admin")},
    "/api/v1/sensors/{name}": {"delete": op(
        "Remove a sensor", "admin", {204: {"description": "Removed"}}, errors=(404,),
        params=(_param("name", "path"),), tag="admin")},
    "/api/v1/tokens": {
        "get": op("Tokens of the tenant (never their secrets)", "admin",
                  {200: _json("TokenList")}, tag="admin"),
        "post": op("Create a token; the secret is in this response only", "admin",
                   {201: _json("TokenCreated", "Created")}, body="TokenRequest", tag="admin")},
    "/api/v1/tokens/{token_id}": {"delete": op(
        "Revoke a token (and its dashboard sessions)", "admin", {204: {"description":
                                                                       "Revoked"}},
        errors=(404, 409), params=(_param("token_id", "path"),), tag="admin")},
    "/api/v1/cases": {"get": op("Cases, searchable", "viewer", {200: _json("CaseList")},
                                tag="cases", params=(
        _param("q", desc="substring of case or event name"), _param("since", schema=TIMEQ),
        _param("until", schema=TIMEQ), _param("ip"), _param("hash", desc="MD5/SHA-1/SHA-256"),
        _param("severity", schema={"enum": ["info", "low", "medium", "high", "critical"]},
               desc="at least this severity"), LIMIT, OFFSET))},
    "/api/v1/cases/{case}": {"get": op(
        "A case: queries, verdicts (ECS documents, or native with format=native), files, "
        "emails", "viewer", {200: _json("Case")}, errors=(404,),
        params=(CASE, VERDICT_FORMAT), tag="cases")},
    "/api/v1/cases/{case}/timeline": {"get": op(
        "Packets and verdicts over time", "viewer", {200: _json("Timeline")}, errors=(404,),
        params=(CASE, _param("buckets", schema={"type": "integer", "minimum": 1,
                                                "maximum": 1000})), tag="cases")},
    "/api/v1/cases/{case}/flows": {"get": op(
        "Flows the case's queries selected", "viewer", {200: _json("FlowList")},
        errors=(404,), params=(CASE, LIMIT), tag="cases")},
    "/api/v1/cases/{case}/bundle": {"get": op(
        "The case as a zip: PCAPs, files, emails, verdicts.jsonl (ECS), case.json and "
        "MANIFEST.sha256", "viewer", {200: {"description": "zip", "content": {
            "application/zip": {"schema": {"type": "string", "format": "binary"}}}}},
        errors=(404, 409), params=(CASE,), tag="cases")},
    "/api/v1/workflows": {"get": op("Workflows this server can run (and invalid documents "
                                     "found in its workflow directories)", "viewer",
                                     {200: _json("WorkflowList")}, tag="workflows")},
    "/api/v1/workflows/validate": {"post": op(
        "Validate a workflow document against the schema and this server's analyzers; "
        "problems carry line and column", "viewer", {200: _json("Validation")},
        body={"application/yaml": {"schema": {"type": "string"}}},
        params=(_param("name", desc="file name shown in problems"),), tag="workflows")},
    "/api/v1/queries/{id}/run": {"post": op(
        "Run workflows on a finished query's stored result (a new query of the same case)",
        "analyst", {202: _json("Query", "Accepted")}, errors=(404, 409, 429),
        body="RunRequest", params=(QID,), tag="workflows")},
    "/api/v1/plugins": {"get": op("Loaded plugins, failed plugins and their analyzers",
                                  "viewer", {200: _json("Plugins")}, tag="workflows")},
    "/api/v1/hashlists": {
        "get": op("Hash lists the tenant sees: its own (scope tenant) and the server's "
                  "global ones (scope global, managed with `pcapwire hashlist`)", "viewer",
                  {200: _json("HashListList")}, tag="hashlists"),
        "post": op("Create a list from an uploaded file -- plain text (one MD5/SHA-1/SHA-256 "
                   "per line), CSV with hash column(s), NSRL RDS 2.x NSRLFile.txt or the "
                   "RDSv3 SQLite release; mode=replace or append changes an existing list. "
                   "Bad lines are skipped and listed (file:line) in the report", "analyst",
                   {201: _json("HashListImport", "Created"),
                    200: _json("HashListImport", "Replaced or appended")},
                   errors=(404, 409), body=HASHLIST_UPLOAD, tag="hashlists",
                   params=HASHLIST_PARAMS)},
    "/api/v1/hashlists/lookup": {"post": op(
        "Look up a batch of hashes: known-bad (on a deny list), known-good (on an allow "
        "list only) or unknown, with the lists that hold each", "viewer",
        {200: _json("HashLookupResult")}, body="HashLookup", tag="hashlists")},
    "/api/v1/hashlists/{list}": {
        "get": op("One list with its counts per algorithm", "viewer", {200: _json("HashList")},
                  errors=(404,), params=(HASHLIST,), tag="hashlists"),
        "delete": op("Remove one of the tenant's lists (global lists: 403)", "analyst",
                     {204: {"description": "Removed"}}, errors=(404,), params=(HASHLIST,),
                     tag="hashlists")},
    **HOLD_PATHS,
    **CUSTODY_PATHS,
    **RETENTION_PATHS,
    **DASHBOARD_PATHS,
    **TRIGGER_PATHS,
    **RULEGROUP_PATHS,
    **SEARCH_PATHS,
    **CLUSTER_PATHS,
    **CLUSTER_TRIGGER_PATHS,
    **JOB_PATHS,
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "pcapwire", "version": "1",
                 "description": "Packet store queries, event-to-PCAP, cases and verdicts. "
                                "Errors are JSON: {code, message, details}.\n\n"
                                + ON_BEHALF_DOC},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"sessionCookie": []}],
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer",
                           "description": "pwt_<id>_<secret> from `pcapwire token create`"},
            "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "pcapwire_session",
                              "description": "dashboard session; state-changing requests "
                                             "also need X-CSRF-Token"}}},
    }


@routes.get(OPENAPI_PATH)
@role(PUBLIC)
async def serve(request: web.Request) -> web.Response:
    return web.json_response(document())
