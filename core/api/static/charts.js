// pcapwire dashboard: the pictures of a case or a query, drawn by the vendored libraries
// (no hand-drawn charts): the timeline with uPlot, the connections graph with cytoscape.js.
// Loaded after app.js (el, api, iso); data from the server is only ever text or numbers.
"use strict";

const SEV_COLOURS = {info: "#7f8c8d", low: "#2e86c1", medium: "#d4ac0d", high: "#e67e22", critical: "#c0392b"};
const CHARTS = {timeline: null, graph: null, window: null};  // what is drawn (tests read it)
const UTC = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
// Times of a selected window: Unix seconds with 6 decimals, start rounded down and end up
// (a query keeps start <= t < end, so no packet shown in the window falls out of it).
const usFloor = (s) => (Math.floor(s * 1e6) / 1e6).toFixed(6);
const usCeil = (s) => (Math.ceil(s * 1e6 + 1e-3) / 1e6).toFixed(6);

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

// A performance mark the first time a chart is drawn (benchmarks/bench_dashboard.py reads
// them: time from navigation start to a drawn timeline and graph).
function drawnOnce(name) {
  let done = false;
  return () => { if (!done) { done = true; performance.mark(name); } };
}

// ---- timeline ----------------------------------------------------------------------
// t: GET .../timeline; onQuery(start, end): "query this window" (strings of Unix seconds).
function showTimeline(box, t, onQuery) {
  const chart = box.querySelector(".chart");
  const note = box.querySelector(".timeline-note");
  const panel = box.querySelector(".timeline-window");
  chart.replaceChildren();
  panel.hidden = true;
  CHARTS.timeline?.destroy();
  CHARTS.timeline = null;
  if (!t.packets.length) { note.textContent = "no stored packets"; return; }
  const xs = t.packets.map((_, i) => t.start + i * t.bucket_s);
  const marks = (u) => {  // verdicts: a dot per verdict on the top edge, coloured by severity
    const ctx = u.ctx;
    for (const v of t.verdicts) {
      const x = u.valToPos(v.ts, "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      ctx.fillStyle = SEV_COLOURS[v.severity] || "#000";
      ctx.beginPath(); ctx.arc(x, u.bbox.top + 6 * devicePixelRatio, 5 * devicePixelRatio, 0, 2 * Math.PI);
      ctx.fill();
    }
  };
  const showWindow = (u) => {
    if (u.select.width < 2) return;
    const lo = u.posToVal(u.select.left, "x"), hi = u.posToVal(u.select.left + u.select.width, "x");
    const start = usFloor(Math.max(lo, t.start)), end = usCeil(Math.min(hi, t.end + t.bucket_s));
    CHARTS.window = {start, end};
    box.querySelector(".window-start").textContent = start;
    box.querySelector(".window-end").textContent = end;
    box.querySelector(".window-iso").textContent = `${iso(Number(start))} – ${iso(Number(end))}`;
    panel.hidden = false;
  };
  const opts = {
    width: Math.min(box.clientWidth || 1000, 1100), height: 220, tzDate: UTC,
    scales: {x: {time: true}, packets: {}, bytes: {}},
    series: [{label: "time (UTC)"},
      {label: "packets", scale: "packets", stroke: "#4a78b5", fill: "rgba(74,120,181,0.25)",
       paths: uPlot.paths.bars({size: [1, Infinity], align: 1}), points: {show: false}},
      {label: "bytes", scale: "bytes", stroke: "#b5654a", width: 1.5, points: {show: false},
       value: (u, v) => v == null ? "" : fmtBytes(v)}],
    axes: [{}, {scale: "packets", label: "packets"},
      {scale: "bytes", side: 1, label: "bytes", grid: {show: false}, values: (u, vs) => vs.map(fmtBytes)}],
    cursor: {drag: {x: true, y: false, setScale: true}},
    hooks: {draw: [marks, drawnOnce("pcapwire:timeline-drawn")], setSelect: [showWindow]},
  };
  CHARTS.timeline = new uPlot(opts, [xs, t.packets, t.bytes], chart);
  const total = t.packets.reduce((a, b) => a + b, 0), bytes = t.bytes.reduce((a, b) => a + b, 0);
  note.textContent = `${total} packets, ${bytes} bytes in ${t.packets.length} bins of ` +
    `${t.bucket_s.toFixed(6)} s; ${t.verdicts.length} verdict(s) as dots; drag to narrow the window` +
    (t.truncated ? " (truncated)" : "");
  box.querySelector(".window-query").onclick = () => onQuery(CHARTS.window.start, CHARTS.window.end);
  box.querySelector(".window-reset").onclick = () => {
    CHARTS.timeline.setScale("x", {min: xs[0], max: xs[xs.length - 1] + t.bucket_s});
    panel.hidden = true;
  };
}

async function queryWindow(body, start, end, errorBox) {
  try {
    const q = await api("POST", "/api/v1/queries", {...body, start, end});
    location.href = `/ui/queries/${q.id}`;
  } catch (err) { errorBox.textContent = `Cannot start the query: ${err.message}`; }
}

// The filters of a query as a new request body (its time window replaced by the caller).
function specBody(spec, caseName, event) {
  const body = {case: caseName, event};
  for (const k of ["bpf", "hosts", "nets", "ports", "protos"]) {
    if (spec[k] && spec[k].length) body[k] = spec[k];
  }
  if (spec.five_tuple) body.five_tuple = spec.five_tuple;
  return body;
}

// ---- connections graph -------------------------------------------------------------
// Hosts are nodes, flows are edges (thicker with more bytes); a click on an edge opens
// that flow's session view in the case.
const CYTOSCAPE_STYLE_MARK = "__________cytoscape_stylesheet";
// Above this many hosts the force-directed layout (cose, quadratic per iteration: ~20 s for
// 1,400 hosts) gives way to rings by degree: the busiest hosts in the middle.
const GRAPH_COSE_MAX_HOSTS = 200;

function graphLayout(hosts) {
  if (hosts <= 2) return {name: "grid"};
  if (hosts <= GRAPH_COSE_MAX_HOSTS) return {name: "cose", animate: false, randomize: false};
  return {name: "concentric", animate: false, concentric: (n) => n.degree(), levelWidth: () => 2};
}

// Run fn once the browser has painted what is on screen (the timeline before the graph).
function afterPaint(fn) {
  requestAnimationFrame(() => setTimeout(fn, 0));
}

function showGraph(box, flows, caseName) {
  const container = box.querySelector(".graph");
  const note = box.querySelector(".graph-note");
  CHARTS.graph?.destroy();
  CHARTS.graph = null;
  if (!flows.length) { note.textContent = "no flows"; container.hidden = true; return; }
  container.hidden = false;
  // cytoscape adds an inline <style> (position: relative) that the CSP refuses; style.css
  // has that rule, and this mark tells cytoscape the sheet is there.
  if (!document.getElementById(CYTOSCAPE_STYLE_MARK)) {
    document.head.append(el("meta", {id: CYTOSCAPE_STYLE_MARK, name: "cytoscape-style", content: "style.css"}));
  }
  const hosts = new Set(flows.flatMap((f) => [f.src_ip, f.dest_ip]));
  const bytes = (f) => (f.bytes_toserver || 0) + (f.bytes_toclient || 0);
  const elements = [...[...hosts].map((h) => ({data: {id: `h:${h}`, label: h}})),
    ...flows.map((f) => ({data: {id: `f:${f.flow_id}`, source: `h:${f.src_ip}`, target: `h:${f.dest_ip}`,
      label: `${f.proto}/${f.dest_port}`, flow_id: f.flow_id, w: 1 + Math.min(Math.log10(1 + bytes(f)), 8)}}))];
  CHARTS.graph = cytoscape({
    container, elements, wheelSensitivity: 0.3, minZoom: 0.2, maxZoom: 1.5,
    layout: graphLayout(hosts.size),
    style: [
      {selector: "node", style: {label: "data(label)", "background-color": "#2c5aa0", color: "#1d2330",
        "font-size": 11, "text-valign": "bottom", "text-margin-y": 4, width: 18, height: 18}},
      {selector: "edge", style: {width: "data(w)", "line-color": "#8a9bb5", "target-arrow-color": "#8a9bb5",
        "target-arrow-shape": "triangle", "curve-style": "bezier", label: "data(label)", "font-size": 9,
        color: "#5c6675", "text-rotation": "autorotate"}},
      {selector: "edge:selected, edge.hover", style: {"line-color": "#c0392b", "target-arrow-color": "#c0392b"}},
    ],
  });
  CHARTS.graph.one("render", drawnOnce("pcapwire:graph-drawn"));
  CHARTS.graph.on("tap", "edge", (e) => {
    location.href = `/ui/cases/${encodeURIComponent(caseName)}/sessions/${e.target.data("flow_id")}`;
  });
  CHARTS.graph.on("mouseover", "edge", (e) => e.target.addClass("hover"));
  CHARTS.graph.on("mouseout", "edge", (e) => e.target.removeClass("hover"));
  const layout = hosts.size > GRAPH_COSE_MAX_HOSTS ? " (rings by degree)" : "";
  note.textContent = `${hosts.size} hosts, ${flows.length} flows${layout}; click a flow for its session`;
}
