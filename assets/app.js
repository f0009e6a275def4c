// OpenTranscribe web UI: first-run setup, sign-in, upload, file list.
// No inline script (CSP); every user-provided string is set with textContent, never innerHTML.
"use strict";

const STRINGS = {
  title: "OpenTranscribe",
  setupHeading: "Create the administrator",
  setupHint: "This is the first account; registration closes after it.",
  signInHeading: "Sign in",
  username: "Username",
  password: "Password",
  create: "Create account",
  signIn: "Sign in",
  signOut: "Sign out",
  upload: "Upload",
  uploadHeading: "Upload audio or video",
  files: "Your files",
  noFiles: "No files yet.",
  name: "Name",
  status: "Status",
  size: "Size",
  remove: "Delete",
  language: "Language (blank: detect)",
  open: "Open",
  back: "All files",
  export: "Export",
  cancel: "Cancel",
  retry: "Retry",
  notReady: "The transcript is not ready yet.",
  progress: "Progress",
  actions: "Actions",
  reload: "Reload",
};

const state = { csrf: null, user: null };
const app = document.getElementById("app");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(method, path, body) {
  const headers = {};
  if (state.csrf && method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  let payload = body;
  if (body && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: an error page of a proxy */ }
  if (!response.ok) {
    const error = new Error((data && data.message) || `HTTP ${response.status} ${response.statusText}`.trim());
    error.status = response.status;
    throw error;
  }
  return data;
}

/// The session ended (expired, signed out elsewhere): back to the sign-in form.
function signedOut() {
  state.csrf = null;
  state.user = null;
  if (socket) { const closing = socket; socket = null; closing.onclose = null; closing.close(); }
  showSignIn();
}

/// Runs a button's action; a failure shows in the page instead of going uncaught.
async function attempt(action, errorNode) {
  try {
    await action();
  } catch (e) {
    if (e.status === 401) { signedOut(); return; }
    if (errorNode) errorNode.textContent = e.message;
    else render(el("p", { class: "error", role: "alert" }, e.message),
      el("button", { class: "link", type: "button", onclick: () => location.reload() }, STRINGS.reload));
  }
}

/// Seeks the player and plays; a refused play() (autoplay policy, no audio device) is not an error.
function seek(player, seconds) {
  player.currentTime = seconds;
  const playing = player.play();
  if (playing) playing.catch(() => {});
}

function render(...nodes) {
  app.replaceChildren(el("h1", {}, STRINGS.title), ...nodes);
}

function credentialsForm(heading, hint, buttonText, onSubmit, passwordKind = "current-password") {
  const error = el("p", { class: "error", role: "alert" });
  const user = el("input", { name: "username", autocomplete: "username", required: "" });
  const pass = el("input", { name: "password", type: "password", autocomplete: passwordKind, required: "", minlength: "8" });
  const submit = el("button", { type: "submit" }, buttonText);
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      submit.disabled = true;
      try { await onSubmit(user.value, pass.value); } catch (e) { error.textContent = e.message; }
      submit.disabled = false;
    },
  },
    el("label", {}, STRINGS.username, user),
    el("label", {}, STRINGS.password, pass),
    submit, error);
  render(el("h2", {}, heading), hint ? el("p", { class: "muted" }, hint) : "", form);
  user.focus();
}

async function signIn(username, password) {
  const result = await api("POST", "/api/auth/login", { username, password });
  state.csrf = result.csrf_token;
  state.user = result.user;
  await showFiles();
}

function showSignIn() {
  credentialsForm(STRINGS.signInHeading, "", STRINGS.signIn, signIn);
}

function showSetup() {
  credentialsForm(STRINGS.setupHeading, STRINGS.setupHint, STRINGS.create, async (username, password) => {
    await api("POST", "/api/auth/register", { username, password });
    await signIn(username, password);
  }, "new-password");
}

function formatSize(bytes) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function uploadForm(onDone) {
  const error = el("p", { class: "error", role: "alert" });
  const file = el("input", { type: "file", name: "file", accept: "audio/*,video/*", multiple: "", required: "" });
  const language = el("input", { name: "language", size: "4", maxlength: "8", autocomplete: "off", spellcheck: "false" });
  const progress = el("div");
  const submit = el("button", { type: "submit" }, STRINGS.upload);
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      submit.disabled = true;
      progress.replaceChildren();
      for (const chosen of [...file.files]) {
        const bar = el("progress", { max: "100", value: "0", "aria-label": chosen.name });
        progress.append(el("div", {}, chosen.name, " ", bar));
        const data = new FormData();
        if (language.value) data.append("language", language.value);
        data.append("file", chosen);
        if (!form.isConnected) return; // signed out meanwhile
        await new Promise((resolve) => {
          const request = new XMLHttpRequest();
          request.open("POST", "/api/files");
          if (state.csrf) request.setRequestHeader("X-CSRF-Token", state.csrf);
          request.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
          request.onload = () => {
            if (request.status === 401) { form.isConnected && signedOut(); }
            else if (request.status !== 201) {
              let reason = `HTTP ${request.status}`;
              try { reason = JSON.parse(request.responseText).message || reason; } catch { /* not JSON */ }
              error.append(el("div", {}, `${chosen.name}: ${reason}`));
            }
            resolve();
          };
          request.onerror = () => { error.append(el("div", {}, `${chosen.name}: connection lost`)); resolve(); };
          request.send(data);
        });
      }
      if (!form.isConnected) return;
      submit.disabled = false;
      file.value = "";
      if (!error.textContent) progress.replaceChildren();
      onDone();
    },
  }, el("label", {}, STRINGS.uploadHeading, file), el("label", {}, STRINGS.language, language),
    submit, progress, error);
  return el("section", { class: "upload" }, form);
}

const progressBars = new Map();
let socket = null;

/// Live status over the WebSocket: progress bars move; a status change refreshes the list
/// (not the whole page: a file being chosen or uploaded in the form above is kept).
function connectEvents() {
  if (socket || !state.user) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const current = new WebSocket(`${scheme}//${location.host}/api/ws`);
  socket = current;
  current.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    if (!document.querySelector("[data-view=files]")) return;
    const row = progressBars.get(event.file_id);
    if (event.type === "file.status" && row && event.status === row.known) {
      row.bar.value = Math.round((event.progress || 0) * 100);
      row.status.textContent = event.stage && event.stage !== event.status
        ? `${event.status} (${event.stage})` : event.status;
      return;
    }
    if (["file.status", "file.completed", "file.error", "file.created", "file.deleted", "resync"].includes(event.type)) {
      refreshFiles();
    }
  };
  current.onclose = () => {
    if (socket !== current) return;
    socket = null;
    setTimeout(connectEvents, 3000);
  };
}

function formatTime(seconds) {
  const s = Math.floor(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function backButton() {
  return el("button", { class: "link", type: "button", onclick: () => attempt(showFiles) }, `← ${STRINGS.back}`);
}

async function showTranscript(file) {
  let transcript;
  try {
    transcript = await api("GET", `/api/files/${encodeURIComponent(file.id)}/transcript`);
  } catch (e) {
    if (e.status === 401) { signedOut(); return; }
    render(backButton(), el("p", { class: "error", role: "alert" }, e.message));
    return;
  }
  const speakerNames = new Map((transcript.speakers || []).map((s) => [s.id, s.name || s.label || s.id]));
  const isVideo = (file.media_type || "").startsWith("video/");
  const player = el(isVideo ? "video" : "audio", { controls: "", preload: "metadata", src: `/api/files/${encodeURIComponent(file.id)}/media` });
  const words = [];
  const body = el("div", { class: "transcript", "data-view": "transcript" });
  for (const segment of transcript.segments) {
    const line = el("p", {}, el("button", { class: "link time", onclick: () => seek(player, segment.start) }, formatTime(segment.start)), " ");
    if (segment.speaker) line.append(el("strong", {}, `${speakerNames.get(segment.speaker) || segment.speaker}: `));
    if (segment.words && segment.words.length) {
      for (const word of segment.words) {
        const span = el("span", { class: "word", tabindex: "0", role: "button", "data-start": String(word.start) }, word.text);
        span.addEventListener("click", () => seek(player, word.start));
        span.addEventListener("keydown", (e) => {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); seek(player, word.start); }
        });
        words.push({ span, start: word.start, end: word.end });
        line.append(span, " ");
      }
    } else {
      line.append(segment.text);
    }
    body.append(line);
  }
  let current = null;
  player.addEventListener("timeupdate", () => {
    const t = player.currentTime;
    const found = words.find((w) => t >= w.start && t < w.end);
    if (found !== current) {
      if (current) current.span.classList.remove("current");
      if (found) found.span.classList.add("current");
      current = found;
    }
  });
  const exports = el("p", {}, `${STRINGS.export}: `);
  for (const format of ["srt", "vtt", "txt", "json", "csv"]) {
    exports.append(el("a", { href: `/api/files/${encodeURIComponent(file.id)}/export?format=${format}` }, format.toUpperCase()), " ");
  }
  render(backButton(),
    el("h2", {}, file.filename), player, exports, body);
}

let filesArea = null;
let refreshing = null;
let refreshAgain = false;

/// Reloads the table of files; calls made while one is loading coalesce into one more load.
async function refreshFiles() {
  if (refreshing) { refreshAgain = true; return refreshing; }
  refreshing = (async () => {
    do {
      refreshAgain = false;
      const area = filesArea;
      if (!area || !area.isConnected) return;
      try {
        const list = await api("GET", "/api/files?per_page=200");
        if (area === filesArea && area.isConnected) area.replaceChildren(filesTable(list.items));
      } catch (e) {
        if (e.status === 401) { signedOut(); return; }
        area.replaceChildren(el("p", { class: "error", role: "alert" }, e.message));
      }
    } while (refreshAgain);
  })();
  try { await refreshing; } finally { refreshing = null; }
}

function filesTable(items) {
  progressBars.clear();
  const error = el("p", { class: "error", role: "alert" });
  const act = (label, action) => el("button", { class: "link", type: "button", onclick: () => attempt(action, error) }, label);
  const rows = items.map((f) => {
    const id = encodeURIComponent(f.id);
    const bar = el("progress", { max: "100", value: String(Math.round((f.progress || 0) * 100)), "aria-label": `${STRINGS.progress}: ${f.filename}` });
    const status = el("span", { "data-status": f.id }, f.status);
    progressBars.set(f.id, { bar, status, known: f.status });
    const actions = el("td", { class: "actions" });
    if (f.status === "completed") {
      actions.append(act(STRINGS.open, () => showTranscript(f)), " ");
    }
    if (f.status === "queued" || f.status === "processing") {
      actions.append(act(STRINGS.cancel, async () => { await api("POST", `/api/files/${id}/cancel`); await refreshFiles(); }), " ");
    }
    if (f.status === "error" || f.status === "cancelled") {
      actions.append(act(STRINGS.retry, async () => { await api("POST", `/api/files/${id}/retry`); await refreshFiles(); }), " ");
    }
    actions.append(act(STRINGS.remove, async () => { await api("DELETE", `/api/files/${id}`); await refreshFiles(); }));
    const name = el("td", { class: "name" }, f.filename);
    if (f.error) name.append(el("div", { class: "error" }, f.error));
    return el("tr", {}, name, el("td", { class: "status" }, status, " ", bar), el("td", { class: "size" }, formatSize(f.size)), actions);
  });
  if (!rows.length) return el("div", {}, el("p", { class: "muted" }, STRINGS.noFiles), error);
  return el("div", {}, error, el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, STRINGS.name), el("th", {}, STRINGS.status),
      el("th", { class: "size" }, STRINGS.size), el("th", {}, el("span", { class: "visually-hidden" }, STRINGS.actions)))),
    el("tbody", {}, ...rows)));
}

async function showFiles() {
  const area = el("div", { class: "files" });
  const signOut = el("button", {
    class: "link",
    type: "button",
    onclick: async () => {
      try { await api("POST", "/api/auth/logout"); } catch { /* gone already: signed out either way */ }
      signedOut();
    },
  }, STRINGS.signOut);
  const list = await api("GET", "/api/files?per_page=200");
  area.replaceChildren(filesTable(list.items));
  filesArea = area;
  render(el("header", { "data-view": "files" }, el("span", {}, state.user.username), signOut),
    uploadForm(refreshFiles), el("h2", {}, STRINGS.files), area);
  connectEvents();
}

async function start() {
  try {
    const me = await api("GET", "/api/auth/me");
    state.user = me;
    state.csrf = me.csrf_token || null;
    await showFiles();
  } catch {
    // Not signed in: offer setup when there is no user yet, sign-in otherwise.
    try {
      const ready = await fetch("/api/auth/setup-needed").then((r) => r.json());
      if (ready.setup_needed) { showSetup(); return; }
    } catch { /* fall through */ }
    showSignIn();
  }
}

start();
