// pcapwire dashboard: triggers (state, hunt progress and ETA, pause/resume/abort) and a
// trigger's matches arriving live (EventSource on /api/v1/triggers/{id}/events). Loaded
// after app.js and views.js (el, api, iso, cell, rows, PAGES). Text only, never HTML.
"use strict";

const PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp"};
const pct = (h) => h ? `${(100 * h.progress).toFixed(1)}%` : "";
const eta = (h) => h && h.eta_s != null ? `${Math.round(h.eta_s)} s` : "";
const matchFlow = (m) => `${PROTOS[m.proto] ?? m.proto} ${m.src_ip}:${m.src_port} → ${m.dest_ip}:${m.dest_port}`;

function progressCell(h) {
  const bar = el("progress", {max: "1", value: String(h ? h.progress : 0)});
  return el("td", {}, bar, " ", pct(h));
}

async function openPcap(m, caseName) {
  // The match's pivot is a query body: start it and follow it on the live query page.
  try {
    const q = await api("POST", "/api/v1/queries", {...m.pivots.query, case: caseName});
    location.href = `/ui/queries/${encodeURIComponent(q.id)}`;
  } catch (err) {
    document.getElementById("t-action-error").textContent = `Cannot start the query: ${err.message}`;
  }
}

function matchRow(m, caseName) {
  return el("tr", {id: `match-${m.id}`}, cell(m.id), cell(iso(m.ts)), cell(m.rule), cell(matchFlow(m)),
    cell(m.source), cell(m.versions.join(", ")),
    el("td", {}, el("button", {class: "pivot", onclick: () => openPcap(m, caseName)}, "Query PCAP")));
}

let SOURCE = null;

function showState(s) {
  const h = s.hunt;
  document.getElementById("t-state").textContent = s.state;
  document.getElementById("t-state").className = `status status-${s.state}`;
  document.getElementById("t-version").textContent = s.version;
  document.getElementById("t-hunt").textContent = h ? `${h.status} (hunt ${h.id}, version ${h.version})` : "none";
  document.getElementById("t-units").textContent = h ? `${h.units_done} of ${h.units_total} done, ` +
    `${h.bytes_done} of ${h.bytes_total} bytes` : "";
  document.getElementById("t-eta").textContent = eta(h) || (h && h.status === "finished" ? "done" : "unknown");
  document.getElementById("t-failed").textContent = h && h.failed_units.length
    ? h.failed_units.map((u) => `segment ${u.segment_id}: ${u.error}`).join("\n") : "none";
  document.getElementById("t-progress").value = h ? h.progress : 0;
  const going = h && ["queued", "running", "paused"].includes(h.status);
  document.getElementById("t-pause").disabled = s.state !== "active";
  document.getElementById("t-resume").disabled = s.state !== "paused";
  document.getElementById("t-abort").disabled = !going;
}

function showTrigger(t) {
  // The snapshot first, then the stream: its first 'hunt' event is the state as it is then.
  SOURCE?.close();
  const section = document.getElementById("t-detail");
  section.hidden = false;
  section.dataset.id = t.id;
  document.getElementById("t-name").textContent = t.name;
  document.getElementById("t-action-error").textContent = "";
  showState({...t, hunt: t.hunt});
  const tbody = document.querySelector("#t-matches tbody");
  tbody.replaceChildren();
  document.getElementById("t-match-count").textContent = "0";
  const caseName = `trigger-${t.name}`;
  SOURCE = new EventSource(`/api/v1/triggers/${t.id}/events`);
  SOURCE.addEventListener("open", () => { document.getElementById("t-live").textContent = "live"; });
  SOURCE.addEventListener("match", (e) => {
    const m = JSON.parse(e.data);
    if (!document.getElementById(`match-${m.id}`)) tbody.append(matchRow(m, caseName));
    document.getElementById("t-match-count").textContent = tbody.children.length;
  });
  SOURCE.addEventListener("hunt", (e) => { const s = JSON.parse(e.data); showState(s); listTriggers(); });
  SOURCE.addEventListener("end", (e) => {
    if (JSON.parse(e.data).reason === "deleted") {
      SOURCE.close();
      document.getElementById("t-live").textContent = "deleted";
    }
  });
}

async function listTriggers() {
  try {
    const {triggers} = await api("GET", "/api/v1/triggers");
    rows("#triggers", triggers, (t) => el("tr", {"data-id": String(t.id)},
      el("td", {}, el("a", {href: `#${t.id}`, onclick: (ev) => { ev.preventDefault(); select(t.id); }}, t.name)),
      cell(t.state), cell(t.version), cell(t.looks_for.join(", ")), cell(t.hunt ? t.hunt.status : ""),
      progressCell(t.hunt), cell(eta(t.hunt)), cell(t.matches),
      el("td", {}, el("button", {type: "button", onclick: () => select(t.id)}, "Watch"))));
  } catch (err) { document.getElementById("t-error").textContent = err.message; }
}

async function select(id) {
  try {
    history.replaceState(null, "", `#${id}`);
    showTrigger(await api("GET", `/api/v1/triggers/${encodeURIComponent(id)}`));
  } catch (err) { document.getElementById("t-error").textContent = err.message; }
}

async function act(action) {
  const id = document.getElementById("t-detail").dataset.id;
  const out = document.getElementById("t-action-error");
  out.textContent = "";
  try {
    showState(await api("POST", `/api/v1/triggers/${id}/${action}`));
    listTriggers();
  } catch (err) { out.textContent = err.message; }
}

async function triggersPage() {
  for (const action of ["pause", "resume", "abort"]) {
    document.getElementById(`t-${action}`).addEventListener("click", () => act(action));
  }
  await listTriggers();
  const wanted = location.hash.slice(1);
  if (/^[0-9]+$/.test(wanted)) select(wanted);
}

Object.assign(PAGES, {triggers: triggersPage});
