// pcapwire dashboard: Suricata alert groups (GET /api/v1/rules/groups): the rule set grouped
// by classtype, rule file or a metadata key, with rules, enabled rules and alerts per group,
// and enable / disable / default per group (PUT /api/v1/rules/groups/{group}, admin, only
// for a rule set `pcapwire rules update` built). Loaded after app.js and views.js (el, api,
// cell, rows, PAGES). Text only, never HTML.
"use strict";

const STATES = [["enabled", "Enable"], ["disabled", "Disable"], ["default", "Default"]];
const NO_GROUP = "(none)";  // rules without the grouping's value: cannot be switched
const thresholdText = (t) => !t ? "" : `${t.type} ${t.track}, ${t.count} per ${t.seconds} s`;

function groupsQuery(form) {
  const f = new FormData(form);
  const by = f.get("by") === "metadata" ? `metadata:${f.get("key").trim()}` : f.get("by");
  const params = new URLSearchParams({by});
  if (f.get("case").trim()) params.set("case", f.get("case").trim());
  return params;
}

async function changeGroup(group, state, form, canChange) {
  const out = document.getElementById("rules-error");
  out.textContent = "";
  for (const b of document.querySelectorAll("#groups button")) b.disabled = true;
  try {
    await api("PUT", `/api/v1/rules/groups/${encodeURIComponent(group)}`, {state});
  } catch (err) { out.textContent = `${group}: ${err.message}`; }
  await listGroups(form, canChange);
}

function groupRow(g, form, canChange) {
  const switchable = canChange && g.value !== NO_GROUP;
  const buttons = STATES.map(([state, label]) => el("button", {
    type: "button", class: `group-${state}`, onclick: () => changeGroup(g.group, state, form, canChange),
  }, label));
  for (const [i, b] of buttons.entries()) b.disabled = !switchable || g.state === STATES[i][0];
  return el("tr", {"data-group": g.group, class: `group-state-${g.state}`}, cell(g.group), cell(g.rules),
    cell(g.enabled), cell(g.alerts), cell(g.state, `status status-${g.state}`), cell(thresholdText(g.threshold)),
    el("td", {}, ...buttons));
}

async function listGroups(form, canChange) {
  const out = document.getElementById("rules-error");
  try {
    const r = await api("GET", `/api/v1/rules/groups?${groupsQuery(form)}`);
    document.getElementById("rules-summary").textContent =
      `${r.rules} rules in ${r.files} file(s), parsed in ${r.parse_seconds} s; ` +
      `${r.alerts_unmatched} alert(s) of no rule of this set.`;
    document.getElementById("rules-managed").textContent = r.managed
      ? (canChange ? "" : "Only an admin can enable or disable a group.")
      : "These rule files were placed by hand: groups can be listed, not enabled or disabled.";
    const problems = document.getElementById("rules-problems");
    problems.hidden = r.problems === 0;
    document.getElementById("rules-problems-count").textContent = r.problems;
    problems.querySelector("ul").replaceChildren(...r.problem_samples.map((p) =>
      el("li", {}, `${p.file}:${p.line}: ${p.message}`)));
    rows("#groups", r.groups, (g) => groupRow(g, form, canChange && r.managed));
  } catch (err) {
    out.textContent = err.message;
    rows("#groups", [], () => null);
  }
}

async function rulesPage() {
  const form = document.getElementById("rules-filter");
  const me = await api("GET", "/api/v1/whoami");
  const canChange = me.role === "admin";
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    document.getElementById("rules-error").textContent = "";
    listGroups(form, canChange);
  });
  await listGroups(form, canChange);
}

Object.assign(PAGES, {rules: rulesPage});
