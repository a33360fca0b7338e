// The Hydra web console: a page per hash route, drawn from the HTTP API.
// No dependencies and no build step. Everything shown is put in the page as text
// (textContent), never as HTML, so event data cannot inject markup or script.
"use strict";

const PAGE = 25; // events per page
const TAIL_MAX = 200; // events kept on the live tail
const POLL_MS = 2000; // server page refresh
const HISTORY = 150; // health samples kept (five minutes at POLL_MS)
const TOKEN_KEY = "hydra-console-token";

const main = document.getElementById("main");
const notice = document.getElementById("notice");
let pageAbort = null; // aborts the current page's requests, live tail and timers
const samples = []; // {t, events, fsyncs, committed} from /health, across pages

// -- talking to the server ---------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { authorization: "Bearer " + token } : {};
}

async function request(path, signal) {
  const r = await fetch(path, { headers: authHeaders(), signal });
  if (!r.ok) {
    let message = r.status + " " + r.statusText;
    try { message = (await r.json()).error || message; } catch (e) { /* not JSON */ }
    if (r.status === 401 || r.status === 403) {
      message += " — enter a token with the read role above.";
    }
    throw new ApiError(r.status, message);
  }
  return r;
}

async function getJson(path, signal) { return (await request(path, signal)).json(); }

async function getEvents(path, signal) {
  const text = await (await request(path, signal)).text();
  return text.split("\n").filter((line) => line).map((line) => JSON.parse(line));
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

// Server-sent events over fetch (EventSource cannot send the token header).
async function follow(path, signal, onEvent, onOpen) {
  const r = await request(path, signal);
  onOpen();
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let data = "", kind = "message";
      for (const line of block.split("\n")) {
        if (line.startsWith("data:")) data += line.slice(5).trimStart();
        else if (line.startsWith("event:")) kind = line.slice(6).trim();
      }
      if (!data) continue;
      if (kind === "error") throw new ApiError(500, JSON.parse(data).error);
      onEvent(JSON.parse(data));
    }
  }
}

// -- drawing -------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== undefined && v !== null) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

function link(href, text) { return el("a", { href }, text); }

function showError(err) {
  if (err.name === "AbortError") return;
  notice.textContent = err.message || String(err);
  notice.hidden = false;
}

function clearError() { notice.hidden = true; notice.textContent = ""; }

function fmt(n) { return typeof n === "number" ? n.toLocaleString("en-US") : "–"; }

function streamHref(id, params) { return "#/stream/" + encodeURIComponent(id) + query(params || {}); }

function b64bytes(b64) {
  const raw = atob(b64 || "");
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function hexDump(bytes) {
  const lines = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const row = bytes.subarray(i, i + 16);
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(i.toString(16).padStart(8, "0") + "  " + hex.padEnd(48) + "  " + ascii);
  }
  return lines.join("\n");
}

// JSON pretty-printed; anything else as a hex dump.
function payload(b64) {
  const bytes = b64bytes(b64);
  if (!bytes.length) return { kind: "empty", text: "(empty)" };
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return { kind: "json", text: JSON.stringify(JSON.parse(text), null, 2) };
  } catch (e) {
    return { kind: "hex", text: hexDump(bytes) };
  }
}

function eventCard(e, fresh) {
  const data = payload(e.data), meta = payload(e.metadata);
  return el("div", { class: "event" + (fresh ? " fresh" : ""), "data-position": e.position },
    el("div", { class: "head" },
      el("span", {}, "#", link("#/event/" + e.position, String(e.position))),
      el("span", {}, el("a", { href: streamHref(e.streamId, { before: e.version + 1 }) }, e.streamId),
        " v", el("b", {}, String(e.version))),
      e.eventType ? el("span", {}, "type ", el("b", {}, e.eventType)) : null,
      e.eventId ? el("span", {}, "id ", e.eventId) : null,
      el("span", {}, e.timestamp || "")),
    el("div", { class: "label" }, "data (" + data.kind + ")"),
    el("pre", { class: "data" }, data.text),
    meta.kind === "empty" ? null : el("div", { class: "label" }, "metadata (" + meta.kind + ")"),
    meta.kind === "empty" ? null : el("pre", { class: "metadata" }, meta.text));
}

function pager(older, newer) {
  return el("div", { class: "toolbar pager" },
    el("button", { type: "button", class: "newer", disabled: !newer, onclick: () => { location.hash = newer; } }, "← Newer"),
    el("button", { type: "button", class: "older", disabled: !older, onclick: () => { location.hash = older; } }, "Older →"));
}

// -- pages ---------------------------------------------------------------------------

async function streamsPage(params, signal) {
  const prefix = params.get("prefix") || "";
  const after = params.get("after") || "";
  const input = el("input", { id: "prefix", type: "search", value: prefix, placeholder: "stream ID prefix" });
  const form = el("form", { class: "toolbar", onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = "#/streams" + query({ prefix: input.value });
  } }, input, el("button", { type: "submit" }, "Search"), el("span", { class: "grow" }),
  el("span", { id: "totals", class: "muted" }));
  main.replaceChildren(el("h1", {}, "Streams"), form,
    el("p", { class: "muted" }, prefix ? "Streams whose ID starts with \u201c" + prefix + "\u201d, by ID."
      : "Every stream, newest first (by its last event)."));
  const [page, health] = await Promise.all([
    getJson("/streams" + query({ prefix, after, limit: PAGE }), signal),
    getJson("/health", signal).catch(() => null)]);
  if (health && health.writer) {
    document.getElementById("totals").textContent =
      fmt(health.writer.streams) + " streams, " + fmt(health.writer.events) + " events";
  }
  const rows = page.streams.map((s) => el("tr", {},
    el("td", {}, el("a", { href: streamHref(s.streamId) }, s.streamId)),
    el("td", { class: "num" }, fmt(s.eventCount)),
    el("td", { class: "num" }, fmt(s.version)),
    el("td", { class: "num" }, link("#/event/" + s.lastPosition, fmt(s.lastPosition)))));
  const table = el("table", { id: "streams" },
    el("thead", {}, el("tr", {}, el("th", {}, "Stream"), el("th", { class: "num" }, "Events"),
      el("th", { class: "num" }, "Version"), el("th", { class: "num" }, "Last position"))),
    el("tbody", {}, ...rows));
  main.append(page.streams.length ? table : el("p", { class: "muted" }, "No streams."),
    el("div", { class: "toolbar" },
      after ? el("button", { type: "button", onclick: () => history.back() }, "← Previous") : null,
      el("button", { type: "button", id: "next-page", disabled: !page.next,
        onclick: () => { location.hash = "#/streams" + query({ prefix, after: page.next }); } }, "Next page →"),
      el("span", { class: "muted" }, "as of position " + fmt(page.committedPosition))));
}

async function streamPage(id, params, signal) {
  const path = "/streams/" + encodeURIComponent(id);
  main.replaceChildren(el("h1", {}, id));
  let events, more = false;
  const before = params.get("before"), after = params.get("after");
  try {
    if (after !== null) {
      // One more than a page tells whether there are newer ones still.
      events = await getEvents(path + query({ from: Number(after) + 1, limit: PAGE + 1 }), signal);
      more = events.length > PAGE;
      events = events.slice(0, PAGE).reverse();
    } else {
      const from = before !== null ? Number(before) - 1 : null;
      events = from !== null && from < 0 ? [] :
        await getEvents(path + query({ from, limit: PAGE, direction: "backward" }), signal);
    }
  } catch (err) {
    if (err.status === 404) { main.append(el("p", { class: "muted" }, "This stream has no events (it does not exist or was deleted).")); return; }
    throw err;
  }
  const top = events.length ? events[0].version : null;
  const bottom = events.length ? events[events.length - 1].version : null;
  const atNewest = (after === null && before === null) || (after !== null && !more);
  const older = bottom !== null && bottom > 0 ? streamHref(id, { before: bottom }) : null;
  const newer = !atNewest && top !== null ? streamHref(id, { after: top }) : null;
  main.append(
    el("p", { class: "muted" }, events.length ? "Versions " + bottom + "–" + top + ", newest first." : "No events here."),
    pager(older, newer), el("div", { id: "events" }, ...events.map((e) => eventCard(e))), pager(older, newer));
}

async function eventPage(position, signal) {
  main.replaceChildren(el("h1", {}, "Event at position " + position));
  const [e] = await getEvents("/all" + query({ from: position, limit: 1 }), signal);
  if (!e || String(e.position) !== position) {
    main.append(el("p", { class: "muted" }, "No event at this position (it may belong to a deleted stream)."));
    return;
  }
  main.append(eventCard(e), el("table", { id: "fields" }, el("tbody", {},
    ...[["Position", e.position], ["Stream", e.streamId], ["Version", e.version],
      ["Event ID", e.eventId || "–"], ["Event type", e.eventType || "–"], ["Committed", e.timestamp]]
      .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v)))))),
  el("div", { class: "toolbar" },
    el("a", { href: streamHref(e.streamId, { before: e.version + 1 }) }, "In its stream"),
    el("a", { href: "#/all" + query({ before: e.position + 1 }) }, "In $all")));
}

async function allPage(params, signal) {
  const before = params.get("before"), after = params.get("after");
  if (before === null && after === null) return liveTail(signal);
  let events, more = false;
  if (after !== null) {
    events = await getEvents("/all" + query({ from: Number(after) + 1, limit: PAGE + 1 }), signal);
    more = events.length > PAGE;
    events = events.slice(0, PAGE).reverse();
  } else {
    const from = Number(before) - 1;
    events = from < 0 ? [] : await getEvents("/all" + query({ from, limit: PAGE, direction: "backward" }), signal);
  }
  const top = events.length ? events[0].position : null;
  const bottom = events.length ? events[events.length - 1].position : null;
  const older = bottom !== null && bottom > 0 ? "#/all" + query({ before: bottom }) : null;
  // Newer than the newest page is the live tail.
  const newer = top !== null && (after === null || more) ? "#/all" + query({ after: top }) : "#/all";
  main.replaceChildren(el("h1", {}, "$all"),
    el("div", { class: "toolbar" }, el("a", { href: "#/all" }, "Back to the live tail")),
    pager(older, newer), el("div", { id: "events" }, ...events.map((e) => eventCard(e))), pager(older, newer));
}

async function liveTail(signal) {
  const state = el("span", { id: "tail-state", class: "live" }, "live");
  const list = el("div", { id: "events" });
  let paused = false;
  const toggle = el("button", { type: "button", id: "pause", onclick: () => {
    paused = !paused;
    toggle.textContent = paused ? "Resume" : "Pause";
    state.textContent = paused ? "paused (new events are kept)" : "live";
    state.className = paused ? "paused" : "live";
    if (!paused) flush();
  } }, "Pause");
  const older = el("button", { type: "button", class: "older", disabled: true }, "Older →");
  main.replaceChildren(el("h1", {}, "$all"),
    el("div", { class: "toolbar" }, "Live tail: ", state, toggle, el("span", { class: "grow" }), older),
    list);
  const recent = await getEvents("/all" + query({ limit: PAGE, direction: "backward" }), signal);
  list.append(...recent.map((e) => eventCard(e)));
  let oldest = recent.length ? recent[recent.length - 1].position : null;
  if (oldest) { older.disabled = false; older.onclick = () => { location.hash = "#/all" + query({ before: oldest }); }; }
  const held = [];
  function flush() {
    for (const e of held.splice(0)) list.prepend(eventCard(e, true));
    while (list.childElementCount > TAIL_MAX) list.lastElementChild.remove();
  }
  const from = recent.length ? recent[0].position + 1 : 0;
  await follow("/subscribe/all" + query({ from }), signal, (e) => {
    held.push(e);
    if (!paused) flush();
  }, () => ready("all"));
}

async function serverPage(signal) {
  const cards = el("div", { class: "cards", id: "server-cards" });
  const charts = el("div", { id: "charts" });
  const procs = el("div", { id: "processes" });
  main.replaceChildren(el("h1", {}, "Server"), cards, charts, el("h2", {}, "Processes"), procs);
  const tick = async () => {
    const h = await getJson("/health", signal);
    const w = h.writer || {};
    samples.push({ t: Date.now() / 1000, events: w.events, fsyncs: w.fsyncs, committed: h.committedPosition });
    if (samples.length > HISTORY) samples.shift();
    const card = (label, value) => el("div", { class: "card" }, el("div", { class: "muted" }, label), el("div", { class: "v" }, value));
    const subs = h.subscribers || {};
    cards.replaceChildren(
      card("Status", h.status), card("Committed position", fmt(h.committedPosition)),
      card("Events", fmt(w.events)), card("Streams", fmt(w.streams)),
      card("Subscribers (this worker)", fmt(subs.total) + " (" + fmt(subs.live) + " live)"),
      card("Durability", w.syncMode || "–"), card("Version", h.version || "–"),
      card("Writer uptime", typeof w.uptime === "number" ? formatDuration(w.uptime) : "–"));
    charts.replaceChildren(chart("Events/s", rates("events")), chart("fsyncs/s", rates("fsyncs")));
    procs.replaceChildren(el("table", {}, el("tbody", {},
      el("tr", {}, el("th", {}, "writer"), el("td", {}, "pid " + (w.pid ?? "–")),
        el("td", {}, w.reachable ? "reachable" : "unreachable: " + (w.error || ""))),
      el("tr", {}, el("th", {}, "gateway " + h.worker), el("td", {}, "pid " + h.pid),
        el("td", {}, "answered this page (each request may reach another worker)")))));
  };
  await tick();
  ready("server");
  while (!signal.aborted) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    if (signal.aborted) return;
    await tick();
  }
}

function formatDuration(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? h + " h " + m + " min" : m ? m + " min " + Math.floor(s % 60) + " s" : s.toFixed(1) + " s";
}

function rates(field) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    if (typeof a[field] !== "number" || typeof b[field] !== "number" || b.t <= a.t) continue;
    out.push({ t: b.t, v: Math.max(0, (b[field] - a[field]) / (b.t - a.t)) });
  }
  return out;
}

function chart(title, points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 600 120");
  svg.setAttribute("preserveAspectRatio", "none");
  const axis = document.createElementNS(ns, "line");
  for (const [k, v] of Object.entries({ x1: 0, y1: 110, x2: 600, y2: 110, class: "axis" })) axis.setAttribute(k, v);
  svg.append(axis);
  const peak = Math.max(0, ...points.map((p) => p.v));
  const max = Math.max(1, peak);
  if (points.length > 1) {
    const t0 = points[0].t, span = Math.max(1, points[points.length - 1].t - t0);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map((p) =>
      ((p.t - t0) / span * 600).toFixed(1) + "," + (110 - p.v / max * 100).toFixed(1)).join(" "));
    svg.append(line);
  }
  const last = points.length ? points[points.length - 1].v : null;
  const span = points.length > 1 ? points[points.length - 1].t - points[0].t : 0;
  const over = span < 90 ? Math.round(span) + " s" : (span / 60).toFixed(1) + " min";
  return el("div", { class: "chart" },
    el("div", {}, el("b", {}, title), " ", el("span", { class: "muted" },
      (last === null ? "collecting samples…" : "now " + last.toFixed(1) + ", peak " + peak.toFixed(1)) +
      " over the last " + over + " (sampled every " + POLL_MS / 1000 + " s while this page is open)")),
    svg);
}

// -- routing ---------------------------------------------------------------------------

async function route() {
  if (pageAbort) pageAbort.abort();
  pageAbort = new AbortController();
  const signal = pageAbort.signal;
  clearError();
  delete document.body.dataset.ready;
  const hash = location.hash.slice(1) || "/streams";
  const [path, qs] = hash.split("?", 2);
  const params = new URLSearchParams(qs || "");
  const parts = path.split("/").filter((p) => p);
  const name = parts[0] || "streams";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === name || (name === "stream" && a.dataset.page === "streams"));
  }
  document.title = "Hydra console — " + name;
  try {
    if (name === "streams") await streamsPage(params, signal);
    else if (name === "stream" && parts.length > 1) await streamPage(decodeURIComponent(parts.slice(1).join("/")), params, signal);
    else if (name === "event" && /^\d+$/.test(parts[1] || "")) await eventPage(parts[1], signal);
    else if (name === "all") await allPage(params, signal);
    else if (name === "server") await serverPage(signal);
    else main.replaceChildren(el("h1", {}, "Not found"), el("p", {}, link("#/streams", "Streams")));
  } catch (err) {
    if (!signal.aborted) showError(err);
  }
  if (!signal.aborted) ready(name);
}

// Marks the page as drawn (pages that go on, the live tail and the server page, say
// so themselves once they are); the browser test waits for it.
function ready(name) { document.body.dataset.ready = name; }

function setupToken() {
  const input = document.getElementById("token");
  input.value = sessionStorage.getItem(TOKEN_KEY) || "";
  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    else sessionStorage.removeItem(TOKEN_KEY);
    route();
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    input.value = "";
    route();
  });
}

setupToken();
window.addEventListener("hashchange", route);
route();
