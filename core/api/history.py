"""A tenant's query history and each query's workflow runs and verdicts (all in the
tenant's case store, :class:`pcapwire.cases.CaseStore`), searched and shaped for the API."""

from __future__ import annotations

import ipaddress
from typing import Any

from pcapwire.api.jobs import FINAL, QueryJob
from pcapwire.api.tenants import TenantStore
from pcapwire.api.verdicts import native_verdict
from pcapwire.records import SEVERITIES


def get_query(ts: TenantStore, query_id: str) -> dict[str, Any] | None:
    return ts.cases.get_query(query_id)


def spec_mentions_ip(spec: dict[str, Any], ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    ft = spec.get("five_tuple") or {}
    if ip in spec.get("hosts", []) or ip in (ft.get("src_ip"), ft.get("dest_ip")):
        return True
    for net in spec.get("nets", []):
        try:
            if addr in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return ip in str(spec.get("bpf", "")).replace("(", " ").replace(")", " ").split()


def search_queries(ts: TenantStore, *, case: str | None = None, text: str | None = None,
                   status: str | None = None, since: float | None = None,
                   until: float | None = None, ip: str | None = None) -> list[dict[str, Any]]:
    """Newest first. ``text`` matches a substring of the case or event name; ``ip`` an
    address the query's filters or its verdicts name."""
    rows = ts.cases.search_queries(case=case, text=text, status=status, since=since,
                                   until=until)
    if ip:
        rows = [r for r in rows if spec_mentions_ip(r["spec"], ip)
                or any(verdict_mentions_ip(v, ip)
                       for v in read_verdicts(ts, r["id"], r["case"]))]
    return rows


def verdict_mentions_ip(verdict: dict[str, Any], ip: str) -> bool:
    flow = verdict.get("flow") or {}
    return ip in (flow.get("src_ip"), flow.get("dest_ip"))


def runs_of(ts: TenantStore, query_id: str, case: str) -> list[Any]:
    """The case store's runs for this query (a run records its query id and case)."""
    return [r for r in ts.cases.runs(case) if r.query_id == query_id]


def run_view(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary.get(k) for k in ("run_id", "workflow", "status", "verdicts",
                                        "max_severity", "error")}


def read_verdicts(ts: TenantStore, query_id: str, case: str, job: QueryJob | None = None
                  ) -> list[dict[str, Any]]:
    """The query's verdicts in their native form (see :mod:`.verdicts`): live from the
    job while it is in memory, else from the case store."""
    if job is not None:
        return list(job.verdicts)
    return [native_verdict(v, r.run_id) for r in runs_of(ts, query_id, case)
            for v in ts.cases.verdicts(case, run_id=r.run_id)]


def max_severity(verdicts: list[dict[str, Any]]) -> str | None:
    ranks = [SEVERITIES.index(v["severity"]) for v in verdicts if v.get("severity") in SEVERITIES]
    return SEVERITIES[max(ranks)] if ranks else None


def query_view(row: dict[str, Any] | None, job: QueryJob | None,
               verdict_count: int | None = None,
               runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One query as the API shows it: live state when the job is in memory, else history."""
    if job is not None:
        spec = job.spec_record()
        d = {"id": job.id, "case": job.spec.case, "event": job.spec.event,
             "status": job.status, "error": job.error, "error_code": job.error_code,
             "started": job.started, "finished": job.finished,
             "packets": job.stats.packets, "bytes": job.stats.bytes,
             "progress": job.progress(), "workflows": job.workflows,
             "verdicts": len(job.verdicts), "spec": spec, "live": True,
             "runs": [run_view(r) for r in job.runs]}
        if job.sensors is not None:  # a central's query (pcapwire.cluster)
            d.update(sensors=job.sensors, missing=job.missing, partial=bool(job.missing),
                     received=job.received)
    else:
        assert row is not None
        status = row["status"] if row["status"] in ("running", *FINAL) else "error"
        d = {"id": row["id"], "case": row["case"], "event": row["event"], "status": status,
             "error": row["error"], "error_code": None,
             "started": row["started"], "finished": row["finished"],
             "packets": row["packets"], "bytes": row["bytes"],
             "progress": 1.0 if status == "done" else 0.0,
             "workflows": row["spec"].get("workflows", []),
             "verdicts": verdict_count or 0, "spec": row["spec"], "live": False,
             "runs": [run_view(r) for r in runs or []]}
        cluster = row["spec"].get("cluster")
        if cluster is not None:  # a central's query, as it ended (pcapwire.cluster)
            d.update(sensors=cluster["sensors"], missing=cluster["missing"],
                     partial=bool(cluster["missing"]))
    base = f"/api/v1/queries/{d['id']}"
    d["links"] = {"self": base, "pcap": base + "/pcap", "verdicts": base + "/verdicts",
                  "verdict_stream": base + "/verdicts/stream"}
    return d
