// Switchboard evals view: eval runs, each configuration's numbers, the frontier, and the cases
// that failed with why, each linking to its turn's trace in the trace viewer.
"use strict";

function showError(error) {
  const banner = $("#error-banner");
  banner.textContent = error ? error.message : "";
  banner.hidden = !error;
}

const number = (value, digits = 3) => (value === null || value === undefined ? "–" : value.toFixed(digits));

async function loadRuns() {
  try {
    const { items } = await getJSON("/v1/evals/runs");
    showError(null);
    const list = $("#runs");
    list.replaceChildren(...(items.length ? items.map(runItem) : [el("div", { class: "empty" }, "No eval runs yet.")]));
    const wanted = new URLSearchParams(location.hash.slice(1)).get("run");
    if (wanted) await openRun(wanted);
  } catch (error) {
    showError(error);
  }
}

function runItem(run) {
  return el("button", {
    type: "button", class: "turn", dataset: { testid: "run-item", runId: run.id },
    onclick: () => { location.hash = new URLSearchParams({ run: run.id }).toString(); },
  },
  el("span", { class: "turn-line" }, el("span", { class: "turn-time" }, `${run.set_name} · ${run.configs.join(", ")}`)),
  el("span", { class: "turn-spans muted" }, `${run.status} · ${run.done}/${run.total} · ${new Date(run.created_at).toLocaleString()}`));
}

async function openRun(runId) {
  for (const item of document.querySelectorAll("[data-testid=run-item]")) {
    item.classList.toggle("current", item.dataset.runId === runId);
  }
  try {
    const [report, frontier, failing] = await Promise.all([
      getJSON(`/v1/evals/runs/${encodeURIComponent(runId)}`),
      getJSON(`/v1/evals/runs/${encodeURIComponent(runId)}/frontier`),
      getJSON(`/v1/evals/runs/${encodeURIComponent(runId)}/cases?passed=false`),
    ]);
    showError(null);
    $("#run").replaceChildren(runHeader(report, frontier), resultsTable(report, frontier), failingCases(failing.items));
  } catch (error) {
    showError(error);
  }
}

function runHeader(report, frontier) {
  return el("header", { class: "trace-header" },
    el("h2", {}, `Run ${report.id}`),
    el("p", { dataset: { testid: "run-status" } }, `${report.status}: ${report.progress.done} of ${report.progress.total} cases`),
    el("p", { dataset: { testid: "recommendation" } },
      frontier.recommended ? `Recommended: ${frontier.recommended}. ${frontier.why}` : frontier.why));
}

const COLUMNS = [
  ["accuracy", (r) => number(r.accuracy)], ["± stderr", (r) => number(r.stderr)],
  ["call accuracy", (r) => number(r.call_accuracy)], ["retrieval recall", (r) => number(r.retrieval_recall)],
  ["parallel", (r) => number(r.parallel_share)], ["failed turns", (r) => String(r.failed_turns)],
  ["p50 ms", (r) => number(r.latency_ms.p50, 0)], ["p95 ms", (r) => number(r.latency_ms.p95, 0)],
  ["tokens in/out", (r) => `${r.tokens.prompt}/${r.tokens.completion}`],
  ["cost/case", (r) => number(r.cost, 6)], ["pass^k", (r) => number(r.pass_k)],
];

function resultsTable(report, frontier) {
  const head = el("tr", {}, el("th", {}, "config"), el("th", {}, "cases"), COLUMNS.map(([name]) => el("th", {}, name)));
  const rows = report.results.map((r) => el("tr", { dataset: { testid: "config-row", config: r.config } },
    el("td", {}, r.config, frontier.frontier.includes(r.config) ? el("span", { class: "chip" }, "frontier") : null),
    el("td", {}, String(r.cases)),
    COLUMNS.map(([name, value]) => el("td", { dataset: { column: name } }, value(r)))));
  return el("table", { class: "results", dataset: { testid: "results" } }, el("thead", {}, head), el("tbody", {}, rows));
}

function failingCases(outcomes) {
  const items = outcomes.map((o) => el("li", { dataset: { testid: "failing-case", case: o.case_id, config: o.config } },
    el("strong", {}, `${o.config} · ${o.case_id}${o.repeat ? ` #${o.repeat}` : ""}`), " ",
    o.turns.flatMap((t) => t.reasons.map((r) => el("span", { class: "reason" }, r.detail))),
    " ",
    o.turns.filter((t) => t.trace_id).map((t) => el("a", { href: `/viewer#trace=${t.trace_id}`, dataset: { testid: "trace-link" } }, "trace"))));
  return el("section", { class: "failing" }, el("h3", {}, `Failing cases (${outcomes.length})`),
    items.length ? el("ul", {}, items) : el("p", { class: "empty" }, "None."));
}

function start() {
  const input = $("#api-key");
  input.value = apiKey();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, input.value.trim());
    loadRuns();
  });
  $("#refresh").addEventListener("click", loadRuns);
  window.addEventListener("hashchange", () => {
    const run = new URLSearchParams(location.hash.slice(1)).get("run");
    if (run) openRun(run);
  });
  if (apiKey()) loadRuns();
  else $("#runs").replaceChildren(el("div", { class: "empty" }, "Enter an API key above to list eval runs."));
}

document.addEventListener("DOMContentLoaded", start);
