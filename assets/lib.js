// Shared helpers of the web UI: DOM building, the API client, formatting, the live region.
// No inline script or style (CSP); user-provided text only ever goes into text nodes.

import { LANGUAGE, STRINGS } from "./strings.js";

export const state = { csrf: null, user: null };

/// Builds an element. Attributes named on* become listeners; false/null/undefined attributes
/// and children are left out; strings become text nodes (never parsed as HTML).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/// An error the API answered with `{code, message}`, or a transport failure (status 0).
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  /// The route itself does not exist on this server (a feature that has not landed yet),
  /// as opposed to a missing file or collection.
  get routeMissing() {
    return this.status === 404 && this.code === "not-found" && /^route not found/.test(this.message);
  }
}

/// Routes known to be missing on this server, so a page asks only once per load.
const missingRoutes = new Set();

export function routeKnownMissing(key) {
  return missingRoutes.has(key);
}

/// Calls the API. `feature` names an optional route group: once it answers "route not found"
/// it is remembered as missing and later calls fail at once without a request.
export async function api(method, path, body, { feature } = {}) {
  if (feature && missingRoutes.has(feature)) throw new ApiError(404, "not-found", "route not found");
  const headers = {};
  if (state.csrf && method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  } catch {
    throw new ApiError(0, "network", STRINGS.connectionLost);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: a proxy's error page */ }
  if (!response.ok) {
    const error = new ApiError(response.status, (data && data.code) || "http",
      (data && data.message) || STRINGS.httpError(response.status));
    error.data = data;
    if (feature && error.routeMissing) missingRoutes.add(feature);
    throw error;
  }
  return data;
}

/// A 401 that means the session is gone (not a wrong password typed into a form).
export function sessionEnded(e) {
  return e && e.status === 401 && e.code !== "invalid-credentials";
}

/// The hook the app installs to go back to sign-in when a call answers 401.
export const hooks = { signedOut: () => {} };

/// Runs an action; a failure shows in `errorNode` (a role=alert element) instead of going
/// uncaught, and a 401 goes back to the sign-in form. Returns true when the action succeeded.
export async function attempt(action, errorNode, button) {
  if (errorNode) errorNode.textContent = "";
  if (button) button.disabled = true;
  try {
    await action();
    return true;
  } catch (e) {
    if (sessionEnded(e)) { hooks.signedOut(); return false; }
    const message = e.routeMissing ? STRINGS.notAvailable : e.message;
    if (errorNode) errorNode.textContent = message;
    else announce(message);
    return false;
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
}

export function errorBox() {
  return el("p", { class: "error", role: "alert" });
}

/// Polite announcement for screen readers (saved, uploaded, ...).
export function announce(text) {
  const region = document.getElementById("announce");
  if (!region) return;
  region.textContent = "";
  // A new text node after a tick so the same message is announced twice in a row.
  setTimeout(() => { region.textContent = text; }, 30);
}

export function formatTime(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

export function formatSize(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes || 0, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function formatDate(secs) {
  if (!secs) return STRINGS.never;
  return new Date(secs * 1000).toLocaleString(LANGUAGE);
}

export function formatDuration(secs) {
  return formatTime(secs);
}

/// Seeks the player and plays; a refused play() (autoplay policy, no audio device) is not an error.
export function seek(player, seconds) {
  player.currentTime = seconds;
  const playing = player.play();
  if (playing) playing.catch(() => {});
}

const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'" };

/// Decodes the HTML entities of escaped text into plain text (no HTML parser involved).
export function decodeEntities(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name) => {
    if (name[0] === "#") {
      const code = name[1] === "x" || name[1] === "X" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return Number.isFinite(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

/// A search highlight (HTML-escaped text with <mark>…</mark> around matches) as DOM nodes:
/// split on the two tags, text parts become text nodes, marked parts become <mark> elements.
/// Any other markup stays visible as text; nothing is ever parsed as HTML.
export function highlightNodes(highlight) {
  const nodes = [];
  let marked = false;
  for (const part of String(highlight || "").split(/(<mark>|<\/mark>)/)) {
    if (part === "<mark>") { marked = true; continue; }
    if (part === "</mark>") { marked = false; continue; }
    if (!part) continue;
    const text = decodeEntities(part);
    nodes.push(marked ? el("mark", {}, text) : document.createTextNode(text));
  }
  return nodes;
}

let fieldCount = 0;

/// A labelled form field: <label for> beside its control (not wrapped around it, so a select's
/// options never become part of its name).
export function field(labelText, control, hint) {
  if (!control.id) control.id = `f${++fieldCount}`;
  return el("div", { class: "field" }, el("label", { for: control.id }, labelText), control,
    hint ? el("span", { class: "muted small" }, hint) : null);
}

/// A <select> of [value, label] pairs.
export function select(attrs, options, selected) {
  const node = el("select", attrs);
  for (const [value, label] of options) {
    node.append(el("option", { value, selected: value === selected }, label));
  }
  return node;
}

/// Speaker colour class: palette of 8, by the server's color_index or the speaker's position.
export function speakerClass(speaker, index) {
  const n = Number.isInteger(speaker?.color_index) ? speaker.color_index : index;
  return `spk-${((n % 8) + 8) % 8}`;
}
