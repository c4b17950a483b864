"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) of every request and response body.

The same dicts serve the OpenAPI document and validate incoming bodies, so the document
cannot drift from what the server accepts.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from pcapwire.api.errors import ApiError
from pcapwire.api.limits import MAX_EVENT_MARGIN_S, MAX_HASHES_PER_LOOKUP
from pcapwire.holds.actions import MAX_CASE_CHARS as MAX_HOLD_CASE_CHARS
from pcapwire.holds.actions import MAX_REASON_CHARS as MAX_HOLD_REASON_CHARS
from pcapwire.query.spec import MAX_CHUNK_BYTES, MIN_CHUNK_BYTES
from pcapwire.records import SEVERITIES
from pcapwire.triggers.db import HUNT_STATES
from pcapwire.triggers.indicators import FORMATS as INDICATOR_FORMATS
from pcapwire.triggers.indicators import MAX_INDICATOR_FILES
from pcapwire.triggers.model import INDICATOR_KINDS, MAX_RULES_BYTES, MAX_SCOPE_SENSORS
from pcapwire.triggers.model import MAX_NAME_CHARS as MAX_TRIGGER_NAME_CHARS
from pcapwire.triggers.model import MAX_TARGETS as MAX_TRIGGER_TARGETS

NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}
IP = {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}
PORT = {"type": "integer", "minimum": 0, "maximum": 65535}
PROTO = {"anyOf": [{"type": "string", "enum": ["tcp", "udp", "icmp", "icmp6", "sctp", "igmp",
                                                 "gre", "esp"]},
                   {"type": "integer", "minimum": 0, "maximum": 255}]}
TIME = {"anyOf": [{"type": "string", "maxLength": 64}, {"type": "number"}],
        "description": "ISO 8601 (naive = UTC) or Unix seconds"}
LABEL = {"type": "string", "maxLength": 200}
NULLABLE_NUM = {"type": ["number", "null"]}
NULLABLE_STR = {"type": ["string", "null"]}
OBJ: dict[str, Any] = {"type": "object"}


def _obj(props: dict[str, Any], required: tuple[str, ...] = (), extra: bool = False
         ) -> dict[str, Any]:
    out = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        out["required"] = list(required)
    return out


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(key: str, item: str) -> dict[str, Any]:
    return _obj({key: {"type": "array", "items": ref(item)}}, (key,))


#: an item of a sensor's answer as a central shows it (a CaseSummary, a verdict, a Trigger
#: of that sensor) with the ``sensor`` it came from
_SENSOR_ITEM = {"type": "object", "required": ["sensor"],
                "properties": {"sensor": {"type": "string"}}}
LOSS_COUNTS = {k: {"type": "integer", "minimum": 0}
               for k in ("packets", "kernel", "interface", "backlog", "disk")}
FIVE_TUPLE = _obj({"proto": PROTO, "src_ip": IP, "src_port": PORT, "dest_ip": IP,
                   "dest_port": PORT}, ("proto", "src_ip", "src_port", "dest_ip", "dest_port"))

_SPAN = _obj({"first_ns": {"type": "integer"}, "last_ns": {"type": "integer"},
              "packets": {"type": "integer"}, "segments": {"type": "integer"},
              "reasons": {"type": "array", "items": {"enum": ["max_age", "high_watermark"]}}},
             ("first_ns", "last_ns", "packets", "segments", "reasons"))
_MARK = {"type": "string", "maxLength": 64, "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Z%]*\s*$",
         "description": "a percent of the file system ('90%') or a byte budget ('500 GiB')"}
_DURATION = {"type": "string", "maxLength": 64,
             "pattern": r"^(\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d|w)\s*)?$",
             "description": "'500ms', '90s', '12h', '30d', '2w'; '' for none"}
_USAGE = {"type": ["object", "null"], "additionalProperties": True}
_RETENTION_ROW = _obj({"id": {"type": "integer"}, "path": {"type": "string"},
                       "first_ns": {"type": "integer"}, "last_ns": {"type": "integer"},
                       "packets": {"type": "integer"}, "bytes": {"type": "integer"},
                       "reason": {"enum": ["max_age", "high_watermark"]},
                       "ms": {"type": "number"}},
                      ("id", "path", "first_ns", "last_ns", "packets", "bytes", "reason"))
RETENTION_SCHEMAS: dict[str, Any] = {
    "Expired": {**_obj({"packets": {"type": "integer", "minimum": 0},
                        "segments": {"type": "integer", "minimum": 0},
                        "spans": {"type": "array", "items": _SPAN},
                        "more_spans": {"type": "integer", "minimum": 0}},
                       ("packets", "segments", "spans", "more_spans")),
                "description": "packets of the window deleted since by the retention policy, "
                               "as spans of time clipped to the window"},
    "RetentionPolicy": _obj({"high_watermark": _MARK, "low_watermark": _MARK,
                             "max_age": _DURATION, "flow_max_age": _DURATION,
                             "interval": _DURATION, "when_full": {"enum": ["drop", "stop"]}}),
    "RetentionStatus": _obj({
        "policy": {"type": "object"}, "usage": _USAGE, "kept": {"type": "object"},
        "protected": {"type": "object"}, "deletable": {"type": "object"},
        "expired": {"type": "object"}, "alarm": {"type": "boolean"},
        "alarm_since": NULLABLE_NUM, "alarm_reason": NULLABLE_STR, "last_run": NULLABLE_NUM,
        "warnings": {"type": "array", "items": {"type": "string"}}},
        ("policy", "usage", "kept", "protected", "deletable", "expired", "alarm", "warnings")),
    "RetentionRun": _obj({
        "dry_run": {"type": "boolean"}, "skipped": {"type": "boolean"},
        "segments": {"type": "array", "items": _RETENTION_ROW},
        "deleted_segments": {"type": "integer"}, "deleted_bytes": {"type": "integer"},
        "swept": {"type": "integer"}, "flows_deleted": {"type": "integer"},
        "usage_before": _USAGE, "usage_after": _USAGE, "alarm": {"type": "boolean"},
        "alarm_reason": NULLABLE_STR},
        ("dry_run", "skipped", "segments", "deleted_segments", "deleted_bytes", "alarm")),
}

_NULLABLE_INT = {"type": ["integer", "null"]}
_REASON = {"type": "string", "minLength": 1, "maxLength": MAX_HOLD_REASON_CHARS,
           "description": "why (kept in the case's custody log)"}
HOLD_SCHEMAS: dict[str, Any] = {
    "HoldRequest": _obj({
        "case": {"type": "string", "minLength": 1, "maxLength": MAX_HOLD_CASE_CHARS},
        "reason": _REASON,
        "flow_ids": {"type": "array", "items": {"type": "integer", "minimum": 1,
                                                "maximum": 2**62}, "maxItems": 10000},
        "five_tuple": ref("FiveTuple"), "bpf": {"type": "string", "maxLength": 4096},
        "hosts": {"type": "array", "items": IP, "maxItems": 64,
                  "description": "every one is an endpoint of the flow"},
        "ports": {"type": "array", "items": PORT, "maxItems": 64,
                  "description": "any of them is a TCP/UDP/SCTP port of the flow"},
        "start": TIME, "end": TIME}, ("case", "reason")),
    "HoldRelease": _obj({"reason": _REASON}, ("reason",)),
    "HoldPart": _obj({"n": {"type": "integer"}, "path": {"type": "string"},
                      "sha256": {"type": "string"}, "size": {"type": "integer"},
                      "packets": {"type": "integer"},
                      "segments": {"type": "array", "items": {"type": "integer"}},
                      "created": {"type": "string"}, "url": {"type": "string"},
                      "damage": {"type": "array", "items": {"type": "string"},
                                 "description": "what could not be read (a damaged frame "
                                 "of a compressed segment): missing from this part"}},
                     ("n", "path", "sha256", "size", "packets", "segments", "created", "url",
                      "damage")),
    "Hold": _obj({
        "id": {"type": "integer"}, "case": {"type": "string"},
        "selection": {"type": "object", "description": "the filters (as in QueryRequest)"},
        "window": _obj({"start": NULLABLE_STR, "end": NULLABLE_STR, "start_ns": _NULLABLE_INT,
                        "end_ns": _NULLABLE_INT}, ("start", "end", "start_ns", "end_ns")),
        "reason": {"type": "string"}, "created_by": {"type": "string"},
        "created": {"type": "string"}, "state": {"enum": ["open", "complete", "released"]},
        "completed": NULLABLE_STR,
        "released": {"anyOf": [{"type": "null"}, _obj({
            "by": {"type": "string"}, "at": {"type": "string"}, "reason": {"type": "string"}},
            ("by", "at", "reason"))]},
        "parts": {"type": "array", "items": ref("HoldPart")},
        "packets": {"type": "integer"}, "bytes": {"type": "integer"},
        "protects": _obj({"segments": {"type": "array", "items": {"type": "integer"}},
                          "bytes": {"type": "integer"}}, ("segments", "bytes"),
                         ) | {"description": "segments of the window not copied yet "
                                             "(retention keeps them)"}},
        ("id", "case", "selection", "window", "reason", "created_by", "created", "state",
         "completed", "released", "parts", "packets", "bytes", "protects")),
    "HoldList": _list("holds", "Hold"),
}

_STRS = {"type": "array", "items": {"type": "string"}}
_INDICATOR_LISTS = _obj({k: {"type": "array", "items": {"type": "string", "maxLength": 8192}}
                         for k in INDICATOR_KINDS})
_RULES = {"type": "string", "maxLength": MAX_RULES_BYTES}
_NULLABLE_TIME = {"anyOf": [*TIME["anyOf"], {"type": "null"}],
                  "description": "ISO 8601 (naive = UTC) or Unix seconds"}
_TRIGGER_HUNT = _obj({
    "id": {"type": "integer"}, "version": {"type": "integer"},
    "status": {"enum": list(HUNT_STATES)},
    **{k: {"type": "integer"} for k in ("units_total", "units_done", "units_failed",
                                        "bytes_total", "bytes_done")},
    "progress": {"type": "number", "minimum": 0, "maximum": 1},
    "rate_bytes_s": {**NULLABLE_NUM, "description": "bytes done per second so far"},
    "eta_s": {**NULLABLE_NUM, "description": "seconds to the end at that rate (0 when "
              "done, null while unknown)"},
    "created": {"type": "number"}, "started": NULLABLE_NUM, "finished": NULLABLE_NUM,
    "error": NULLABLE_STR,
    "failed_units": {"type": "array", "items": _obj({
        "segment_id": {"type": "integer"}, "attempts": {"type": "integer"},
        "error": NULLABLE_STR}, ("segment_id", "attempts", "error"))}},
    ("id", "version", "status", "units_total", "units_done", "units_failed", "bytes_total",
     "bytes_done", "progress", "rate_bytes_s", "eta_s", "created", "started", "finished", "error",
     "failed_units"))
_PROBLEM_LINE = _obj({"file": {"type": "string"}, "where": {"type": "string"},
                      "message": {"type": "string"}, "line": {"type": "integer"}},
                     ("file", "where", "message"))
TRIGGER_SCHEMAS: dict[str, Any] = {
    "TriggerRequest": _obj({
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$",
                 "maxLength": MAX_TRIGGER_NAME_CHARS},
        "suricata_rules": _RULES, "yara_rules": _RULES, "bpf": _RULES,
        "indicators": _INDICATOR_LISTS,
        "scope": _obj({"start": _NULLABLE_TIME, "end": _NULLABLE_TIME,
                       "start_ns": _NULLABLE_INT, "end_ns": _NULLABLE_INT,
                       "bpf": {"type": "string", "maxLength": 4096},
                       "sensor": {"anyOf": [
                           {"type": "string", "maxLength": 63},
                           {"type": "array", "items": {"type": "string", "maxLength": 63},
                            "minItems": 1, "maxItems": MAX_SCOPE_SENSORS}],
                           "description": "the sensors it works on: a name or a list of "
                           "names of the cluster file; empty or absent: every sensor"}}),
        "workflows": {"type": "array", "items": {"type": "string", "maxLength": 200},
                      "maxItems": 32},
        "notify": {"type": "array", "maxItems": MAX_TRIGGER_TARGETS, "items": {"anyOf": [
            _obj({"type": {"const": "webhook"}, "url": {"type": "string", "maxLength": 2048},
                  "secret": {"type": "string", "maxLength": 1024,
                             "description": "HMAC-SHA256 key; shown as (set), which "
                                            "keeps the stored one when sent back"}},
                 ("type", "url")),
            _obj({"type": {"const": "syslog"}, "address": {"type": "string", "maxLength": 300},
                  "transport": {"enum": ["udp", "tcp"]}}, ("type", "address"))]}},
        "indicator_files": {"type": "array", "maxItems": MAX_INDICATOR_FILES, "items": _obj({
            "format": {"enum": list(INDICATOR_FORMATS)},
            "content": {"type": "string", "description": "the file's text: a STIX 2.1 "
                        "bundle, MISP event JSON or one indicator per line"},
            "name": {"type": "string", "maxLength": 200,
                     "description": "shown in problems (default indicator_files[i])"},
            "skip_bad": {"type": "boolean", "description": "import the good entries of a "
                         "file with bad ones (listed in imports)"}}, ("content",))}},
        ("name",)),
    "TriggerHunt": _TRIGGER_HUNT,
    "Trigger": _obj({
        "id": {"type": "integer"}, "name": {"type": "string"},
        "state": {"enum": ["active", "paused"]}, "version": {"type": "integer"},
        "created": {"type": "number"}, "created_by": {"type": "string"},
        "updated": {"type": "number"}, "looks_for": _STRS,
        "definition": {"type": "object", "description": "as TriggerRequest takes it, "
                       "webhook secrets shown as (set)"},
        "hunt": {"anyOf": [ref("TriggerHunt"), {"type": "null"}]},
        "matches": {"type": "integer"},
        "versions": {"type": "array", "items": _obj({
            "version": {"type": "integer"}, "digest": {"type": "string"},
            "created": {"type": "number"}, "created_by": {"type": "string"},
            "reason": {"type": "string"}},
            ("version", "digest", "created", "created_by", "reason"))},
        "hunts": {"type": "array", "items": ref("TriggerHunt")}},
        ("id", "name", "state", "version", "created", "created_by", "updated", "looks_for",
         "definition", "hunt", "matches")),
    "TriggerList": _list("triggers", "Trigger"),
    "TriggerSaved": _obj({"trigger": ref("Trigger"), "imports": {"type": "array", "items": _obj({
        "file": {"type": "string"}, "format": {"enum": ["stix", "misp", "text"]},
        "indicators": _obj({k: {"type": "integer"} for k in INDICATOR_KINDS}),
        "problems": {"type": "array", "items": _PROBLEM_LINE},
        "more_problems": {"type": "integer"},
        "ignored": {"type": "array", "items": _PROBLEM_LINE}},
        ("file", "format", "indicators", "problems", "more_problems", "ignored"))}},
        ("trigger", "imports")),
    "TriggerMatch": _obj({
        "id": {"type": "integer"}, "rule": {"type": "string"}, "flow_key": {"type": "string"},
        "flow_id": _NULLABLE_INT, "proto": _NULLABLE_INT, "src_ip": NULLABLE_STR,
        "src_port": _NULLABLE_INT, "dest_ip": NULLABLE_STR, "dest_port": _NULLABLE_INT,
        "ts": {"type": "number"}, "segment_id": _NULLABLE_INT,
        "source": {"enum": ["hunt", "watch"]}, "evidence": OBJ, "found": {"type": "number"},
        "versions": {"type": "array", "items": {"type": "integer"}},
        "hits": _NULLABLE_INT,
        "pivots": _obj({"flow_id": _NULLABLE_INT,
                        "query": {"type": "object", "description": "a QueryRequest body "
                                  "for the PCAP of the match's flow"},
                        "bpf": {"type": "string", "description": "the flow as BPF"},
                        "trigger_path": {"type": "string"}, "case_path": {"type": "string",
                        "description": "the case of the trigger's workflow runs"}},
                       ("flow_id", "query", "bpf", "trigger_path", "case_path"))},
        ("id", "rule", "flow_key", "flow_id", "proto", "src_ip", "src_port", "dest_ip",
         "dest_port", "ts", "segment_id", "source", "evidence", "found", "versions", "hits",
         "pivots")),
    "TriggerMatchList": _obj({"matches": {"type": "array", "items": ref("TriggerMatch")},
                              "next_after": {"type": "integer"}}, ("matches", "next_after")),
    "TriggerDiff": _obj({"from": {"type": "integer"}, "to": {"type": "integer"},
                         "new": {"type": "array", "items": ref("TriggerMatch")},
                         "gone": {"type": "array", "items": ref("TriggerMatch")},
                         "new_total": {"type": "integer"}, "gone_total": {"type": "integer"}},
                        ("from", "to", "new", "gone", "new_total", "gone_total")),
}

#: Rule groups (pcapwire.plugins.suricata.groups; test_suricata_groups checks the enums).
_RULE_THRESHOLD = _obj({"type": {"enum": ["limit", "threshold", "both"]},
                        "track": {"enum": ["by_src", "by_dst", "by_rule", "by_both"]},
                        "count": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                        "seconds": {"type": "integer", "minimum": 1, "maximum": 7 * 86400}},
                       ("type", "track", "count", "seconds"))
_RULE_GROUP = _obj({
    "group": {"type": "string"}, "kind": {"enum": ["classtype", "ruleset", "metadata"]},
    "key": {"type": "string"}, "value": {"type": "string"}, "rules": {"type": "integer"},
    "enabled": {"type": "integer"}, "alerts": {"type": "integer"},
    "state": {"enum": ["default", "enabled", "disabled"]},
    "threshold": {"anyOf": [_RULE_THRESHOLD, {"type": "null"}]}},
    ("group", "kind", "key", "value", "rules", "enabled", "alerts", "state", "threshold"))
RULEGROUP_SCHEMAS: dict[str, Any] = {
    "RuleGroup": _RULE_GROUP,
    "RuleGroupList": _obj({
        "by": {"type": "string"}, "managed": {"type": "boolean"},
        "rules": {"type": "integer"}, "files": {"type": "integer"},
        "parse_seconds": {"type": "number"}, "problems": {"type": "integer"},
        "problem_samples": {"type": "array", "items": _obj({
            "file": {"type": "string"}, "line": {"type": "integer"},
            "message": {"type": "string"}}, ("file", "line", "message"))},
        "alerts_unmatched": {"type": "integer"},
        "groups": {"type": "array", "items": ref("RuleGroup")}},
        ("by", "managed", "rules", "files", "parse_seconds", "problems", "problem_samples",
         "alerts_unmatched", "groups")),
    "RuleGroupChange": {**_obj({
        "state": {"enum": ["default", "enabled", "disabled"]},
        "threshold": {"anyOf": [_RULE_THRESHOLD, {"type": "null"}],
                      "description": "null removes the group's threshold"}}),
        "minProperties": 1},
    "RuleGroupApplied": _obj({
        "group": ref("RuleGroup"), "updated": {"type": "boolean"},
        "total": {"type": ["integer", "null"]}, "enabled_rules": {"type": ["integer", "null"]},
        "threshold_file": NULLABLE_STR},
        ("group", "updated", "total", "enabled_rules", "threshold_file")),
}

#: Metadata search (issue 15, :mod:`pcapwire.api.routes_search`).
SEARCH_SCHEMAS: dict[str, Any] = {
    "SearchPivots": _obj({
        "pcap": {"anyOf": [OBJ, {"type": "null"}], "description": "a body for POST "
                 "/api/v1/queries: five_tuple (when the record has one), start, end, case"},
        "flow_id": {"type": ["integer", "null"], "description": "the flow in the index"},
        "case": NULLABLE_STR, "run_id": NULLABLE_STR, "query_id": NULLABLE_STR},
        ("pcap", "flow_id", "case", "run_id", "query_id")),
    "SearchHit": _obj({"id": {"type": "integer"}, "key": {"type": "string"},
                       "@timestamp": NULLABLE_STR, "dataset": {"type": "string"},
                       "pivots": ref("SearchPivots"),
                       "doc": {**OBJ, "description": "the ECS document"}},
                      ("id", "key", "@timestamp", "dataset", "pivots", "doc")),
    "SearchResult": _obj({"hits": {"type": "array", "items": ref("SearchHit")},
                          "total": {"type": "integer", "minimum": 0},
                          "total_exact": {"type": "boolean", "description": "false: total "
                                          "is a lower bound (counting stopped)"}},
                         ("hits", "total", "total_exact")),
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"code": {"type": "string"}, "message": {"type": "string"},
                   "details": OBJ}, ("code", "message", "details")),
    "Health": _obj({"status": {"const": "ok"}, "version": {"type": "string"}},
                   ("status", "version")),
    "WhoAmI": _obj({"token_id": {"type": "string"}, "tenant": {"type": "string"},
                    "role": {"enum": ["viewer", "analyst", "admin"]},
                    "csrf": NULLABLE_STR}, ("token_id", "tenant", "role", "csrf")),
    "FiveTuple": FIVE_TUPLE,
    "QueryRequest": _obj({
        "bpf": {"type": "string", "maxLength": 4096},
        "hosts": {"type": "array", "items": IP, "maxItems": 64,
                  "description": "every one is an endpoint of the flow"},
        "nets": {"type": "array", "items": {"type": "string", "maxLength": 64}, "maxItems": 64,
                 "description": "every one contains an endpoint of the flow"},
        "ports": {"type": "array", "items": PORT, "maxItems": 64,
                  "description": "any of them is a TCP/UDP/SCTP port of the flow"},
        "protos": {"type": "array", "items": PROTO, "maxItems": 16,
                   "description": "any of them is the flow's IP protocol"},
        "five_tuple": ref("FiveTuple"),
        "flow_ids": {"type": "array", "items": {"type": "integer", "minimum": 1,
                                                "maximum": 2**62}, "maxItems": 10000},
        "start": TIME, "end": TIME,
        "case": {"type": "string", "minLength": 1, "maxLength": 200},
        "event": LABEL,
        "workflows": {"type": "array", "items": {"type": "string", "maxLength": 200},
                      "maxItems": 32, "description": "workflows to run on the result; "
                      "absent: those whose `on: query` trigger matches case and event"},
        "chunk_bytes": {"type": "integer", "minimum": MIN_CHUNK_BYTES,
                        "maximum": MAX_CHUNK_BYTES},
        "max_bytes": {"type": "integer", "minimum": 1, "maximum": 2**62},
        "follow": {"type": "boolean", "description": "after the packets that exist, keep "
                   "streaming those recorded from now on (status running) until cancelled or "
                   "the last reader of its PCAP leaves; then done. No end time"}}),
    "BpfCheck": _obj({"bpf": {"type": "string", "maxLength": 4096}}, ("bpf",)),
    "BpfCheckResult": _obj({"valid": {"type": "boolean"}, "error": NULLABLE_STR},
                           ("valid", "error")),
    "Query": _obj({
        "id": {"type": "string"}, "case": {"type": "string"}, "event": {"type": "string"},
        "status": {"enum": ["running", "done", "error", "cancelled"]},
        "error": NULLABLE_STR, "error_code": NULLABLE_STR,
        "started": {"type": "number"}, "finished": NULLABLE_NUM,
        "packets": {"type": "integer"}, "bytes": {"type": "integer"},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "workflows": {"type": "array", "items": {"type": "string"}},
        "verdicts": {"type": "integer"}, "spec": OBJ, "live": {"type": "boolean"},
        "event_format": {"type": "string"},
        "runs": {"type": "array", "items": ref("Run")},
        "loss": ref("Loss"),
        "sensors": {"type": "array", "items": {"type": "string"},
                    "description": "a cluster central's query: the sensors asked"},
        "missing": {"type": "array", "items": ref("MissingSensor"),
                    "description": "sensors asked that gave no (or no whole) answer"},
        "partial": {"type": "boolean", "description": "some sensors are missing"},
        "received": {"type": "object", "additionalProperties": {"type": "integer"},
                     "description": "a running central's query: bytes of each sensor's "
                     "answer received so far"},
        "links": _obj({"self": {"type": "string"}, "pcap": {"type": "string"},
                       "verdicts": {"type": "string"}, "verdict_stream": {"type": "string"}},
                      ("self", "pcap", "verdicts", "verdict_stream"))},
        ("id", "case", "event", "status", "error", "started", "finished", "packets", "bytes",
         "progress", "workflows", "verdicts", "spec", "live", "runs", "links")),
    "MissingSensor": _obj({"sensor": {"type": "string"}, "reason": {"type": "string"}},
                          ("sensor", "reason")),
    "ClusterSensors": _list("sensors", "ClusterSensor"),
    "ClusterSensor": _obj({
        "name": {"type": "string"}, "url": {"type": "string"},
        "status": {"enum": ["ok", "down"]}, "reason": NULLABLE_STR,
        "oldest_ns": {"type": ["integer", "null"]}, "newest_ns": {"type": ["integer", "null"]},
        "latency_ms": {"type": "number"}},
        ("name", "url", "status", "reason", "oldest_ns", "newest_ns", "latency_ms")),
    "ClusterCases": _obj({"cases": {"type": "array", "items": _SENSOR_ITEM},
                          "missing": {"type": "array", "items": ref("MissingSensor")}},
                         ("cases", "missing")),
    "ClusterVerdicts": _obj({"verdicts": {"type": "array", "items": _SENSOR_ITEM},
                             "sensors": {"type": "array", "items": {"type": "string"}},
                             "missing": {"type": "array", "items": ref("MissingSensor")}},
                            ("verdicts", "sensors", "missing")),
    "ClusterTriggers": _obj({
        "triggers": {"type": "array", "items": _SENSOR_ITEM},
        "missing": {"type": "array", "items": ref("MissingSensor")},
        "pending": {"type": "array", "description": "the central's trigger changes a sensor "
                    "has not received yet (it did not answer; delivered once it does)",
                    "items": _obj({"name": {"type": "string"}, "sensor": {"type": "string"},
                                   "revision": {"type": "integer"},
                                   "wanted": {"type": "integer"}, "note": NULLABLE_STR},
                                  ("name", "sensor", "revision", "wanted", "note"))}},
        ("triggers", "missing", "pending")),
    "ClusterTriggerResult": _obj({
        "name": {"type": "string"},
        "complete": {"type": "boolean", "description": "every sensor asked did it"},
        "sensors": {"type": "array", "items": _obj({
            "sensor": {"type": "string"},
            "status": {"type": ["integer", "null"], "description": "the sensor's HTTP "
                       "status; null: it did not answer"},
            "action": {"type": "string"},
            "error": {"oneOf": [{"type": "null"}, _obj({"code": {"type": "string"},
                                                        "message": {"type": "string"}},
                                                       ("code", "message"))]},
            "trigger_id": {"type": ["integer", "null"]},
            "version": {"type": ["integer", "null"]},
            "state": NULLABLE_STR, "hunt": NULLABLE_STR},
            ("sensor", "status", "action", "error", "trigger_id", "version", "state",
             "hunt"))},
        "imports": {"type": "array", "items": OBJ}},
        ("name", "complete", "sensors", "imports")),
    "ClusterTrigger": _obj({
        "name": {"type": "string"},
        "complete": {"type": "boolean", "description": "every sensor answered and none is "
                     "pending"},
        "central": {"description": "what the central asked for (null: it never made this "
                    "trigger)", "oneOf": [{"type": "null"}, _obj({
                        "revision": {"type": "integer"}, "definition": OBJ,
                        "sensors": _STRS, "paused": {"type": "boolean"},
                        "deleted": {"type": "boolean"}, "changed": {"type": "number"},
                        "edited_by": {"type": "string"}, "state_by": {"type": "string"},
                        "aborted": {"description": "the central's abort of the current "
                                    "version's hunt (null: none)", "oneOf": [
                                        {"type": "null"}, _obj({
                                            "revision": {"type": "integer"},
                                            "at": {"type": "number"},
                                            "by": {"type": "string"}},
                                            ("revision", "at", "by"))]}},
                        ("revision", "definition", "sensors", "paused", "deleted", "changed",
                         "edited_by", "state_by", "aborted"))]},
        "sensors": {"type": "array", "items": _obj({
            "sensor": {"type": "string"},
            "sync": {"enum": ["pending", "delivered", None], "description": "pending: the "
                     "central's last change has not reached the sensor yet"},
            "revision": {"type": ["integer", "null"], "description": "the central's "
                         "revision the sensor has"},
            "note": NULLABLE_STR,
            "status": {"type": ["integer", "null"]},
            "trigger": {"anyOf": [ref("Trigger"), {"type": "null"}]},
            "error": {"oneOf": [{"type": "null"}, _obj({"code": {"type": "string"},
                                                        "message": {"type": "string"}},
                                                       ("code", "message"))]}},
            ("sensor", "sync", "revision", "note", "status", "trigger", "error"))}},
        ("name", "complete", "central", "sensors")),
    "ClusterJobRequest": _obj({
        "sensor": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,63}$"},
        "kind": {"enum": ["hunt", "extract", "workflow", "sandbox"]},
        "params": {"type": "object", "description": "the kind's parameters (hunt: trigger, "
                   "version?; extract: pcap, out, protocols?; workflow: workflows, pcap | "
                   "query_id, case, event?; sandbox: file, profile?), checked by the sensor's "
                   "worker; paths stay in the tenant's store"}},
        ("sensor", "kind", "params")),
    "ClusterJob": _obj({
        "unit_id": {"type": "string"}, "sensor": {"type": "string"},
        "kind": {"type": "string"},
        "state": {"enum": ["queued", "running", "done", "failed"]},
        "deliveries": {"type": "integer", "description": "deliveries to a worker so far "
                       "(more than one: a worker died and the job was delivered again)"},
        "worker": {"type": "string"}, "updated": {"type": "number"},
        "result": {"oneOf": [{"type": "null"}, _obj({
            "ok": {"type": "boolean"}, "code": {"type": "string"},
            "message": {"type": "string"}, "data": OBJ, "worker": {"type": "string"}},
            ("ok", "code", "message", "data", "worker"))]}},
        ("unit_id", "sensor", "kind", "state", "deliveries", "worker", "updated", "result")),
    "Run": _obj({"run_id": {"type": "string"}, "workflow": {"type": "string"},
                 "status": {"type": "string"}, "verdicts": {"type": ["integer", "null"]},
                 "max_severity": NULLABLE_STR, "error": NULLABLE_STR}, ("run_id", "workflow",
                                                                        "status")),
    "Loss": {**_obj({**LOSS_COUNTS, "interfaces": {"type": "object", "additionalProperties":
                                                    _obj(LOSS_COUNTS, tuple(LOSS_COUNTS))},
                     "expired": ref("Expired")},
                    (*LOSS_COUNTS, "interfaces")),
             "description": "packets the query's time window lost while it was recorded: "
                            "packets = kernel (ring full) + interface + backlog (pcapwire's "
                            "own queue or disk), disk a part of backlog; per interface too"},
    "CaptureStatus": {
        "type": "object", "required": ["recording", "loss"],
        "description": "the recorder's status.json (counts since it started) with recording "
                       "and age_s; {recording: false} without a recorder",
        "properties": {
            "recording": {"type": "boolean"}, "state": {"type": "string"},
            "pid": {"type": "integer"}, "started": {"type": "number"},
            "updated": {"type": "number"}, "age_s": NULLABLE_NUM,
            "interfaces": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {k: {"type": "integer"} for k in (
                    "packets", "bytes", "kernel_drops", "if_drops", "backlog_drops",
                    "disk_drops")} | {"pps": {"type": "number"}, "mbps": {"type": "number"}}}},
            "segments": {"type": "integer"}, "disk_bytes": {"type": "integer"},
            "disk_free_bytes": {"type": "integer"}, "write_errors": {"type": "integer"},
            "latency_hist": _obj({"buckets": {"type": "array", "items": {"type": "number"}},
                                  "counts": {"type": "array", "items": {"type": "number"}},
                                  "sum": {"type": "number"}, "count": {"type": "number"}},
                                 ("buckets", "counts", "sum", "count")),
            "loss": _obj({"interfaces": {"type": "object", "additionalProperties": OBJ},
                          "segments": {"type": "array", "items": OBJ}},
                         ("interfaces", "segments"))}},
    "QueryList": _obj({"queries": {"type": "array", "items": ref("Query")},
                       "total": {"type": "integer"}}, ("queries", "total")),
    "Verdict": {"type": "object", "description": "A verdict in pcapwire's native form "
                "(`?format=native`): the record's fields and the workflow run it came from",
                "required": ["kind", "analyzer", "subject_kind", "subject_id", "severity",
                             "score", "flow", "ts", "run_id"],
                "properties": {"kind": {"const": "verdict"}, "analyzer": {"type": "string"},
                               "subject_kind": {"type": "string"},
                               "subject_id": {"type": "string"},
                               "score": {"type": "integer", "minimum": 0, "maximum": 100},
                               "severity": {"enum": list(SEVERITIES)},
                               "flow": _obj({"proto": {"type": "string"},
                                             "src_ip": {"type": "string"}, "src_port": PORT,
                                             "dest_ip": {"type": "string"},
                                             "dest_port": PORT},
                                            ("proto", "src_ip", "src_port", "dest_ip",
                                             "dest_port")),
                               "ts": {"type": "number"}, "run_id": {"type": "string"}}},
    "EcsVerdict": {
        "type": "object", "description": "A verdict as an Elastic Common Schema document, "
        "exactly as `pcapwire run --json` prints it and a case bundle's verdicts.jsonl holds "
        "it (the default form); POST it to /api/v1/events to query its flow again",
        "required": ["@timestamp", "ecs", "event", "rule", "source", "destination", "network",
                     "observer", "tags", "pcapwire"],
        "properties": {
            "@timestamp": {"type": "string", "description": "ISO 8601, UTC"},
            "ecs": _obj({"version": {"type": "string"}}, ("version",)),
            "event": {"type": "object", "required": ["kind", "module", "dataset", "severity",
                                                     "risk_score", "category", "type"],
                      "properties": {"kind": {"const": "alert"},
                                     "module": {"const": "pcapwire"},
                                     "dataset": {"type": "string"},
                                     "severity": {"type": "integer", "minimum": 0,
                                                  "maximum": len(SEVERITIES) - 1},
                                     "risk_score": {"type": "number", "minimum": 0,
                                                    "maximum": 100},
                                     "category": {"type": "array",
                                                  "items": {"type": "string"}},
                                     "type": {"type": "array", "items": {"type": "string"}},
                                     "id": {"type": "string"}}},
            "rule": _obj({"id": {"type": "string"}, "name": {"type": "string"},
                          "category": {"type": "string"}, "ruleset": {"type": "string"}},
                         ("id", "name", "category", "ruleset")),
            "source": _obj({"ip": {"type": "string"}, "port": PORT}, ("ip", "port")),
            "destination": _obj({"ip": {"type": "string"}, "port": PORT}, ("ip", "port")),
            "network": _obj({"transport": {"type": "string"},
                             "iana_number": {"type": "string"}},
                            ("transport", "iana_number")),
            "observer": OBJ, "tags": {"type": "array", "items": {"type": "string"}},
            "file": OBJ,
            "pcapwire": {"type": "object", "required": ["analyzer", "severity", "score",
                                                        "subject", "run_id", "pivot"],
                         "properties": {"analyzer": {"type": "string"},
                                        "severity": {"enum": list(SEVERITIES)},
                                        "score": {"type": "integer"},
                                        "subject": OBJ, "run_id": {"type": "string"},
                                        "pivot": OBJ}}}},
    "VerdictList": _obj({"verdicts": {"type": "array", "items": {
        "anyOf": [ref("EcsVerdict"), ref("Verdict")]}}}, ("verdicts",)),
    "Event": {"type": "object", "description": "A Suricata EVE record (alert, flow...), a Zeek "
              "conn.log JSON record, an ECS document (source.ip, destination.ip, "
              "network.transport, @timestamp: a SIEM's event or a pcapwire verdict as "
              "`pcapwire run --json` and the API return it), or {five_tuple, timestamp[, "
              "duration]}", "maxProperties": 500},
    "EventMargin": {"type": "number", "minimum": 0, "maximum": MAX_EVENT_MARGIN_S},
    "Flow": _obj({"flow_id": {"type": "integer"}, "proto": {"type": "string"},
                  "src_ip": {"type": "string"}, "src_port": {"type": "integer"},
                  "dest_ip": {"type": "string"}, "dest_port": {"type": "integer"},
                  "start": {"type": "string"}, "end": {"type": "string"},
                  "pkts_toserver": {"type": "integer"}, "bytes_toserver": {"type": "integer"},
                  "pkts_toclient": {"type": "integer"}, "bytes_toclient": {"type": "integer"},
                  "packets_expired": {"type": "integer", "minimum": 1, "description":
                                      "packets of the flow deleted by retention (only then)"}},
                 ("flow_id", "proto", "src_ip", "src_port", "dest_ip", "dest_port", "start",
                  "end")),
    "FlowList": _list("flows", "Flow"),
    "IngestPath": _obj({"path": {"type": "string", "minLength": 1, "maxLength": 4096}},
                       ("path",)),
    "IngestSummary": _obj({
        "files": {"type": "integer"}, "already_ingested": {"type": "integer"},
        "packets": {"type": "integer"}, "bytes": {"type": "integer"},
        "segments": {"type": "integer"}, "flows_new": {"type": "integer"},
        "flows_total": {"type": "integer"}, "seconds": {"type": "number"},
        "mb_per_s": {"type": "number"},
        "errors": {"type": "array", "items": {"type": "string"}},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "sensor": NULLABLE_STR},
        ("files", "packets", "bytes", "segments", "flows_new", "errors", "sensor")),
    "Sensor": _obj({"name": NAME, "tenant": {"type": "string"}, "created": {"type": "number"}},
                   ("name", "tenant")),
    "SensorRequest": _obj({"name": NAME}, ("name",)),
    "SensorList": _list("sensors", "Sensor"),
    "Token": _obj({"id": {"type": "string"}, "name": {"type": "string"},
                   "tenant": {"type": "string"},
                   "role": {"enum": ["viewer", "analyst", "admin"]},
                   "created": {"type": "number"}, "last_used": NULLABLE_NUM,
                   "revoked": NULLABLE_NUM},
                  ("id", "name", "tenant", "role", "created", "last_used", "revoked")),
    "TokenRequest": _obj({"role": {"enum": ["viewer", "analyst", "admin"]}, "name": LABEL},
                         ("role",)),
    "TokenCreated": _obj({"token": {"type": "string"}, "info": ref("Token")},
                         ("token", "info")),
    "TokenList": _list("tokens", "Token"),
    "CaseSummary": _obj({"case": {"type": "string"}, "queries": {"type": "integer"},
                         "events": {"type": "array", "items": {"type": "string"}},
                         "first": {"type": "number"}, "last": {"type": "number"},
                         "packets": {"type": "integer"}, "verdicts": {"type": "integer"},
                         "max_severity": NULLABLE_STR},
                        ("case", "queries", "events", "first", "last", "packets", "verdicts",
                         "max_severity")),
    "CaseList": _list("cases", "CaseSummary"),
    "Case": _obj({"case": {"type": "string"}, "queries": {"type": "array",
                                                          "items": ref("Query")},
                  "verdicts": {"type": "array", "items": {
                      "anyOf": [ref("EcsVerdict"), ref("Verdict")]}},
                  "files": {"type": "array", "items": ref("File")},
                  "emails": {"type": "array", "items": ref("Email")}},
                 ("case", "queries", "verdicts", "files", "emails")),
    "Timeline": _obj({"start": NULLABLE_NUM, "end": NULLABLE_NUM, "bucket_s": NULLABLE_NUM,
                      "packets": {"type": "array", "items": {"type": "integer"}},
                      "bytes": {"type": "array", "items": {"type": "integer"},
                                "description": "bytes on the wire per bin"},
                      "truncated": {"type": "boolean"},
                      "verdicts": {"type": "array", "items": _obj(
                          {"ts": {"type": "number"}, "severity": {"type": "string"},
                           "analyzer": {"type": "string"}, "signature": {"type": "string"}},
                          ("ts", "severity"))}},
                     ("start", "end", "bucket_s", "packets", "bytes", "truncated", "verdicts")),
    "Workflow": {"type": "object", "required": ["name", "description", "steps"],
                 "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                                "file": {"type": "string"},
                                "steps": {"type": "array", "items": OBJ}}},
    "RunRequest": _obj({"workflows": {"type": "array", "minItems": 1, "maxItems": 32,
                                      "items": {"type": "string", "maxLength": 200}}},
                       ("workflows",)),
    "File": {"type": "object", "required": ["id", "sha256", "md5", "sha1", "size", "flow",
                                            "protocol", "query_id", "triage"],
             "properties": {"id": {"type": "string"}, "sha256": {"type": "string"},
                            "md5": {"type": "string"}, "sha1": {"type": "string"},
                            "size": {"type": "integer"}, "flow": OBJ,
                            "protocol": {"type": "string"}, "filename": {"type": "string"},
                            "mime_type": {"type": "string"}, "query_id": {"type": "string"},
                            "triage": OBJ}},
    "Email": {"type": "object", "required": ["id", "flow", "protocol", "query_id"],
              "properties": {"id": {"type": "string"}, "flow": OBJ, "subject": {"type": "string"},
                             "from_": {"type": "string"}, "protocol": {"type": "string"},
                             "query_id": {"type": "string"}}},
    "FileList": _obj({"files": {"type": "array", "items": ref("File")},
                      "summary": {"type": ["object", "null"]}}, ("files", "summary")),
    "EmailList": _list("emails", "Email"),
    "EmailView": _obj({
        "id": {"type": "string"}, "query_id": {"type": "string"},
        "protocol": {"type": "string"}, "flow": OBJ, "ts": NULLABLE_NUM,
        "subject": {"type": "string"}, "from": {"type": "string"},
        "to": {"type": "array", "items": {"type": "string"}},
        "cc": {"type": "array", "items": {"type": "string"}}, "date": {"type": "string"},
        "message_id": {"type": "string"}, "mail_from": {"type": "string"},
        "rcpt_to": {"type": "array", "items": {"type": "string"}},
        "sha256": {"type": "string"}, "size": {"type": "integer"},
        "incomplete": {"type": "boolean"},
        "headers": {"type": "array", "items": _obj({"name": {"type": "string"},
                                                    "value": {"type": "string"}},
                                                   ("name", "value"))},
        "headers_cut": {"type": "boolean"}, "text": {"type": "string"},
        "has_html": {"type": "boolean"},
        "attachments": {"type": "array", "items": _obj({
            "filename": {"type": "string"}, "mime_type": {"type": "string"},
            "size": {"type": ["integer", "null"]}, "sha256": {"type": "string"},
            "download": NULLABLE_STR}, ("filename", "mime_type", "size", "sha256",
                                         "download"))},
        "links": _obj({"eml": {"type": "string"}, "html": NULLABLE_STR}, ("eml", "html"))},
        ("id", "query_id", "protocol", "flow", "ts", "subject", "from", "to", "cc", "date",
         "message_id", "mail_from", "rcpt_to", "sha256", "size", "incomplete", "headers",
         "headers_cut", "text", "has_html", "attachments", "links")),
    "Session": _obj({
        "case": {"type": "string"}, "flow": ref("Flow"),
        "http": {"type": "array", "items": OBJ, "description": "carved HTTP transactions"},
        "files": {"type": "array", "items": ref("File")},
        "emails": {"type": "array", "items": ref("Email")},
        "verdicts": {"type": "array", "items": ref("Verdict")},
        "eve": _obj({k: {"type": "array", "items": OBJ}
                     for k in ("http", "dns", "tls", "fileinfo", "smtp")},
                    ("http", "dns", "tls", "fileinfo", "smtp")),
        "zeek": _obj({k: {"type": "array", "items": OBJ, "description": f"Zeek {k}.log rows"}
                      for k in ("conn", "http", "dns", "ssl", "files", "smtp")},
                     ("conn", "http", "dns", "ssl", "files", "smtp"))},
        ("case", "flow", "http", "files", "emails", "verdicts", "eve", "zeek")),
    "FileMeta": _obj({"sha256": {"type": "string"},
                      "records": {"type": "array", "items": ref("File")}},
                     ("sha256", "records")),
    "Problem": _obj({"line": {"type": "integer"}, "column": {"type": "integer"},
                     "key": {"type": "string"}, "message": {"type": "string"},
                     "warning": {"type": "boolean"}, "text": {"type": "string"}},
                    ("line", "column", "key", "message", "warning")),
    "WorkflowList": _obj({"workflows": {"type": "array", "items": ref("Workflow")},
                          "invalid": {"type": "array", "items": OBJ},
                          "engine": {"type": "boolean"}}, ("workflows", "invalid", "engine")),
    "Validation": _obj({"valid": {"type": "boolean"}, "name": NULLABLE_STR,
                        "problems": {"type": "array", "items": ref("Problem")}},
                       ("valid", "name", "problems")),
    "Plugins": {"type": "object", "required": ["plugins", "failures", "analyzers"],
                "properties": {"plugins": {"type": "array", "items": OBJ},
                               "failures": {"type": "array", "items": OBJ},
                               "analyzers": {"type": "array", "items": OBJ}}},
    "HashList": _obj({
        "name": {"type": "string"}, "kind": {"enum": ["allow", "deny"]},
        "severity": {"enum": ["info", "low", "medium", "high", "critical"]},
        "description": {"type": "string"}, "source": {"type": "string"},
        "format": {"type": "string"}, "created": {"type": "number"},
        "updated": {"type": "number"}, "counts": ref("HashCounts"),
        "total": {"type": "integer"}, "scope": {"enum": ["tenant", "global"]}},
        ("name", "kind", "severity", "description", "source", "format", "created", "updated",
         "counts", "total", "scope")),
    "HashCounts": _obj({a: {"type": "integer", "minimum": 0} for a in ("md5", "sha1", "sha256")},
                       ("md5", "sha1", "sha256")),
    "HashListList": _list("lists", "HashList"),
    "BadLine": _obj({"file": {"type": "string"}, "line": {"type": "integer"},
                     "unit": {"enum": ["line", "row"]}, "message": {"type": "string"}},
                    ("file", "line", "unit", "message")),
    "HashListReport": _obj({
        "list": {"type": "string"}, "kind": {"enum": ["allow", "deny"]},
        "severity": {"type": "string"}, "mode": {"enum": ["create", "replace", "append"]},
        "files": {"type": "array", "items": _obj({
            "file": {"type": "string"}, "format": {"type": "string"},
            "columns": {"type": "array", "items": {"type": "string"}},
            "label_column": NULLABLE_STR, "records": {"type": "integer"},
            "bad_lines": {"type": "integer"}},
            ("file", "format", "columns", "label_column", "records", "bad_lines"))},
        "records": {"type": "integer"}, "added": ref("HashCounts"),
        "added_total": {"type": "integer"}, "duplicates": {"type": "integer"},
        "skipped": {"type": "integer"}, "bad_lines": {"type": "integer"},
        "errors": {"type": "array", "items": ref("BadLine")},
        "errors_not_listed": {"type": "integer"}, "seconds": {"type": "number"}},
        ("list", "kind", "severity", "mode", "files", "records", "added", "added_total",
         "duplicates", "skipped", "bad_lines", "errors", "errors_not_listed", "seconds")),
    "HashListImport": _obj({"list": ref("HashList"), "report": ref("HashListReport")},
                           ("list", "report")),
    "HashMatch": _obj({"list": {"type": "string"}, "kind": {"enum": ["allow", "deny"]},
                       "severity": {"type": "string"}, "scope": {"enum": ["tenant", "global"]},
                       "algorithm": {"enum": ["md5", "sha1", "sha256"]},
                       "hash": {"type": "string"}, "label": NULLABLE_STR},
                      ("list", "kind", "severity", "scope", "algorithm", "hash", "label")),
    "HashVerdict": _obj({"hash": {"type": "string"},
                         "algorithm": {"enum": ["md5", "sha1", "sha256"]},
                         "verdict": {"enum": ["known-good", "known-bad", "unknown"]},
                         "severity": {"enum": ["info", "low", "medium", "high", "critical"]},
                         "matches": {"type": "array", "items": ref("HashMatch")}},
                        ("hash", "algorithm", "verdict", "severity", "matches")),
    "HashLookupResult": _obj({
        "results": {"type": "array", "items": ref("HashVerdict")},
        "summary": _obj({v: {"type": "integer"} for v in ("known-good", "known-bad",
                                                           "unknown")},
                        ("known-good", "known-bad", "unknown"))}, ("results", "summary")),
    "HashLookup": _obj({"hashes": {"type": "array", "minItems": 1,
                                   "maxItems": MAX_HASHES_PER_LOOKUP,
                                   "items": {"type": "string", "pattern": "^[0-9a-fA-F]{32,128}$"}
                                   }}, ("hashes",)),
    **RETENTION_SCHEMAS,
    **HOLD_SCHEMAS,
    **TRIGGER_SCHEMAS,
    **RULEGROUP_SCHEMAS,
    **SEARCH_SCHEMAS,
}

_FORMATS = FormatChecker()


def validate(body: Any, schema: str) -> Any:
    """Check ``body`` against ``SCHEMAS[schema]``; 400 listing every problem otherwise."""
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{schema}",
                                      "components": {"schemas": SCHEMAS}},
                                     format_checker=_FORMATS)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        problems = [{"path": "/" + "/".join(str(p) for p in e.absolute_path),
                     "message": e.message[:300]} for e in errors[:20]]
        first = problems[0]
        raise ApiError(400, "invalid_body", f"request body does not match {schema}: "
                       f"{first['path']}: {first['message']}", {"errors": problems})
    return body
