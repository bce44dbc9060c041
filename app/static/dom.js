// What the viewer's pages share (loaded before each page's own script): the API key, reading
// the API, and the DOM helpers.
"use strict";

// The API key stays in this tab's session storage only; every API call sends it.
const KEY_STORAGE = "switchboard.apiKey";
const apiKey = () => sessionStorage.getItem(KEY_STORAGE) || "";

const $ = (selector) => document.querySelector(selector);

/** An element: `el("div", {class: "x", dataset: {spanId: "1"}}, child, "text")`. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** JSON whose `*_unix_nano` numbers stay exact: they exceed 2^53, so they become BigInts,
 *  read from the number's source text (JSON.parse source access, Chromium 114+). */
function parseJSON(text) {
  return JSON.parse(text, (key, value, context) =>
    key.endsWith("_unix_nano") && typeof value === "number" && context?.source
      ? BigInt(context.source)
      : value);
}

function requestHeaders() {
  const headers = { accept: "application/json" };
  if (apiKey()) headers.authorization = `Bearer ${apiKey()}`;
  return headers;
}

async function getJSON(path) {
  let response;
  try {
    response = await fetch(path, { headers: requestHeaders() });
  } catch (err) {
    throw new Error(`GET ${path} failed: ${err.message}`);
  }
  const text = await response.text();
  if (response.status === 401) throw failure("Enter an API key with the viewer role above to read this page.", response);
  if (!response.ok) throw failure(`GET ${path} → ${response.status}: ${problemText(text, response)}`, response);
  return parseJSON(text);
}

/** An error that keeps the response's status, for callers that treat a refusal apart. */
const failure = (message, response) => Object.assign(new Error(message), { status: response.status });

/** The `detail` of an RFC 9457 problem, else the status text. */
function problemText(text, response) {
  try {
    const problem = JSON.parse(text);
    return problem.detail || problem.title || response.statusText;
  } catch {
    return text.slice(0, 300) || response.statusText;
  }
}
