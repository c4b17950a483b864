// pcapwire dashboard: plain JavaScript, no build step; third-party code only as vendored
// files (static/vendor/, see VENDORED.md). Data from the server is only ever inserted as
// text (textContent), never as HTML. Pages of other scripts register in PAGES.
"use strict";

const SEVERITIES = ["info", "low", "medium", "high", "critical"];
let CSRF = "";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

async function api(method, path, body) {
  const opts = {method, headers: {}, credentials: "same-origin"};
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  if (method !== "GET") opts.headers["X-CSRF-Token"] = CSRF;
  const r = await fetch(path, opts);
  if (r.status === 401) { location.href = "/ui/login"; throw new Error("not logged in"); }
  const data = r.headers.get("Content-Type")?.includes("json") ? await r.json() : null;
  if (!r.ok) {
    const err = new Error(data ? data.message : `HTTP ${r.status}`);
    err.code = data?.code;
    err.details = data?.details || {};
    throw err;
  }
  return data;
}

const iso = (t) => t == null ? "" : new Date(t * 1000).toISOString().replace(".000Z", "Z");
const fmtFlow = (f) => !f ? "" : `${f.proto} ${f.src_ip}:${f.src_port} → ${f.dest_ip}:${f.dest_port}`;
const sevCell = (s) => el("td", {class: `sev sev-${SEVERITIES.includes(s) ? s : "info"}`}, s);

function fromLocalUtc(value) {  // <input type=datetime-local> holds UTC in this UI
  return value ? value + (value.length === 16 ? ":00Z" : "Z") : null;
}

async function pivot(flow, ts, caseName) {
  // One click from a verdict or a flow to a new query on that flow around that time.
  const body = {five_tuple: {proto: flow.proto, src_ip: flow.src_ip, src_port: flow.src_port,
                             dest_ip: flow.dest_ip, dest_port: flow.dest_port}, timestamp: ts};
  try {
    const q = await api("POST", `/api/v1/events?case=${encodeURIComponent(caseName || "default")}`, body);
    location.href = `/ui/queries/${q.id}`;
  } catch (err) {
    alert(`Cannot start the query: ${err.message}`);
  }
}

function verdictRow(v, caseName) {
  return el("tr", {class: `sev-row-${v.severity}`}, sevCell(v.severity), el("td", {}, v.score),
    el("td", {}, v.analyzer), el("td", {}, v.signature || v.signature_id || ""),
    el("td", {}, fmtFlow(v.flow)), el("td", {}, iso(v.ts)),
    el("td", {}, el("button", {class: "pivot", onclick: () => pivot(v.flow, v.ts, caseName)},
                    "Query this flow")));
}

// ---- query form --------------------------------------------------------------------
function queryPage() {
  const form = document.getElementById("query-form");
  const bpf = document.getElementById("bpf");
  const status = document.getElementById("bpf-status");
  let timer = null;
  bpf.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!bpf.value.trim()) { status.textContent = ""; status.className = "hint"; return; }
      const r = await api("POST", "/api/v1/queries/check", {bpf: bpf.value});
      status.textContent = r.valid ? "✓ valid BPF" : r.error;
      status.className = r.valid ? "ok" : "error";
    }, 250);
  });
  const preset = document.getElementById("preset");
  preset.addEventListener("change", () => {
    const secs = Number(preset.value);
    if (!secs) return;
    const now = new Date();
    document.getElementById("end").value = now.toISOString().slice(0, 19);
    document.getElementById("start").value = new Date(now - secs * 1000).toISOString().slice(0, 19);
  });
  api("GET", "/api/v1/workflows").then((r) => {
    const box = document.getElementById("workflows");
    box.textContent = r.workflows.length ? "" : "no workflows installed";
    for (const w of r.workflows) {
      const box_ = el("input", {type: "checkbox", name: "workflow", value: w.name});
      box_.checked = w.on_query === true;  // the workflow asks to run on every query
      box.append(el("label", {class: "check", title: w.description || ""}, box_, w.name));
    }
  }).catch(() => { document.getElementById("workflows").textContent = "no workflow engine"; });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = {case: f.get("case"), event: f.get("event")};
    const [proto, src, sport, dst, dport] = ["proto", "src_ip", "src_port", "dest_ip", "dest_port"]
      .map((k) => String(f.get(k) || "").trim());
    if (proto && src && dst && sport && dport) {
      body.five_tuple = {proto, src_ip: src, src_port: Number(sport), dest_ip: dst, dest_port: Number(dport)};
    } else {
      body.hosts = [src, dst].filter(Boolean);
      body.ports = [sport, dport].filter(Boolean).map(Number);
      if (proto) body.protos = [proto];
    }
    if (f.get("net")) body.nets = [String(f.get("net")).trim()];
    if (f.get("bpf").trim()) body.bpf = f.get("bpf").trim();
    if (preset.value !== "all") {
      if (f.get("start")) body.start = fromLocalUtc(f.get("start"));
      if (f.get("end")) body.end = fromLocalUtc(f.get("end"));
    }
    body.workflows = f.getAll("workflow");
    try {
      const q = await api("POST", "/api/v1/queries", body);
      location.href = `/ui/queries/${q.id}`;
    } catch (err) {
      document.getElementById("query-error").textContent = err.message;
    }
  });
}

// ---- live query --------------------------------------------------------------------
function livePage() {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  document.getElementById("qid").textContent = id;
  document.getElementById("pcap-link").href = `/api/v1/queries/${encodeURIComponent(id)}/pcap`;
  const tbody = document.querySelector("#verdicts tbody");
  let caseName = "default";
  const show = (q) => {
    caseName = q.case;
    const link = document.getElementById("q-case");
    link.textContent = q.case;
    link.href = `/ui/cases/${encodeURIComponent(q.case)}`;
    document.getElementById("q-event").textContent = q.event;
    document.getElementById("q-status").textContent = q.status;
    document.getElementById("q-status").className = `status status-${q.status}`;
    document.getElementById("q-packets").textContent = q.packets;
    document.getElementById("q-bytes").textContent = q.bytes;
    document.getElementById("q-progress").value = q.progress;
    document.getElementById("q-error").textContent = q.error || "";
  };
  // The snapshot first, then the stream: the stream's first event is the current status,
  // so nothing older can land after it (a late snapshot once overwrote "done" with "running").
  api("GET", `/api/v1/queries/${encodeURIComponent(id)}`).then((q) => {
    show(q);
    // Verdicts in pcapwire's native form (the API's default is ECS): verdictRow reads it.
    const source = new EventSource(`/api/v1/queries/${encodeURIComponent(id)}/verdicts/stream?format=native`);
    source.addEventListener("verdict", (e) => {
      tbody.append(verdictRow(JSON.parse(e.data), caseName));
      document.getElementById("verdict-count").textContent = tbody.children.length;
    });
    source.addEventListener("status", (e) => show(JSON.parse(e.data)));
    source.addEventListener("end", (e) => {
      const q = JSON.parse(e.data);
      show(q);
      source.close();
      if (q.status === "done") livePictures(q);
    });
  }).catch((err) => {
    document.getElementById("q-error").textContent = err.message;
  });
}

function livePictures(q) {
  const id = encodeURIComponent(q.id);
  const err = document.getElementById("q-error");
  Promise.all([api("GET", `/api/v1/queries/${id}/timeline`), api("GET", `/api/v1/queries/${id}/flows`)])
    .then(([t, fl]) => {
      showTimeline(document.getElementById("timeline"), t, (start, end) => queryWindow(
        specBody(q.spec, q.case, `window of ${q.id.slice(0, 12)}`), start, end, err));
      afterPaint(() => showGraph(document.getElementById("connections"), fl.flows, q.case));
    }).catch((e) => { err.textContent = e.message; });
}

// ---- case history ------------------------------------------------------------------
function casesPage() {
  const form = document.getElementById("case-search");
  const load = async () => {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (!v) continue;
      params.set(k, k === "since" || k === "until" ? fromLocalUtc(v) : v);
    }
    const tbody = document.querySelector("#cases tbody");
    try {
      const r = await api("GET", `/api/v1/cases?${params}`);
      tbody.replaceChildren(...r.cases.map((c) => el("tr", {},
        el("td", {}, el("a", {href: `/ui/cases/${encodeURIComponent(c.case)}`}, c.case)),
        el("td", {}, c.events.join(", ")), el("td", {}, c.queries), el("td", {}, c.packets),
        el("td", {}, c.verdicts), c.max_severity ? sevCell(c.max_severity) : el("td", {}, "–"),
        el("td", {}, iso(c.last)))));
      document.getElementById("cases-error").textContent = "";
    } catch (err) { document.getElementById("cases-error").textContent = err.message; }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  load();
}

// ---- one case ----------------------------------------------------------------------
async function casePage() {
  const name = decodeURIComponent(location.pathname.split("/").pop());
  const enc = encodeURIComponent(name);
  document.getElementById("case-name").textContent = name;
  document.getElementById("bundle-link").href = `/api/v1/cases/${enc}/bundle`;
  document.getElementById("custody-link").href = `/ui/cases/${enc}/custody`;
  try {
    const [c, t, fl] = await Promise.all([api("GET", `/api/v1/cases/${enc}?format=native`),
      api("GET", `/api/v1/cases/${enc}/timeline`), api("GET", `/api/v1/cases/${enc}/flows`)]);
    document.querySelector("#case-queries tbody").replaceChildren(...c.queries.map((q) => el("tr", {},
      el("td", {}, el("a", {href: `/ui/queries/${q.id}`}, q.id.slice(0, 12))), el("td", {}, q.event),
      el("td", {class: `status status-${q.status}`}, q.status), el("td", {}, q.packets),
      el("td", {}, iso(q.started)), el("td", {}, el("a", {href: q.links.pcap, download: ""}, "pcap")))));
    document.querySelector("#case-verdicts tbody").replaceChildren(...c.verdicts.map((v) => verdictRow(v, name)));
    document.querySelector("#case-flows tbody").replaceChildren(...fl.flows.map((f) => el("tr", {},
      el("td", {}, f.proto), el("td", {}, `${f.src_ip}:${f.src_port}`), el("td", {}, `${f.dest_ip}:${f.dest_port}`),
      el("td", {}, (f.pkts_toserver || 0) + (f.pkts_toclient || 0)),
      el("td", {}, (f.bytes_toserver || 0) + (f.bytes_toclient || 0)), el("td", {}, f.start),
      el("td", {}, el("a", {class: "session", href: `/ui/cases/${enc}/sessions/${f.flow_id}`}, "session"), " ",
        el("button", {class: "pivot", onclick: () => pivot(f, Date.parse(f.start) / 1000, name)},
           "Query this flow")))));
    const triage = (t) => !t || !t.verdicts ? "no verdict"
      : `${t.verdicts} verdict(s), worst ${t.max_severity} (${t.analyzers.join(", ")})`;
    document.querySelector("#case-files tbody").replaceChildren(...c.files.map((f) => el("tr", {},
      el("td", {}, f.filename || "(unnamed)"), el("td", {class: "hash"}, f.sha256), el("td", {}, f.size),
      el("td", {}, f.mime_type || f.magic || ""),
      el("td", {class: f.triage?.max_severity ? `sev sev-${f.triage.max_severity}` : ""}, triage(f.triage)),
      el("td", {}, el("a", {href: `/api/v1/queries/${f.query_id}/files/${f.sha256}/content`, download: ""},
                      "download")))));
    document.querySelector("#case-emails tbody").replaceChildren(...c.emails.map((m) => el("tr", {},
      el("td", {}, m.from_ || m.mail_from), el("td", {}, (m.to && m.to.length ? m.to : m.rcpt_to || []).join(", ")),
      el("td", {}, el("a", {class: "email-view", href: `/ui/queries/${m.query_id}/emails/${encodeURIComponent(m.id)}`},
                      m.subject || "(no subject)")),
      el("td", {}, (m.extra?.attachment_details || []).map((a) => a.filename || a.file_id).join(", ")),
      el("td", {}, el("a", {href: `/api/v1/queries/${m.query_id}/emails/${encodeURIComponent(m.id)}/eml`,
                            download: ""}, ".eml")))));
    const err = document.getElementById("case-error");
    showTimeline(document.getElementById("timeline"), t,
      (start, end) => queryWindow({case: name, event: "window"}, start, end, err));
    afterPaint(() => showGraph(document.getElementById("connections"), fl.flows, name));
  } catch (err) { document.getElementById("case-error").textContent = err.message; }
}

async function init() {
  try {
    const me = await api("GET", "/api/v1/whoami");
    CSRF = me.csrf || "";
    document.getElementById("whoami").textContent = `${me.tenant} · ${me.role}`;
    document.querySelector("#logout-form input[name=csrf]").value = CSRF;
  } catch { return; }
  PAGES[document.body.dataset.page]?.();
}

// Each page's entry point by <body data-page>; the pages of other scripts add theirs.
const PAGES = {query: queryPage, live: livePage, cases: casesPage, case: casePage};

document.addEventListener("DOMContentLoaded", init);
