// What the viewer's pages share (loaded before each page's own script): the API key and
// the DOM helpers.
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
