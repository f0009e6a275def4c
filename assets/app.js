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
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((data && data.message) || response.statusText);
  return data;
}

function render(...nodes) {
  app.replaceChildren(el("h1", {}, STRINGS.title), ...nodes);
}

function credentialsForm(heading, hint, buttonText, onSubmit) {
  const error = el("p", { class: "error", role: "alert" });
  const user = el("input", { name: "username", autocomplete: "username", required: "" });
  const pass = el("input", { name: "password", type: "password", autocomplete: "current-password", required: "", minlength: "8" });
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      try { await onSubmit(user.value, pass.value); } catch (e) { error.textContent = e.message; }
    },
  },
    el("label", {}, STRINGS.username, user),
    el("label", {}, STRINGS.password, pass),
    el("button", { type: "submit" }, buttonText), error);
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
  });
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
  const language = el("input", { name: "language", size: "4" });
  const progress = el("div");
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      for (const chosen of file.files) {
        const bar = el("progress", { max: "100", value: "0", "aria-label": chosen.name });
        progress.append(el("div", {}, chosen.name, " ", bar));
        const data = new FormData();
        if (language.value) data.append("language", language.value);
        data.append("file", chosen);
        await new Promise((resolve) => {
          const request = new XMLHttpRequest();
          request.open("POST", "/api/files");
          if (state.csrf) request.setRequestHeader("X-CSRF-Token", state.csrf);
          request.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
          request.onload = () => {
            if (request.status !== 201) {
              try { error.textContent = `${chosen.name}: ${JSON.parse(request.responseText).message}`; }
              catch { error.textContent = `${chosen.name}: HTTP ${request.status}`; }
            }
            resolve();
          };
          request.onerror = () => { error.textContent = `${chosen.name}: connection lost`; resolve(); };
          request.send(data);
        });
      }
      onDone();
    },
  }, el("label", {}, STRINGS.uploadHeading, file), el("label", {}, STRINGS.language, language),
    el("button", { type: "submit" }, STRINGS.upload), progress, error);
  return form;
}

const progressBars = new Map();
let socket = null;

/// Live status over the WebSocket: progress bars move; a finished job refreshes the list.
function connectEvents() {
  if (socket) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/api/ws`);
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    const row = progressBars.get(event.file_id);
    if (event.type === "file.status" && row) {
      row.bar.value = Math.round((event.progress || 0) * 100);
      row.status.textContent = `${event.status} (${event.stage})`;
    }
    if (["file.completed", "file.error", "file.created", "file.deleted", "resync"].includes(event.type)
        && document.querySelector("[data-view=files]")) {
      showFiles();
    }
  };
  socket.onclose = () => { socket = null; setTimeout(() => { if (state.user) connectEvents(); }, 3000); };
}

function formatTime(seconds) {
  const s = Math.floor(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

async function showTranscript(file) {
  let transcript;
  try {
    transcript = await api("GET", `/api/files/${encodeURIComponent(file.id)}/transcript`);
  } catch (e) {
    render(el("p", { class: "error", role: "alert" }, e.message));
    return;
  }
  const isVideo = (file.media_type || "").startsWith("video/");
  const player = el(isVideo ? "video" : "audio", { controls: "", preload: "metadata", src: `/api/files/${encodeURIComponent(file.id)}/media` });
  const words = [];
  const body = el("div", { class: "transcript", "data-view": "transcript" });
  for (const segment of transcript.segments) {
    const line = el("p", {}, el("button", { class: "link time", onclick: () => { player.currentTime = segment.start; player.play(); } }, formatTime(segment.start)), " ");
    if (segment.speaker) line.append(el("strong", {}, `${segment.speaker}: `));
    if (segment.words && segment.words.length) {
      for (const word of segment.words) {
        const span = el("span", { class: "word", tabindex: "0", role: "button", "data-start": String(word.start) }, word.text);
        span.addEventListener("click", () => { player.currentTime = word.start; player.play(); });
        span.addEventListener("keydown", (e) => { if (e.key === "Enter") { player.currentTime = word.start; player.play(); } });
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
  render(el("button", { class: "link", onclick: showFiles }, `← ${STRINGS.back}`),
    el("h2", {}, file.filename), player, exports, body);
}

async function showFiles() {
  const list = await api("GET", "/api/files?per_page=200");
  progressBars.clear();
  const rows = list.items.map((f) => {
    const bar = el("progress", { max: "100", value: String(Math.round((f.progress || 0) * 100)), "aria-label": STRINGS.progress });
    const status = el("span", { "data-status": f.id }, f.status);
    progressBars.set(f.id, { bar, status });
    const actions = el("td", {});
    if (f.status === "completed") {
      actions.append(el("button", { class: "link", onclick: () => showTranscript(f) }, STRINGS.open), " ");
    }
    if (f.status === "queued" || f.status === "processing") {
      actions.append(el("button", { class: "link", onclick: async () => { await api("POST", `/api/files/${encodeURIComponent(f.id)}/cancel`); showFiles(); } }, STRINGS.cancel), " ");
    }
    if (f.status === "error" || f.status === "cancelled") {
      actions.append(el("button", { class: "link", onclick: async () => { await api("POST", `/api/files/${encodeURIComponent(f.id)}/retry`); showFiles(); } }, STRINGS.retry), " ");
    }
    actions.append(el("button", {
      class: "link",
      onclick: async () => { await api("DELETE", `/api/files/${encodeURIComponent(f.id)}`); showFiles(); },
    }, STRINGS.remove));
    const name = el("td", {}, f.filename);
    if (f.error) name.append(el("div", { class: "error" }, f.error));
    return el("tr", {}, name, el("td", {}, status, " ", bar), el("td", {}, formatSize(f.size)), actions);
  });
  const table = rows.length
    ? el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, STRINGS.name), el("th", {}, STRINGS.status),
        el("th", {}, STRINGS.size), el("th", {}, ""))), el("tbody", {}, ...rows))
    : el("p", { class: "muted" }, STRINGS.noFiles);
  const signOut = el("button", {
    class: "link",
    onclick: async () => { await api("POST", "/api/auth/logout"); state.csrf = null; showSignIn(); },
  }, STRINGS.signOut);
  render(el("header", { "data-view": "files" }, el("span", {}, state.user.username), signOut),
    uploadForm(showFiles), el("h2", {}, STRINGS.files), table);
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
