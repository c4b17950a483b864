// pcapwire dashboard: search, the session view of a flow, the email view. Loaded after
// app.js (el, api, iso, pivot, verdictRow, PAGES). Text only: an email's HTML part is
// never inserted here, only framed from its own route (sandboxed, its own strict CSP).
"use strict";

const cell = (v, cls) => el("td", cls ? {class: cls} : {}, v ?? "");
const rows = (selector, items, row) => {
  document.querySelector(`${selector} tbody`).replaceChildren(...items.map(row));
  const count = document.querySelector(`${selector}-count`);
  if (count) count.textContent = items.length;
};
const pathPart = (i) => decodeURIComponent(location.pathname.split("/")[i]);

// ---- search ------------------------------------------------------------------------
// GET /api/v1/search?q= : {hits: [{@timestamp, dataset, pivots: {pcap, flow_id, case}, doc}],
// total, total_exact}; a bad query: 400 whose message starts "column N: ...".
function flatten(obj, prefix = "", out = []) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else out.push([key, Array.isArray(v) ? v.join(", ") : v]);
  }
  return out;
}

const HIDDEN_FIELDS = /^(@timestamp|ecs\.|event\.(kind|module|dataset)|pcapwire\.|related\.)/;
const CONTEXT_FIELDS = /^(source|destination|network|event)\./;  // shown after the rest
const SEARCH_FIELDS_SHOWN = 16;

function hitRow(h) {
  const all = flatten(h.doc).filter(([k]) => !HIDDEN_FIELDS.test(k));
  const fields = [...all.filter(([k]) => !CONTEXT_FIELDS.test(k)), ...all.filter(([k]) => CONTEXT_FIELDS.test(k))]
    .slice(0, SEARCH_FIELDS_SHOWN);
  const pv = h.pivots || {};
  const actions = el("td", {class: "actions"});
  const body = pv.pcap || pv.query;
  if (body) {
    actions.append(el("button", {class: "pivot packets", onclick: async (e) => {
      try {
        const q = await api("POST", "/api/v1/queries", {case: pv.case || "search", event: "search pivot", ...body});
        location.href = `/ui/queries/${q.id}`;
      } catch (err) { e.target.replaceWith(el("span", {class: "error"}, err.message)); }
    }}, "packets"), " ");
  }
  if (pv.case && pv.flow_id != null) {
    actions.append(el("a", {class: "session", href: `/ui/cases/${encodeURIComponent(pv.case)}/sessions/${pv.flow_id}`},
                      "session"), " ");
  }
  if (pv.case) actions.append(el("a", {class: "case", href: `/ui/cases/${encodeURIComponent(pv.case)}`}, "case"));
  return el("tr", {}, cell(h["@timestamp"]), cell(h.dataset),
    el("td", {class: "fields"}, fields.map(([k, v]) => `${k}: ${v}`).join("\n")), actions);
}

function searchPage() {
  const form = document.getElementById("search-form");
  const box = document.getElementById("q");
  const error = document.getElementById("search-error");
  const caret = document.getElementById("search-caret");
  const run = async () => {
    const q = box.value;
    history.replaceState(null, "", `?q=${encodeURIComponent(q)}`);
    error.textContent = ""; caret.textContent = "";
    try {
      const r = await api("GET", `/api/v1/search?q=${encodeURIComponent(q)}`);
      rows("#hits", r.hits, hitRow);
      document.getElementById("hits-total").textContent = `${r.total}${r.total_exact === false ? "+" : ""}`;
    } catch (err) {
      rows("#hits", [], hitRow);
      document.getElementById("hits-total").textContent = "";
      const [first] = err.message.split("\n");
      error.textContent = first;
      const column = Number(err.details?.column ?? /^column (\d+)/.exec(first)?.[1]);
      if (column >= 1) {  // the query under the box, a caret at the offending position
        caret.textContent = `${q.replace(/[\n\t]/g, " ")}\n${" ".repeat(column - 1)}^`;
        box.focus();
        box.setSelectionRange(column - 1, column);
      }
    }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); run(); });
  const preset = new URLSearchParams(location.search).get("q");
  if (preset) { box.value = preset; run(); }
}

// ---- session (one flow of a case) --------------------------------------------------
function dnsText(d) {
  const name = d.rrname || d.queries?.[0]?.rrname || "";
  const type = d.rrtype || d.queries?.[0]?.rrtype || "";
  const answers = (d.answers || []).map((a) => `${a.rrtype} ${a.rdata ?? ""}`.trim());
  for (const [t, values] of Object.entries(d.grouped || {})) {
    for (const v of values) answers.push(`${t} ${typeof v === "object" ? JSON.stringify(v) : v}`);
  }
  return [d.type || "", name, type, d.rcode || "", [...new Set(answers)].join(", ")];
}

// Zeek's records of a session, one row each: the fields a responder reads first per log
const ZEEK_FIELDS = {
  conn: ["proto", "service", "conn_state", "duration", "orig_bytes", "resp_bytes"],
  http: ["method", "host", "uri", "status_code", "user_agent", "resp_mime_types"],
  dns: ["query", "qtype_name", "rcode_name", "answers"],
  ssl: ["server_name", "version", "cipher", "ja3", "ja4", "subject", "issuer"],
  files: ["filename", "mime_type", "sha256", "total_bytes", "source"],
  smtp: ["mailfrom", "rcptto", "subject", "from", "to"],
};
function zeekRows(zeek) {
  const out = [];
  for (const [log, records] of Object.entries(zeek)) {
    for (const r of records) {
      const what = (ZEEK_FIELDS[log] || []).filter((k) => r[k] !== undefined && r[k] !== null)
        .map((k) => `${k}=${Array.isArray(r[k]) ? r[k].join(",") : r[k]}`).join(" ");
      const time = typeof r.ts === "number" ? new Date(r.ts * 1000).toISOString() : (r.ts || "");
      out.push({log, time, uid: r.uid || "", what});
    }
  }
  return out;
}

async function sessionPage() {
  const caseName = pathPart(3), flowId = pathPart(5);
  const enc = encodeURIComponent(caseName);
  const caseLink = document.getElementById("s-case");
  caseLink.textContent = caseName;
  caseLink.href = `/ui/cases/${enc}`;
  try {
    const s = await api("GET", `/api/v1/cases/${enc}/sessions/${encodeURIComponent(flowId)}`);
    const f = s.flow;
    document.getElementById("s-flow").textContent = fmtFlow(f);
    document.getElementById("s-time").textContent = `${f.start} – ${f.end}`;
    document.getElementById("s-packets").textContent = (f.pkts_toserver || 0) + (f.pkts_toclient || 0);
    document.getElementById("s-bytes").textContent = (f.bytes_toserver || 0) + (f.bytes_toclient || 0);
    document.getElementById("s-pivot").onclick = () => pivot(f, Date.parse(f.start) / 1000, caseName);
    rows("#s-http", s.http, (h) => el("tr", {}, cell(h.request?.start_line), cell(h.request?.headers?.host),
      cell(h.response?.start_line), cell(h.request?.body_size), cell(h.response?.decoded_size ?? h.response?.body_size),
      cell(h.response?.headers?.["content-type"])));
    rows("#s-dns", s.eve.dns, (e) => el("tr", {}, ...dnsText(e.dns || {}).map((v) => cell(v))));
    rows("#s-tls", s.eve.tls, (e) => {
      const t = e.tls || {};
      return el("tr", {}, cell(t.sni), cell(t.version), cell(t.subject), cell(t.issuerdn),
        cell(t.ja3?.hash, "hash"), cell(t.ja3s?.hash, "hash"), cell(typeof t.ja4 === "object" ? t.ja4?.hash : t.ja4, "hash"));
    });
    rows("#s-eve-http", s.eve.http, (e) => {
      const h = e.http || {};
      return el("tr", {}, cell(h.http_method), cell(h.hostname), cell(h.url), cell(h.status),
        cell(h.http_user_agent), cell(h.length));
    });
    rows("#s-zeek", zeekRows(s.zeek || {}), (z) => el("tr", {}, cell(z.log), cell(z.time), cell(z.uid, "hash"),
      cell(z.what)));
    const triage = (t) => !t || !t.verdicts ? "no verdict"
      : `${t.verdicts} verdict(s), worst ${t.max_severity} (${t.analyzers.join(", ")})`;
    rows("#s-files", s.files, (x) => el("tr", {}, cell(x.filename || "(unnamed)"), cell(x.sha256, "hash"),
      cell(x.md5, "hash"), cell(x.size), cell(x.mime_type || x.magic),
      el("td", {class: x.triage?.max_severity ? `sev sev-${x.triage.max_severity}` : ""}, triage(x.triage)),
      el("td", {}, el("a", {href: `/api/v1/queries/${x.query_id}/files/${x.sha256}/content`, download: ""}, "download"))));
    rows("#s-emails", s.emails, (m) => el("tr", {}, cell(m.from_ || m.mail_from),
      cell((m.to && m.to.length ? m.to : m.rcpt_to || []).join(", ")),
      el("td", {}, el("a", {class: "email-view", href: `/ui/queries/${m.query_id}/emails/${encodeURIComponent(m.id)}`},
                      m.subject || "(no subject)"))));
    rows("#s-verdicts", s.verdicts, (v) => verdictRow(v, caseName));
  } catch (err) { document.getElementById("s-error").textContent = err.message; }
}

// ---- email -------------------------------------------------------------------------
async function emailPage() {
  const qid = pathPart(3), eid = pathPart(5);
  try {
    const m = await api("GET", `/api/v1/queries/${encodeURIComponent(qid)}/emails/${encodeURIComponent(eid)}`);
    const facts = {"m-subject": m.subject, "m-from": m.from, "m-to": m.to.join(", "), "m-cc": m.cc.join(", "),
      "m-date": m.date, "m-message-id": m.message_id, "m-mail-from": m.mail_from,
      "m-rcpt-to": m.rcpt_to.join(", "), "m-size": m.size, "m-sha256": m.sha256};
    for (const [id, v] of Object.entries(facts)) document.getElementById(id).textContent = v ?? "";
    document.getElementById("m-eml").href = m.links.eml;
    document.getElementById("m-incomplete").hidden = !m.incomplete;
    rows("#m-headers", m.headers, (h) => el("tr", {}, cell(h.name), cell(h.value)));
    document.getElementById("m-headers-cut").hidden = !m.headers_cut;
    document.getElementById("m-text").textContent = m.text || "(no text part)";
    const frame = document.getElementById("m-html");
    if (m.links.html) {
      // no allow-scripts, no allow-same-origin: an opaque origin that runs nothing
      frame.replaceChildren(el("iframe", {class: "email-html", sandbox: "", referrerpolicy: "no-referrer",
        title: "HTML part (sandboxed)", src: m.links.html}));
    } else frame.textContent = "(no HTML part)";
    rows("#m-attachments", m.attachments, (a) => el("tr", {}, cell(a.filename || "(unnamed)"), cell(a.mime_type),
      cell(a.size), cell(a.sha256, "hash"),
      el("td", {}, a.download ? el("a", {href: a.download, download: ""}, "download") : "")));
  } catch (err) { document.getElementById("m-error").textContent = err.message; }
}

Object.assign(PAGES, {search: searchPage, session: sessionPage, email: emailPage});
