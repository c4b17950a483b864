// pcapwire dashboard: the recorder and the store (capture rates, drops by cause, disk,
// retention), legal holds, and a case's chain-of-custody log. Loaded after app.js and
// views.js (el, api, iso, cell, rows, pathPart, PAGES).
"use strict";

const LOSS_CAUSES = ["kernel", "interface", "backlog", "disk"];
const nsIso = (ns) => ns == null ? "" : iso(ns / 1e9);

// ---- capture and retention ---------------------------------------------------------
async function capturePage() {
  const error = document.getElementById("c-error");
  try {
    const [c, r] = await Promise.all([api("GET", "/api/v1/capture/status"),
      api("GET", "/api/v1/retention").catch((e) => ({error: e.message}))]);
    document.getElementById("c-recording").textContent = c.recording ? "recording" : "not recording";
    document.getElementById("c-recording").className = c.recording ? "ok" : "hint";
    document.getElementById("c-state").textContent = c.state || "no recorder";
    document.getElementById("c-age").textContent = c.age_s == null ? "" : `${c.age_s} s ago`;
    document.getElementById("c-segments").textContent = c.segments ?? "";
    document.getElementById("c-disk").textContent = c.disk_bytes == null ? "" : c.disk_bytes;
    document.getElementById("c-free").textContent = c.disk_free_bytes == null ? "" : c.disk_free_bytes;
    rows("#c-interfaces", Object.entries(c.interfaces || {}), ([name, i]) => el("tr", {}, cell(name),
      cell(i.packets), cell(i.bytes), cell(i.pps), cell(i.mbps), cell(i.kernel_drops), cell(i.if_drops),
      cell(i.backlog_drops), cell(i.disk_drops)));
    rows("#c-loss", Object.entries(c.loss.interfaces), ([name, l]) => el("tr", {}, cell(name),
      cell(l.segments ?? 0), cell(l.packets ?? 0), cell(l.bytes ?? 0), ...LOSS_CAUSES.map((k) => cell(l[k] ?? 0))));
    rows("#c-loss-segments", c.loss.segments, (s) => el("tr", {}, cell(s.interface), cell(s.segment_id),
      cell(nsIso(s.first_ns)), cell(nsIso(s.last_ns)), ...LOSS_CAUSES.map((k) => cell(s[k]))));
    if (r.error) { document.getElementById("r-error").textContent = r.error; return; }
    const u = r.usage || {};
    document.getElementById("r-alarm").textContent = r.alarm ? `ALARM: ${r.alarm_reason || ""}` : "no alarm";
    document.getElementById("r-alarm").className = r.alarm ? "error" : "ok";
    document.getElementById("r-last-run").textContent = r.last_run == null ? "never" : iso(r.last_run);
    rows("#r-policy", Object.entries(r.policy), ([k, v]) => el("tr", {}, cell(k), cell(v === "" ? "(none)" : v)));
    rows("#r-usage", Object.entries(u).filter(([, v]) => typeof v !== "object"),
      ([k, v]) => el("tr", {}, cell(k), cell(v)));
    rows("#r-kept", ["kept", "deletable", "protected", "expired"].flatMap((k) =>
      Object.entries(r[k] || {}).filter(([, v]) => typeof v !== "object").map(([f, v]) => [k, f, v])),
      ([k, f, v]) => el("tr", {}, cell(k), cell(f), cell(v)));
    document.getElementById("r-warnings").textContent = (r.warnings || []).join("\n");
  } catch (err) { error.textContent = err.message; }
}

// ---- holds -------------------------------------------------------------------------
async function holdsPage() {
  const form = document.getElementById("holds-filter");
  const load = async () => {
    const params = new URLSearchParams([...new FormData(form)].filter(([, v]) => v));
    try {
      const r = await api("GET", `/api/v1/holds?${params}`);
      rows("#holds", r.holds, (h) => el("tr", {class: `hold-${h.state}`}, cell(h.id),
        el("td", {}, el("a", {href: `/ui/cases/${encodeURIComponent(h.case)}`}, h.case)),
        cell(h.state, `status status-${h.state}`), cell(h.reason),
        cell(`${h.window.start || "(beginning)"} – ${h.window.end || "(open)"}`),
        cell(h.parts.length), cell(h.packets), cell(h.bytes), cell(h.protects.segments.length),
        cell(h.created), cell(h.created_by),
        el("td", {}, ...h.parts.map((p, i) => el("a", {href: `/api/v1/holds/${h.id}/parts/${i + 1}`, download: ""},
                                                  `part ${i + 1}`)))));
      document.getElementById("holds-error").textContent = "";
    } catch (err) { document.getElementById("holds-error").textContent = err.message; }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  load();
}

// ---- custody log of a case ---------------------------------------------------------
async function custodyPage() {
  const caseName = pathPart(3);
  const enc = encodeURIComponent(caseName);
  const link = document.getElementById("k-case");
  link.textContent = caseName;
  link.href = `/ui/cases/${enc}`;
  const error = document.getElementById("k-error");
  try {
    const log = await api("GET", `/api/v1/cases/${enc}/custody?limit=1000`);
    document.getElementById("k-total").textContent = log.total;
    document.getElementById("k-head").textContent = log.head;
    rows("#k-entries", log.entries, (e) => e.invalid !== undefined
      ? el("tr", {class: "invalid"}, cell(e.line), cell("(not an entry)"), cell(""), cell(""), cell(String(e.invalid)), cell(""))
      : el("tr", {}, cell(e.seq), cell(e.time), cell(e.action), cell(e.actor),
        cell((e.objects || []).map((o) => `${o.kind || ""} ${o.path || ""} ${o.sha256 || ""}`.trim()).join("\n"), "hash"),
        cell(Object.entries(e.details || {}).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" "))));
  } catch (err) { error.textContent = err.message; }
  document.getElementById("k-verify").addEventListener("click", async () => {
    const out = document.getElementById("k-verified");
    out.textContent = "verifying…";
    out.className = "hint";
    try {
      const v = await api("POST", `/api/v1/cases/${enc}/custody/verify`);
      out.textContent = v.verified ? `verified: ${v.entries} entries, ${v.files_checked ?? 0} files ` +
        `(${v.bytes_hashed ?? 0} bytes) hashed` : "NOT verified";
      out.className = `verified-${v.verified}`;
      rows("#k-problems", v.problems, (p) => el("tr", {}, cell(p.log), cell(p.line ?? p.seq ?? ""), cell(p.message)));
    } catch (err) { out.textContent = err.message; out.className = "error"; }
  });
}

Object.assign(PAGES, {capture: capturePage, holds: holdsPage, custody: custodyPage});
