"""Cases: the history of queries grouped by case name, with their verdicts, files and
emails; search; a timeline; the flows the case touched; a downloadable bundle."""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire.api import artifacts
from pcapwire.api.auth import actor, role
from pcapwire.api.bodies import int_param, page
from pcapwire.api.bundle import BUNDLE_BLOCK, write_bundle
from pcapwire.api.downloads import download_headers
from pcapwire.api.errors import ApiError, not_found
from pcapwire.api.history import max_severity, read_verdicts, search_queries
from pcapwire.api.jobs import spec_of
from pcapwire.api.keys import CONFIG, QUERIES
from pcapwire.api.limits import MAX_PAGE_SIZE
from pcapwire.api.routes_artifacts import carve_all
from pcapwire.api.routes_flows import flows_for
from pcapwire.api.routes_queries import tenant_store, time_ns, view
from pcapwire.api.tenants import TenantStore
from pcapwire.api.timeline import TIMELINE_BUCKETS, timeline
from pcapwire.api.verdicts import render_verdicts, verdict_format
from pcapwire.custody import events
from pcapwire.query import QuerySpec
from pcapwire.records import SEVERITIES

routes = web.RouteTableDef()


def case_verdicts(request: web.Request, ts: TenantStore, rows: list[dict[str, Any]]
              ) -> list[dict[str, Any]]:
    jobs = request.app[QUERIES]
    return [v for r in rows
            for v in read_verdicts(ts, r["id"], r["case"], jobs.get(ts.tenant, r["id"]))]


def _mentions_hash(record: dict[str, Any], h: str) -> bool:
    return h in {str(record.get(k, "")).lower() for k in ("sha256", "md5", "sha1", "subject_id")}


def original_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the reruns (a rerun's result is its original's bytes: counting or
    carving it again would show every packet and file twice)."""
    return [r for r in rows if not r["spec"].get("rerun_of")]


def case_rows(request: web.Request, ts: TenantStore, case: str) -> list[dict[str, Any]]:
    rows = search_queries(ts, case=case)
    if not rows:
        raise not_found("case", case)
    return rows


@routes.get("/api/v1/cases")
@role("viewer")
async def list_cases(request: web.Request) -> web.Response:
    """Search: ``q`` (case/event substring), ``since``/``until`` (query start), ``ip``,
    ``hash`` (of a file or a verdict's subject), ``severity`` (at least this bad)."""
    ts = tenant_store(request)
    q = request.query
    sev = q.get("severity")
    if sev is not None and sev not in SEVERITIES:
        raise ApiError(400, "invalid_parameter", f"severity must be one of "
                       f"{', '.join(SEVERITIES)}", {"parameter": "severity"})
    ip = q.get("ip")
    if ip is not None:
        QuerySpec(hosts=[ip])  # 400 on a bad address
    rows = search_queries(ts, text=q.get("q"), ip=ip,
                          since=time_ns(q["since"]) / 1e9 if "since" in q else None,
                          until=time_ns(q["until"]) / 1e9 if "until" in q else None)
    cases: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        cases.setdefault(r["case"], []).append(r)
    out = []
    h = q.get("hash", "").lower()
    for name, group in cases.items():
        verdicts = case_verdicts(request, ts, group)
        worst = max_severity(verdicts)
        if sev is not None and (worst is None or SEVERITIES.index(worst) < SEVERITIES.index(sev)):
            continue
        if h and not any(_mentions_hash(x, h) for x in
                         verdicts + [f for r in group for f in artifacts.files(ts, r["id"])]):
            continue
        out.append({"case": name, "queries": len(group),
                    "events": sorted({r["event"] for r in group if r["event"]}),
                    "first": min(r["started"] for r in group),
                    "last": max(r["started"] for r in group),
                    "packets": sum(r["packets"] for r in original_rows(group)),
                    "verdicts": len(verdicts), "max_severity": worst})
    limit, offset = page(request)
    return web.json_response({"cases": out[offset:offset + limit]})


@routes.get("/api/v1/cases/{case}")
@role("viewer")
async def get_case(request: web.Request) -> web.Response:
    """Verdicts as ECS documents, or ``?format=native``."""
    fmt = verdict_format(request)
    ts = tenant_store(request)
    case = request.match_info["case"]
    rows = case_rows(request, ts, case)
    jobs = request.app[QUERIES]
    originals = original_rows(rows)
    await carve_all(request, ts, originals)
    verdicts = case_verdicts(request, ts, rows)
    return web.json_response({
        "case": case, "queries": [view(ts, r, jobs.get(ts.tenant, r["id"])) for r in rows],
        "verdicts": render_verdicts(verdicts, fmt),
        "files": [f for r in originals for f in artifacts.files(ts, r["id"], verdicts)],
        "emails": [e for r in originals for e in artifacts.emails(ts, r["id"])]})


async def timeline_view(request: web.Request, ts: TenantStore, paths: list[Path],
                        rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Packets and bytes over time of the stored results ``paths``, with the verdicts of
    the queries ``rows`` as marks (``?buckets=`` bins)."""
    buckets = int_param(request, "buckets", TIMELINE_BUCKETS, 1, 1000)
    out = await asyncio.to_thread(timeline, paths, buckets)
    out["verdicts"] = [{"ts": v["ts"], "severity": v["severity"],
                        "analyzer": v.get("analyzer", ""), "signature": v.get("signature", "")}
                       for v in case_verdicts(request, ts, rows)]
    return out


@routes.get("/api/v1/cases/{case}/timeline")
@role("viewer")
async def case_timeline(request: web.Request) -> web.Response:
    ts = tenant_store(request)
    rows = case_rows(request, ts, request.match_info["case"])
    paths = [p for r in original_rows(rows) if (p := ts.results / f"{r['id']}.pcap").exists()]
    return web.json_response(await timeline_view(request, ts, paths, rows))


@routes.get("/api/v1/cases/{case}/flows")
@role("viewer")
async def case_flows(request: web.Request) -> web.Response:
    """Flows the case's queries selected (through the index; for a BPF expression the
    flows that may hold a match)."""
    ts = tenant_store(request)
    rows = case_rows(request, ts, request.match_info["case"])
    limit = int_param(request, "limit", MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    seen: dict[int, dict[str, Any]] = {}
    for r in rows:
        for f in flows_for(ts, spec_of(r["spec"]), limit):
            seen.setdefault(f["flow_id"], f)
    flows = sorted(seen.values(), key=lambda f: (f["start"], f["flow_id"]))[:limit]
    return web.json_response({"flows": flows})


@routes.get("/api/v1/cases/{case}/bundle")
@role("viewer")
async def bundle(request: web.Request) -> web.StreamResponse:
    ts = tenant_store(request)
    case = request.match_info["case"]
    rows = case_rows(request, ts, case)
    jobs = request.app[QUERIES]
    if any(j.spec.case == case for j in jobs.running(ts.tenant)):
        raise ApiError(409, "case_running", "a query of this case is still running; download "
                       "the bundle when it has finished")
    await carve_all(request, ts, original_rows(rows))
    fd, name = tempfile.mkstemp(suffix=".zip", dir=ts.uploads)
    os.close(fd)
    tmp = Path(name)
    try:
        queries, pcaps, lines, files, emails = case_content(ts, case, rows)
        digest = await asyncio.to_thread(write_bundle, tmp, case, queries, pcaps, lines,
                                         files, emails, ts.root, request.app[CONFIG].data_dir)
        resp = web.StreamResponse(headers=download_headers(f"case-{case}.zip",
                                                           "application/zip", "case.zip"))
        resp.content_length = size = tmp.stat().st_size
        await resp.prepare(request)
        with open(tmp, "rb") as f:
            while block := f.read(BUNDLE_BLOCK):
                await resp.write(block)
        await resp.write_eof()
    finally:
        tmp.unlink(missing_ok=True)
    await asyncio.to_thread(events.bundle, ts.root, case, actor(request), digest, size)
    return resp


def case_content(ts: TenantStore, case: str, rows: list[dict[str, Any]]
                 ) -> tuple[list[dict[str, Any]], dict[str, Path], str,
                            list[tuple[str, Path]], list[tuple[str, Path]]]:
    """What a bundle of the case holds (:func:`write_bundle`'s arguments after the case
    name): the queries, their stored results, the verdicts as JSON lines, and the files
    and emails carved so far."""
    originals = original_rows(rows)
    pcaps = {r["id"]: p for r in originals if r["status"] == "done"
             and (p := ts.results / f"{r['id']}.pcap").exists()}
    files = {f["sha256"]: p for r in originals for f in artifacts.files(ts, r["id"])
             if (p := artifacts.content_path(ts, r["id"], f["sha256"])) is not None}
    emails = {f"{e['id']}.eml": p for r in originals for e in artifacts.emails(ts, r["id"])
              if (p := artifacts.content_path(ts, r["id"], e.get("sha256", ""), ".eml"))}
    lines = io.StringIO()
    ts.cases.export_jsonl(case, lines)
    return ([view(ts, r, None) for r in rows], pcaps, lines.getvalue(),
            sorted(files.items()), sorted(emails.items()))
