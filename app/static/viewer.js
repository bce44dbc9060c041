// Switchboard trace viewer: lists turns from /v1/traces and draws one turn's spans as a waterfall.
"use strict";

const state = {
  traces: [], cursor: null, listFailed: false, errors: new Map(),
  trace: null, record: null, spanId: null, zoom: null, loading: 0,
};

// ---------------------------------------------------------------- API

function listQuery(cursor) {
  const query = new URLSearchParams({ limit: "100" });
  for (const [key, value] of new FormData($("#filters"))) if (value.trim()) query.set(key, value.trim());
  if (cursor) query.set("cursor", cursor);
  return `/v1/traces?${query}`;
}

// ---------------------------------------------------------------- time

const toNano = (value) => (typeof value === "bigint" ? value : BigInt(typeof value === "string" ? value : Math.round(value)));
const msBetween = (from, to) => Number(to - from) / 1e6;
const wallClock = (nano) => new Date(Number(nano / 1000000n));

function formatMs(ms) {
  if (ms === 0) return "0";
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 100) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${ms.toFixed(0)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.floor(ms / 60000)} m ${((ms % 60000) / 1000).toFixed(0)} s`;
}

function formatClock(date, withMs = false) {
  const time = date.toLocaleTimeString([], { hour12: false });
  return withMs ? `${time}.${String(date.getMilliseconds()).padStart(3, "0")}` : time;
}

function formatDay(date) {
  return date.toLocaleDateString([], { month: "short", day: "numeric" });
}

/** Axis ticks at 1, 2 or 5 × 10^n ms, about six across the window. */
function ticks({ from, to }) {
  const rough = Math.max(to - from, 0.001) / 6;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  const result = [];
  for (let i = Math.ceil(from / step); i * step <= to + step * 1e-9; i++) result.push(i * step);
  return result;
}

// ---------------------------------------------------------------- trace model

const OPERATIONS = { invoke_agent: "agent", retrieval: "retrieval", chat: "chat", execute_tool: "tool" };
const OPERATION_NAMES = { agent: "turn", retrieval: "retrieval", chat: "model call", tool: "tool call", other: "span" };

function normalizeSpan(raw) {
  const attributes = raw.attributes || {};
  const operation = attributes["gen_ai.operation.name"] || raw.name.split(" ")[0];
  return {
    id: raw.span_id,
    parentId: raw.parent_span_id,
    name: raw.name,
    kind: raw.kind,
    start: toNano(raw.start_time_unix_nano),
    end: toNano(raw.end_time_unix_nano),
    status: raw.status?.code || "UNSET",
    message: raw.status?.message || "",
    attributes,
    events: raw.events || [],
    links: raw.links || [],
    op: OPERATIONS[operation] || "other",
    depth: 0,
    deps: [],
  };
}

/** Spans in tree order (each after its parent, siblings by start time), with depths. */
function treeOrder(spans, byId) {
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    if (span.parentId && byId.has(span.parentId)) {
      if (!children.has(span.parentId)) children.set(span.parentId, []);
      children.get(span.parentId).push(span);
    } else roots.push(span);
  }
  const byStart = (a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : a.name.localeCompare(b.name));
  const ordered = [];
  const visit = (span, depth) => {
    span.depth = depth;
    ordered.push(span);
    for (const child of (children.get(span.id) || []).sort(byStart)) visit(child, depth + 1);
  };
  roots.sort(byStart).forEach((root) => visit(root, 0));
  return ordered;
}

/** The spans a span waited for: its links, and its `switchboard.depends_on` call ids. */
function resolveDependencies(spans, byId) {
  const byCall = new Map(spans.map((s) => [s.attributes["gen_ai.tool.call.id"], s]).filter(([c]) => c));
  for (const span of spans) {
    const ids = new Set(span.links.map((l) => l.span_id).filter((id) => byId.has(id)));
    for (const call of span.attributes["switchboard.depends_on"] || []) if (byCall.has(call)) ids.add(byCall.get(call).id);
    span.deps = [...ids].map((id) => byId.get(id));
  }
}

function buildTrace(raw) {
  const spans = (raw.spans || []).map(normalizeSpan);
  const byId = new Map(spans.map((s) => [s.id, s]));
  resolveDependencies(spans, byId);
  const ordered = treeOrder(spans, byId);
  const start = spans.reduce((m, s) => (s.start < m ? s.start : m), spans[0]?.start ?? 0n);
  const end = spans.reduce((m, s) => (s.end > m ? s.end : m), spans[0]?.end ?? 0n);
  return { id: raw.trace_id, spans: ordered, byId, start, end, durationMs: msBetween(start, end) };
}

function spanTitle(span) {
  if (span.op === "tool") return span.attributes["gen_ai.tool.name"] || span.name.replace(/^execute_tool /, "");
  return span.name;
}

const callName = (span) => span.attributes["gen_ai.tool.call.id"] || spanTitle(span);

function spanChips(span) {
  const a = span.attributes;
  const chips = [];
  if (span.op === "agent" && a["switchboard.turn.mode"]) chips.push(a["switchboard.turn.mode"]);
  if (span.op === "agent" && a["switchboard.turn.resumed"]) chips.push("resumed");
  if (span.op === "chat" && a["switchboard.phase"]) chips.push(a["switchboard.phase"]);
  if (span.op === "tool" && a["gen_ai.tool.call.id"]) chips.push(a["gen_ai.tool.call.id"]);
  return chips;
}

// ---------------------------------------------------------------- sidebar: conversations and turns

function groupByConversation(traces) {
  const groups = new Map();
  for (const trace of traces) {
    const key = trace.conversation_id || "(no conversation)";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(trace);
  }
  return [...groups].map(([id, turns]) => ({ id, turns: [...turns].reverse() }));
}

function renderConversations() {
  const nav = $("#conversations");
  if (!state.traces.length) {
    nav.replaceChildren(emptyList());
  } else {
    nav.replaceChildren(...groupByConversation(state.traces).map(conversationGroup));
  }
  $("#more").hidden = !state.cursor;
  markCurrentTurn();
}

function emptyList() {
  if (state.listFailed) {
    return el("div", { class: "empty", "data-testid": "empty-traces" },
      el("strong", {}, "Turns could not be loaded"), el("p", {}, "See the message above; press Refresh to try again."));
  }
  const filtered = [...new FormData($("#filters")).values()].some((v) => v.trim());
  return el("div", { class: "empty", "data-testid": "empty-traces" },
    el("strong", {}, filtered ? "No traces match these filters" : "No traces yet"),
    el("p", {}, filtered ? "Clear a filter to see more turns."
      : "Each turn of a conversation is recorded as one trace. Run a turn and press Refresh."));
}

/** A turn's state in the list: failed; completed though some of its calls failed; or ok. */
function turnState(trace) {
  if (trace.status === "error") return { name: "error", text: "failed" };
  const failed = trace.failed_calls || 0;
  if (failed) return { name: "warning", text: `${failed} call${failed === 1 ? "" : "s"} failed` };
  return { name: "ok", text: "ok" };
}

function conversationGroup(group) {
  const errors = group.turns.filter((t) => t.status === "error").length;
  const warnings = group.turns.filter((t) => turnState(t).name === "warning").length;
  const latest = group.turns[group.turns.length - 1];
  const count = `${group.turns.length} turn${group.turns.length === 1 ? "" : "s"}`;
  return el("section", { class: "conversation", "data-testid": "conversation", dataset: { conversationId: group.id } },
    el("header", { class: "conversation-head", title: `conversation ${group.id}` },
      el("span", { class: "conversation-id mono" }, shortId(group.id)),
      el("span", { class: "conversation-meta muted" }, count,
        errors ? el("span", { class: "failed" }, ` · ${errors} with errors`) : null,
        warnings ? el("span", { class: "warned" }, ` · ${warnings} with failed calls`) : null,
        ` · ${relativeDay(latest)}`)),
    el("ul", { class: "turns", "data-testid": "turn-list" }, group.turns.map(turnItem)));
}

function turnItem(trace) {
  const started = wallClock(toNano(trace.start_time_unix_nano));
  const tools = trace.tools || [];
  const turn = turnState(trace);
  return el("li", {},
    el("button", {
      type: "button", class: `turn status-${turn.name}`, "data-testid": "turn-item",
      dataset: { traceId: trace.trace_id, turnId: trace.turn_id || "" },
      title: `turn ${trace.turn_id}\ntrace ${trace.trace_id}`,
      onclick: () => openTrace(trace.trace_id),
    },
    el("span", { class: "turn-line" },
      el("span", { class: `dot status-${turn.name}`, "data-testid": "turn-dot", title: turn.text, "aria-label": turn.text }),
      el("span", { class: "turn-time" }, formatClock(started)),
      el("span", { class: "turn-spans muted" }, `${trace.span_count} spans`),
      el("span", { class: "turn-duration" }, formatMs(trace.duration_ms))),
    el("span", { class: "turn-tools" },
      tools.length ? tools.slice(0, 4).map((t) => el("span", { class: "tool-chip", title: t }, t)) : el("span", { class: "muted" }, "no tool calls"),
      tools.length > 4 ? el("span", { class: "muted" }, `+${tools.length - 4}`) : null)));
}

const shortId = (id) => (id.length > 18 ? `${id.slice(0, 12)}…${id.slice(-4)}` : id);

function relativeDay(trace) {
  const date = wallClock(toNano(trace.start_time_unix_nano));
  return date.toDateString() === new Date().toDateString() ? formatClock(date) : formatDay(date);
}

function markCurrentTurn() {
  for (const button of document.querySelectorAll("[data-testid=turn-item]")) {
    const current = button.dataset.traceId === state.trace?.id;
    button.classList.toggle("current", current);
    if (current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

async function loadTraces({ more = false } = {}) {
  try {
    const page = await getJSON(listQuery(more ? state.cursor : null));
    state.traces = more ? state.traces.concat(page.items) : page.items;
    state.cursor = page.next_cursor;
    state.listFailed = false;
    clearError("list");
  } catch (err) {
    showError("list", err);
    state.listFailed = !more;
    if (!more) state.traces = [];
  }
  renderConversations();
}

// ---------------------------------------------------------------- the turn's stored content

const CONTENT_REFUSED = "This key may not read conversations, so the turn's messages, arguments "
  + "and results are not shown: use a key whose role may (viewer, chat or admin).";

/** What the turn stored as it ran (its messages, and each call's arguments and outcome), read
 *  from the conversation routes: so only a key that may read the conversation sees it, and none
 *  of it has to be in the spans. */
async function loadRecord(turnId) {
  if (!turnId) return null;
  const path = `/v1/turns/${encodeURIComponent(turnId)}`;
  try {
    const [turn, stored] = await Promise.all([getJSON(path), getJSON(`${path}/messages`)]);
    return { turn, messages: stored.items, calls: new Map(turn.tool_calls.map((c) => [c.id, c])) };
  } catch (err) {
    return { refused: err.status === 403 ? CONTENT_REFUSED : `The turn's messages could not be loaded: ${err.message}` };
  }
}

// The engine's own notes to the model are stored as user messages with this prefix
// (planner/transcripts.py NOTE_PREFIX).
const NOTE_PREFIX = "[switchboard]";

/** The turn as it was said: the request, each model reply with the calls it asked for, each
 *  call's outcome, the engine's notes, and the answer (or what ended the turn). */
function turnContent(record) {
  if (!record) return null;
  if (record.refused) return el("p", { class: "content-note", "data-testid": "content-refused" }, record.refused);
  const last = record.messages.at(-1);
  return el("section", { class: "turn-content", "data-testid": "turn-content", "aria-label": "What the turn said" },
    el("ol", { class: "exchange" }, runsOfResults(record.messages).map((m) => exchangeItem(record, m, m === last))),
    turnEnd(record.turn));
}

/** The messages, with each run of tool results (one batch of calls) as one list. */
function runsOfResults(messages) {
  const items = [];
  for (const message of messages) {
    const previous = items.at(-1);
    if (message.role === "tool" && Array.isArray(previous)) previous.push(message);
    else items.push(message.role === "tool" ? [message] : message);
  }
  return items;
}

function exchangeItem(record, message, last) {
  if (Array.isArray(message)) {
    return el("li", { class: "said said-tool", "data-testid": "turn-results" }, el("span", { class: "said-role" }, "results"),
      el("div", { class: "calls" }, message.map((m) => callButton(record, m.tool_call_id))));
  }
  if (message.role === "user") {
    const note = message.content?.startsWith(NOTE_PREFIX);
    return el("li", { class: `said said-${note ? "note" : "user"}`, "data-testid": note ? "turn-note" : "turn-request" },
      el("span", { class: "said-role" }, note ? "engine note" : "user"), textBlock(message.content ?? ""));
  }
  const answer = last && record.turn.status === "completed" && !message.tool_calls;
  return el("li", { class: `said said-${message.role}`, "data-testid": answer ? "turn-answer" : "turn-step" },
    el("span", { class: "said-role" }, answer ? "answer" : "model"),
    el("div", { class: "said-body" },
      message.reasoning ? el("details", { class: "reasoning" }, el("summary", {}, "reasoning"), el("div", { class: "prose" }, message.reasoning)) : null,
      message.content ? textBlock(message.content) : null,
      message.tool_calls ? el("div", { class: "calls" }, message.tool_calls.map((c) => callButton(record, c.id))) : null));
}

/** A call of the turn: its tool, its id and how it ended; it selects the call's span. */
function callButton(record, callId) {
  const call = record.calls.get(callId);
  const span = state.trace ? spanOfCall(state.trace, callId) : null;
  const outcome = !call || !call.finished_at ? "pending" : call.error ? "error" : "ok";
  return el("button", {
    type: "button", class: `call call-${outcome}`, "data-testid": "turn-call", dataset: { callId },
    title: call?.error || (span ? "Show this call's span" : "This call has no span"), disabled: !span,
    onclick: () => span && selectSpan(span.id),
  }, el("span", { class: "call-name" }, call?.name || callId), el("span", { class: "chip mono" }, callId),
  outcome === "pending" ? null : el("span", { class: `badge badge-${outcome}` }, outcome));
}

/** The span a call ran in: the later one when the call paused its turn (for approval, say). */
const spanOfCall = (model, callId) => model.spans.findLast((s) => s.attributes["gen_ai.tool.call.id"] === callId);

function turnEnd(turn) {
  if (turn.error) {
    return el("p", { class: "turn-end is-error", "data-testid": "turn-error" },
      el("strong", {}, `${turn.status}: `), turn.error.detail || turn.error.title);
  }
  if (turn.status === "completed" || turn.status === "running") return null;
  return el("p", { class: "turn-end", "data-testid": "turn-status" }, turn.status.replaceAll("_", " "));
}

// ---------------------------------------------------------------- main: the waterfall

async function openTrace(traceId) {
  if (traceId === state.trace?.id) return;
  location.hash = new URLSearchParams({ trace: traceId }).toString();
}

async function loadTrace({ trace, turn, span }) {
  const ticket = ++state.loading;
  $("#trace").replaceChildren(el("div", { class: "empty" }, "Loading trace…"));
  try {
    const raw = await getJSON(trace ? `/v1/traces/${encodeURIComponent(trace)}` : `/v1/turns/${encodeURIComponent(turn)}/trace`);
    if (ticket !== state.loading) return;
    const model = buildTrace(raw);
    const record = await loadRecord(model.spans[0]?.attributes["switchboard.turn.id"]);
    if (ticket !== state.loading) return;
    state.trace = model;
    state.record = record;
    state.zoom = null;
    clearError("trace");
    if (!trace) history.replaceState(null, "", `#${new URLSearchParams({ trace: state.trace.id })}`);
    renderTrace(state.trace);
    selectSpan(span && state.trace.byId.has(span) ? span : null);
  } catch (err) {
    if (ticket !== state.loading) return;
    state.trace = null;
    state.record = null;
    showError("trace", err);
    $("#trace").replaceChildren(el("div", { class: "empty" }, "This trace could not be loaded."));
    selectSpan(null);
  }
  markCurrentTurn();
}

function renderTrace(model) {
  const main = $("#trace");
  if (!model.spans.length) {
    main.replaceChildren(el("div", { class: "empty" }, "This trace has no spans yet; it may still be running."));
    return;
  }
  main.replaceChildren(traceHeader(model), turnContent(state.record),
    el("div", { class: "toolbar" }, legend(), zoomControls(model)), waterfall(model));
  drawArrowsSoon();
}

function traceHeader(model) {
  const root = model.spans[0];
  const tools = model.spans.filter((s) => s.op === "tool");
  const failed = model.spans.filter((s) => s.status === "ERROR");
  const a = root.attributes;
  return el("header", { class: "trace-head", "data-testid": "trace-header" },
    el("div", { class: "trace-title" },
      el("h2", { title: a["switchboard.turn.id"] || root.name }, a["switchboard.turn.id"] ? shortId(a["switchboard.turn.id"]) : root.name),
      a["switchboard.turn.mode"] ? el("span", { class: "chip" }, `${a["switchboard.turn.mode"]} mode`) : null,
      el("span", { class: `badge ${failed.length ? "badge-error" : "badge-ok"}` }, failed.length ? `${failed.length} error${failed.length > 1 ? "s" : ""}` : "ok")),
    el("dl", { class: "trace-facts" },
      fact("Duration", formatMs(model.durationMs)),
      fact("Started", `${formatDay(wallClock(model.start))} ${formatClock(wallClock(model.start), true)}`),
      fact("Spans", String(model.spans.length)),
      fact("Tool calls", String(tools.length)),
      fact("Conversation", a["gen_ai.conversation.id"] || "—", true),
      fact("Trace", model.id, true)));
}

function fact(term, value, mono = false) {
  return el("div", {}, el("dt", {}, term), el("dd", { class: mono ? "mono" : "", title: value }, value));
}

function legend() {
  const item = (cls, text) => el("span", { class: "legend-item" }, el("span", { class: `swatch ${cls}` }), text);
  return el("div", { class: "legend" },
    item("op-agent", "turn"), item("op-retrieval", "retrieval"), item("op-chat", "model call"),
    item("op-tool", "tool call"), item("is-error", "error"),
    el("span", { class: "legend-item" }, el("span", { class: "swatch-arrow" }, "→"), "waited for"));
}

function waterfall(model) {
  const marks = ticks(timeWindow(model));
  const pct = (ms) => `${100 * position(model, ms)}%`;
  const edge = (ms) => (position(model, ms) < 0.04 ? " first" : position(model, ms) > 0.96 ? " last" : "");
  return el("div", { class: "waterfall", "data-testid": "waterfall", role: "list", "aria-label": "Spans" },
    el("div", { class: "axis", "aria-hidden": "true" },
      el("div", { class: "axis-label" }, "Span"),
      el("div", { class: "axis-track", title: "Drag to zoom; double-click to see the whole turn", onpointerdown: startBrush, ondblclick: () => setZoom(null) },
        marks.map((t) => el("span", { class: `tick${edge(t)}`, style: { left: pct(t) } }, formatMs(t))))),
    el("div", { class: "rows" },
      el("div", { class: "grid", "aria-hidden": "true" }, marks.map((t) => el("span", { class: "gridline", style: { left: pct(t) } }))),
      svgLayer(),
      model.spans.map((span) => spanRow(model, span))));
}

function svgLayer() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "arrows");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("data-testid", "dependency-arrows");
  svg.innerHTML = '<defs><marker id="arrowhead" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z"/></marker></defs>';
  return svg;
}

function spanRow(model, span) {
  const failed = span.status === "ERROR";
  const row = el("div", {
    class: `row op-${span.op}${failed ? " is-error" : ""}`, role: "listitem", tabindex: "0",
    "data-testid": "span-row", dataset: { spanId: span.id },
    "aria-label": `${spanTitle(span)}, ${formatMs(msBetween(span.start, span.end))}${failed ? ", error" : ""}`,
    onclick: () => selectSpan(span.id),
    onkeydown: (event) => onRowKey(event, span),
  },
  el("div", { class: "label", style: { paddingLeft: `${10 + span.depth * 18}px` } },
    el("span", { class: "span-head" },
      el("span", { class: `op-square op-${span.op}`, title: OPERATION_NAMES[span.op] }),
      el("span", { class: "span-name", title: span.name }, spanTitle(span))),
    spanChips(span).map((c) => el("span", { class: "chip mono" }, c)),
    span.deps.length ? el("span", { class: "waits", "data-testid": "waits-for", title: `waited for ${span.deps.map(spanTitle).join(", ")}` },
      `waits for ${span.deps.map(callName).join(", ")}`) : null,
    pausedChip(span),
    failed ? el("span", { class: "error-mark", "data-testid": "error-marker", title: span.message || "error" }, "!") : null),
  el("div", { class: "track" }, bar(model, span), durationLabel(model, span), eventMarks(model, span)));
  return row;
}

/** A call that paused its turn: it waited for a person's approval or a client tool's output,
 * and ran (or not) in the resumed part of the turn. */
function pausedChip(span) {
  const waits = span.attributes["switchboard.tool.waits_for"];
  if (!waits) return null;
  const text = waits === "approval" ? "paused for approval" : "paused for the client's output";
  return el("span", { class: "waits paused", "data-testid": "paused-for", title: "the turn paused here and went on when it had an answer" }, text);
}

/** Where a span's bar goes across the track, as fractions of the time window. */
function geometry(model, span) {
  const { from, to } = timeWindow(model);
  const left = position(model, msBetween(model.start, span.start));
  const width = Math.max(0, msBetween(span.start, span.end) / (to - from));
  return { left, width };
}

function bar(model, span) {
  const { left, width } = geometry(model, span);
  return el("div", {
    class: `bar op-${span.op}${span.status === "ERROR" ? " is-error" : ""}`,
    "data-testid": "span-bar", dataset: { spanId: span.id },
    style: { left: `${left * 100}%`, width: `${width * 100}%` },
    title: `${span.name} · ${formatMs(msBetween(span.start, span.end))}`,
  });
}

/** The duration beside the bar: after it, or before it when the bar runs to the right edge,
 *  or inside it when the bar is wide. */
function durationLabel(model, span) {
  const { left, width } = geometry(model, span);
  const text = formatMs(msBetween(span.start, span.end));
  if (width >= 0.2) return el("span", { class: "duration inside", style: { left: `${Math.max(left, 0) * 100}%` } }, text);
  if (left + width < 0.85) return el("span", { class: "duration", style: { left: `calc(${(left + width) * 100}% + 6px)` } }, text);
  return el("span", { class: "duration", style: { right: `calc(${(1 - left) * 100}% + 6px)` } }, text);
}

function eventMarks(model, span) {
  return span.events.map((event) => {
    const at = position(model, msBetween(model.start, toNano(event.time_unix_nano)));
    return el("span", { class: "event-mark", style: { left: `${at * 100}%` }, title: event.name });
  });
}

function onRowKey(event, span) {
  const rows = [...document.querySelectorAll("[data-testid=span-row]")];
  const index = rows.indexOf(event.currentTarget);
  const move = { ArrowDown: 1, ArrowUp: -1, Home: -index, End: rows.length - 1 - index }[event.key];
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    selectSpan(span.id);
  } else if (move !== undefined) {
    event.preventDefault();
    rows[Math.min(rows.length - 1, Math.max(0, index + move))].focus();
  }
}

// ---------------------------------------------------------------- zoom

/** The time window drawn, in ms from the trace start: the whole trace, or a zoomed part. */
function timeWindow(model) {
  return state.zoom || { from: 0, to: model.durationMs || 1 };
}

/** Where a moment (ms from the trace start) falls across the track, 0 to 1 inside the window. */
function position(model, ms) {
  const { from, to } = timeWindow(model);
  return (ms - from) / (to - from);
}

function setZoom(range) {
  state.zoom = range && range.to - range.from > 1e-6 ? range : null;
  if (!state.trace) return;
  renderTrace(state.trace);
  selectSpan(state.spanId);
}

function zoomToSpan(span) {
  const from = msBetween(state.trace.start, span.start), to = msBetween(state.trace.start, span.end);
  const pad = Math.max((to - from) * 0.08, 0.01);
  setZoom({ from: Math.max(0, from - pad), to: Math.min(state.trace.durationMs, to + pad) });
}

function zoomControls(model) {
  if (!state.zoom) return el("span", { class: "hint" }, "Drag across the time scale to zoom");
  const { from, to } = state.zoom;
  return el("span", { class: "zoom", "data-testid": "zoom" },
    `Showing ${formatMs(from)} – ${formatMs(to)} of ${formatMs(model.durationMs)}`,
    el("button", { type: "button", class: "button small", onclick: () => setZoom(null) }, "Show all"));
}

/** Drag on the time scale: a brush follows the pointer; letting go zooms to what it covers. */
function startBrush(event) {
  const track = event.currentTarget;
  const box = track.getBoundingClientRect();
  const at = (x) => Math.min(1, Math.max(0, (x - box.left) / box.width));
  const origin = at(event.clientX);
  const brush = el("div", { class: "brush" });
  track.append(brush);
  track.setPointerCapture(event.pointerId);
  const span = (x) => [Math.min(origin, at(x)), Math.max(origin, at(x))];
  const move = (e) => {
    const [a, b] = span(e.clientX);
    Object.assign(brush.style, { left: `${a * 100}%`, width: `${(b - a) * 100}%` });
  };
  const end = (e) => {
    track.removeEventListener("pointermove", move);
    brush.remove();
    const [a, b] = span(e.clientX);
    if ((b - a) * box.width < 4) return;
    const { from, to } = timeWindow(state.trace);
    setZoom({ from: from + a * (to - from), to: from + b * (to - from) });
  };
  track.addEventListener("pointermove", move);
  track.addEventListener("pointerup", end, { once: true });
}

// ---------------------------------------------------------------- dependency arrows

let arrowFrame = 0;
function drawArrowsSoon() {
  cancelAnimationFrame(arrowFrame);
  arrowFrame = requestAnimationFrame(drawArrows);
}

/** An elbow from the end of each awaited span's bar down to the start of the waiting span's. */
function drawArrows() {
  const svg = document.querySelector(".arrows");
  if (!svg || !state.trace) return;
  const box = svg.getBoundingClientRect();
  const paths = [];
  for (const span of state.trace.spans) {
    for (const dep of span.deps) {
      const from = barBox(dep.id), to = barBox(span.id);
      if (!from || !to) continue;
      const x2 = to.left - box.left, y2 = to.top + to.height / 2 - box.top;
      const x1 = Math.min(from.right - box.left, x2 - 8), y1 = from.bottom - box.top;
      paths.push(`<path d="M${x1},${y1} V${y2} H${x2 - 1}" marker-end="url(#arrowhead)"/>`);
    }
  }
  svg.querySelectorAll("path:not(marker path)").forEach((p) => p.remove());
  svg.insertAdjacentHTML("beforeend", paths.join(""));
}

const barBox = (spanId) => document.querySelector(`.bar[data-span-id="${CSS.escape(spanId)}"]`)?.getBoundingClientRect();

// ---------------------------------------------------------------- span detail

function selectSpan(spanId) {
  state.spanId = spanId;
  for (const row of document.querySelectorAll("[data-testid=span-row]")) {
    const selected = row.dataset.spanId === spanId;
    row.classList.toggle("selected", selected);
    row.setAttribute("aria-current", selected ? "true" : "false");
  }
  const panel = $("#detail");
  const span = spanId && state.trace?.byId.get(spanId);
  panel.hidden = !span;
  panel.replaceChildren(...(span ? spanDetail(state.trace, span) : []));
  if (state.trace) {
    const params = new URLSearchParams({ trace: state.trace.id });
    if (span) params.set("span", span.id);
    history.replaceState(null, "", `#${params}`);
  }
  drawArrowsSoon();
}

function spanDetail(model, span) {
  const a = span.attributes;
  return [
    el("header", { class: "detail-head" },
      el("span", { class: `op-tag op-${span.op}` }, OPERATION_NAMES[span.op]),
      el("h2", { "data-testid": "detail-name", title: span.name }, span.name),
      el("button", { type: "button", class: "button small", title: "Zoom the time scale to this span", onclick: () => zoomToSpan(span) }, "Zoom"),
      el("button", { type: "button", class: "close", "aria-label": "Close detail", onclick: () => selectSpan(null) }, "×")),
    statusLine(span),
    el("dl", { class: "facts", "data-testid": "detail-facts" }, detailFacts(model, span)),
    dependencies(span),
    a["switchboard.reasoning"] ? section("Reasoning", el("div", { class: "prose", "data-testid": "detail-reasoning" }, a["switchboard.reasoning"])) : null,
    ...storedContent(span, state.record),
    messagesSection("Input messages", a["gen_ai.input.messages"], "detail-input-messages"),
    messagesSection("Output messages", a["gen_ai.output.messages"], "detail-output-messages"),
    section("Attributes", attributeTable(a)),
    span.events.length ? section("Events", eventList(model, span)) : null,
    span.links.length ? section("Links", linkList(model, span)) : null,
  ].filter(Boolean);
}

/** What the turn stored for this span: a call's arguments and outcome, the turn's request and
 *  answer. A call the store does not know shows what the span captured, if anything. */
function storedContent(span, record) {
  const call = span.op === "tool" && record?.calls?.get(span.attributes["gen_ai.tool.call.id"]);
  if (call) return callContent(call);
  const a = span.attributes;
  const captured = [
    jsonSection("Arguments", a["gen_ai.tool.call.arguments"], "detail-arguments"),
    jsonSection(span.status === "ERROR" ? "Result (error)" : "Result", a["gen_ai.tool.call.result"], "detail-result"),
  ];
  if (span.op === "agent" && record?.turn) return turnSections(record);
  if (record?.refused && (span.op === "agent" || span.op === "tool") && !captured.some(Boolean)) {
    return [el("p", { class: "content-note", "data-testid": "detail-content-refused" }, record.refused)];
  }
  return captured;
}

function callContent(call) {
  const ended = call.finished_at !== null && call.finished_at !== undefined;
  return [
    section("Arguments", el("pre", { class: "code", "data-testid": "detail-arguments" }, pretty(call.arguments))),
    call.error
      ? section(`Error${call.error_type ? ` (${call.error_type})` : ""}`, el("pre", { class: "code is-error", "data-testid": "detail-error" }, call.error))
      : ended ? section(call.truncated ? "Result (cut to the output limit)" : "Result", el("pre", { class: "code", "data-testid": "detail-result" }, pretty(call.result))) : null,
  ];
}

function turnSections(record) {
  const request = record.messages.find((m) => m.role === "user" && !m.content?.startsWith(NOTE_PREFIX));
  const { message, error } = record.turn;
  return [
    request ? section("Request", el("div", { class: "prose", "data-testid": "detail-request" }, request.content)) : null,
    message ? section("Answer", el("div", { class: "prose", "data-testid": "detail-answer" }, message.content)) : null,
    error ? section("Error", el("div", { class: "prose", "data-testid": "detail-turn-error" }, error.detail || error.title)) : null,
  ];
}

function statusLine(span) {
  const error = span.status === "ERROR";
  return el("div", { class: `status-line ${error ? "is-error" : ""}`, "data-testid": "detail-status" },
    el("span", { class: `badge ${error ? "badge-error" : "badge-ok"}`, title: `status code ${span.status}` }, error ? "error" : "ok"),
    error && span.attributes["error.type"] ? el("span", { class: "chip mono" }, span.attributes["error.type"]) : null,
    span.message ? el("span", { class: "status-message" }, span.message) : null);
}

function detailFacts(model, span) {
  const a = span.attributes;
  const offset = msBetween(model.start, span.start);
  const rows = [
    ["Tool", a["gen_ai.tool.name"], "detail-tool"],
    ["Call id", a["gen_ai.tool.call.id"]],
    ["Model", a["gen_ai.request.model"]],
    ["Phase", a["switchboard.phase"]],
    ["Paused for", a["switchboard.tool.waits_for"]],
    ["Tokens", tokenText(a)],
    ["Duration", formatMs(msBetween(span.start, span.end))],
    ["Starts at", `+${formatMs(offset)} · ${formatClock(wallClock(span.start), true)}`],
    ["Kind", span.kind],
    ["Status code", span.status],
    ["Span id", span.id],
    ["Parent", span.parentId || "— (root)"],
  ];
  return rows.filter(([, value]) => value !== undefined && value !== null && value !== "")
    .map(([term, value, testid]) => el("div", {}, el("dt", {}, term), el("dd", { "data-testid": testid }, String(value))));
}

function tokenText(a) {
  if (a["gen_ai.usage.input_tokens"] === undefined) return null;
  const cached = a["gen_ai.usage.cache_read.input_tokens"];
  return `${a["gen_ai.usage.input_tokens"]} in${cached ? ` (${cached} cached)` : ""} · ${a["gen_ai.usage.output_tokens"]} out`;
}

function dependencies(span) {
  if (!span.deps.length && !(span.attributes["switchboard.depends_on"] || []).length) return null;
  const known = span.deps.map((dep) => el("button", {
    type: "button", class: "dep", dataset: { spanId: dep.id }, onclick: () => selectSpan(dep.id),
  }, el("span", { class: `op-square op-${dep.op}` }), spanTitle(dep),
  dep.attributes["gen_ai.tool.call.id"] ? el("span", { class: "chip mono" }, dep.attributes["gen_ai.tool.call.id"]) : null));
  const names = new Set(span.deps.map((d) => d.attributes["gen_ai.tool.call.id"]));
  const missing = (span.attributes["switchboard.depends_on"] || []).filter((c) => !names.has(c))
    .map((c) => el("span", { class: "chip mono" }, c));
  return section("Waited for", el("div", { class: "deps", "data-testid": "detail-dependencies" }, known, missing));
}

function section(title, body) {
  return el("section", { class: "detail-section" }, el("h3", {}, title), body);
}

/** A JSON-string attribute, pretty-printed (shown as written when it is not JSON). */
function jsonSection(title, value, testid) {
  if (value === undefined || value === null) return null;
  return section(title, el("pre", { class: "code", "data-testid": testid }, pretty(value)));
}

function pretty(value) {
  if (typeof value !== "string") return JSON.stringify(value, null, 2);
  try {
    return JSON.stringify(JSON.parse(value), null, 2);
  } catch {
    return value;
  }
}

function messagesSection(title, value, testid) {
  if (value === undefined || value === null) return null;
  let messages;
  try {
    messages = typeof value === "string" ? JSON.parse(value) : value;
  } catch {
    return section(title, el("pre", { class: "code", "data-testid": testid }, value));
  }
  if (!Array.isArray(messages)) return section(title, el("pre", { class: "code", "data-testid": testid }, pretty(messages)));
  return section(title, el("div", { class: "messages", "data-testid": testid }, messages.map(messageCard)));
}

function messageCard(message) {
  const parts = Array.isArray(message.parts) ? message.parts : [{ type: "text", content: message.content }];
  return el("div", { class: `message role-${message.role}` },
    el("div", { class: "message-role" }, message.role || "message",
      message.finish_reason ? el("span", { class: "muted" }, ` · ${message.finish_reason}`) : null),
    parts.map(messagePart));
}

function messagePart(part) {
  if (part.type === "text") return textBlock(part.content ?? "");
  if (part.type === "tool_call") return el("div", { class: "part" }, el("div", { class: "part-head mono" }, `→ ${part.name}`, el("span", { class: "muted" }, ` ${part.id || ""}`)), el("pre", { class: "code" }, pretty(part.arguments ?? {})));
  if (part.type === "tool_call_response") return el("div", { class: "part" }, el("div", { class: "part-head mono" }, `← ${part.id || "result"}`), el("pre", { class: "code" }, pretty(part.response ?? "")));
  return el("pre", { class: "code" }, pretty(part));
}

/** Message text; a JSON object or list (a plan, say) is pretty-printed. */
function textBlock(text) {
  const trimmed = String(text).trim();
  if (/^[[{]/.test(trimmed)) {
    try {
      return el("pre", { class: "code" }, JSON.stringify(JSON.parse(trimmed), null, 2));
    } catch { /* plain text that starts with a bracket */ }
  }
  return el("div", { class: "prose" }, text);
}

function attributeTable(attributes) {
  const keys = Object.keys(attributes).sort();
  if (!keys.length) return el("p", { class: "muted" }, "No attributes.");
  return el("table", { class: "attributes", "data-testid": "detail-attributes" },
    el("tbody", {}, keys.map((key) => el("tr", { dataset: { attribute: key } },
      el("th", { scope: "row", class: "mono" }, breakable(key)),
      el("td", {}, el("div", { class: "value mono" }, attributeText(attributes[key])))))));
}

/** A dotted name that may wrap after its dots only. */
const breakable = (name) => name.split(".").flatMap((part, i) => (i ? [".", el("wbr"), part] : [part]));

function attributeText(value) {
  if (typeof value === "string") return value;
  return JSON.stringify(value, (_, v) => (typeof v === "bigint" ? v.toString() : v));
}

function eventList(model, span) {
  return el("ul", { class: "plain-list" }, span.events.map((event) => el("li", {},
    el("div", {}, el("strong", {}, event.name), el("span", { class: "muted" }, ` +${formatMs(msBetween(model.start, toNano(event.time_unix_nano)))}`)),
    Object.keys(event.attributes || {}).length ? attributeTable(event.attributes) : null)));
}

function linkList(model, span) {
  return el("ul", { class: "plain-list" }, span.links.map((link) => {
    const target = model.byId.get(link.span_id);
    return el("li", {}, target
      ? el("button", { type: "button", class: "dep", dataset: { spanId: target.id }, onclick: () => selectSpan(target.id) }, spanTitle(target))
      : el("span", { class: "mono" }, `${link.trace_id} / ${link.span_id}`));
  }));
}

// ---------------------------------------------------------------- errors and routing

/** Errors by where they came from ("list", "trace"); each source's latest one is shown. */
function showError(source, err) {
  state.errors.set(source, String(err.message || err));
  renderErrors();
}

function clearError(source) {
  if (source) state.errors.delete(source);
  else state.errors.clear();
  renderErrors();
}

function renderErrors() {
  const banner = $("#error-banner");
  banner.hidden = !state.errors.size;
  banner.replaceChildren(
    el("ul", {}, [...state.errors.values()].map((message) => el("li", {}, el("strong", {}, "Could not load: "), message))),
    el("button", { type: "button", class: "close", "aria-label": "Dismiss", onclick: () => clearError() }, "×"));
}

function hashParams() {
  return Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
}

function onHashChange() {
  const params = hashParams();
  if (!params.trace && !params.turn) return;
  if (params.trace && params.trace === state.trace?.id) selectSpan(params.span || null);
  else loadTrace(params);
}

function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function useKey(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("#api-key").value.trim());
  loadTraces();
  onHashChange();
}

function start() {
  const reload = debounce(() => loadTraces(), 250);
  $("#api-key").value = apiKey();
  $("#key-form").addEventListener("submit", useKey);
  $("#api-key").addEventListener("change", useKey);
  $("#filters").addEventListener("input", reload);
  $("#filters").addEventListener("submit", (event) => { event.preventDefault(); loadTraces(); });
  $("#refresh").addEventListener("click", () => loadTraces());
  $("#more").addEventListener("click", () => loadTraces({ more: true }));
  window.addEventListener("hashchange", onHashChange);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && state.spanId) selectSpan(null); });
  new ResizeObserver(drawArrowsSoon).observe($("#trace"));
  if (!apiKey()) {
    $("#conversations").replaceChildren(el("div", { class: "empty" },
      "Enter an API key (viewer role or above) at the top to list turns."));
    $("#api-key").focus();
    return;
  }
  loadTraces();
  onHashChange();
}

start();
