// The file list: upload (drag and drop, several files, per-file progress and cancel, options),
// filters (status, tag, whose, collection), tags, and live status over the WebSocket.

import { LANGUAGE, STRINGS } from "./strings.js";
import {
  api, attempt, announce, el, errorBox, field, formatDate, formatSize, formatTime, hooks, select, sessionEnded, state,
} from "./lib.js";
import { isCancelled, uploadFile } from "./upload.js";
import { recordSection } from "./record.js";

const STATUSES = ["queued", "processing", "completed", "error", "cancelled"];

/// Filters survive navigation within the page's life.
export const filters = { status: "", tag: "", scope: "own", collection: "" };
/// The list's order (the server sorts: created, name or size; `-` for descending) and the
/// filter box's text (matched here against names and tags of the listed files).
export const view = { sort: "-created", text: "" };
const SORTS = { name: "name", date: "created", size: "size" };

/// Uploads in flight survive navigation too: the list is re-attached when the page comes back.
const uploadList = el("ul", { class: "uploads", "aria-label": STRINGS.upload });
const uploadQueue = [];
let uploading = false;
let uploadsDone = () => {};

function statusText(file) {
  return STRINGS.statusNames[file.status] || file.status;
}

/// Uploads in chunks through /api/uploads (upload.js): a dropped connection resumes by itself.
async function uploadOne(item) {
  const controller = new AbortController();
  item.request = controller;
  item.state.textContent = "";
  const finish = (message, failed) => {
    item.state.textContent = message;
    item.row.classList.toggle("error", !!failed);
    item.cancel.remove();
    announce(message);
  };
  try {
    await uploadFile(item.file, item.options, {
      signal: controller.signal,
      onProgress: (fraction) => { item.bar.value = 100 * fraction; item.state.textContent = ""; },
      onRetry: (ms) => { item.state.textContent = STRINGS.uploadRetrying(Math.ceil(ms / 1000)); },
    });
    item.bar.value = 100;
    finish(STRINGS.uploadDone(item.file.name));
    setTimeout(() => item.row.remove(), 4000);
  } catch (e) {
    if (isCancelled(e)) { finish(STRINGS.uploadCancelled(item.file.name)); setTimeout(() => item.row.remove(), 4000); return; }
    if (e.status === 401) { hooks.signedOut(); return; }
    finish(STRINGS.uploadFailed(item.file.name, e.message || STRINGS.connectionLost), true);
  }
}

/// One upload at a time (a 10 GiB file should not compete with the next); the rest wait.
async function pumpUploads() {
  if (uploading) return;
  uploading = true;
  while (uploadQueue.length) {
    const item = uploadQueue.shift();
    if (item.cancelled) continue;
    await uploadOne(item);
    uploadsDone();
  }
  uploading = false;
}

function queueUploads(files, options) {
  for (const file of files) {
    const bar = el("progress", { max: "100", value: "0", "aria-label": STRINGS.uploading(file.name) });
    const stateNode = el("span", { class: "muted" }, STRINGS.uploadWaiting);
    const item = { file, options, bar, state: stateNode, cancelled: false, request: null };
    item.cancel = el("button", {
      type: "button",
      class: "link",
      "aria-label": STRINGS.uploadCancel(file.name),
      onclick: () => {
        item.cancelled = true;
        if (item.request) item.request.abort();
        else { item.row.remove(); announce(STRINGS.uploadCancelled(file.name)); }
      },
    }, STRINGS.cancel);
    item.row = el("li", {}, el("span", { class: "name" }, file.name), " ", bar, " ", stateNode, " ", item.cancel);
    uploadList.append(item.row);
    uploadQueue.push(item);
  }
  pumpUploads();
}

function uploadSection(onUploaded) {
  uploadsDone = onUploaded;
  const error = errorBox();
  const input = el("input", { type: "file", name: "file", accept: "audio/*,video/*", multiple: true, id: "upload-file" });
  const language = el("input", { name: "language", size: "6", maxlength: "8", autocomplete: "off", spellcheck: "false" });
  const numberInput = (name) => el("input", { name, type: "number", min: "1", max: "20", step: "1", inputmode: "numeric" });
  const num = numberInput("num_speakers");
  const min = numberInput("min_speakers");
  const max = numberInput("max_speakers");
  const diarize = el("input", { type: "checkbox", name: "diarize", checked: true });
  // Speech-recognition models in the cache (the OpenAI-compatible list: whisper-1, the
  // configured model, then every installed one); blank runs the configured model.
  const model = select({ name: "model" }, [["", STRINGS.modelDefault]], "");
  api("GET", "/v1/models").then((list) => {
    const ids = (list?.data || []).map((m) => m.id).filter((id) => id !== "whisper-1");
    if (ids.length) model.firstChild.textContent = STRINGS.modelDefaultNamed(ids[0]);
    for (const id of ids) model.append(el("option", { value: id }, id));
  }).catch(() => {});
  const translate = el("input", { type: "checkbox", name: "task" });
  const options = () => ({
    model: model.value,
    task: translate.checked ? "translate" : "",
    language: language.value.trim(),
    num_speakers: num.value,
    min_speakers: min.value,
    max_speakers: max.value,
    diarize: diarize.checked ? "true" : "false",
  });
  const submit = el("button", { type: "submit" }, STRINGS.upload);
  const form = el("form", {
    class: "upload-form",
    onsubmit: (event) => {
      event.preventDefault();
      error.textContent = "";
      if (!input.files.length) { error.textContent = STRINGS.dropHint; input.focus(); return; }
      queueUploads([...input.files], options());
      input.value = "";
    },
  },
    el("p", { class: "muted drop-hint" }, STRINGS.dropHint),
    field(STRINGS.uploadHeading, input),
    el("details", { class: "options" }, el("summary", {}, STRINGS.uploadOptions),
      el("div", { class: "grid" },
        field(STRINGS.model, model),
        field(STRINGS.language, language),
        field(STRINGS.numSpeakers, num),
        field(STRINGS.minSpeakers, min),
        field(STRINGS.maxSpeakers, max),
        el("label", { class: "check" }, translate, STRINGS.translate),
        el("label", { class: "check" }, diarize, STRINGS.diarize))),
    submit, error);
  const zone = el("section", { class: "upload dropzone", "aria-labelledby": "upload-heading" },
    el("h2", { id: "upload-heading", class: "small-heading" }, STRINGS.upload), form, uploadList);
  // Drag and drop anywhere on the zone; the file input stays the keyboard way.
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", (e) => { if (!zone.contains(e.relatedTarget)) zone.classList.remove("dragging"); });
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    const dropped = [...(e.dataTransfer?.files || [])];
    if (dropped.length) queueUploads(dropped, options());
  });
  return zone;
}

function filesQuery() {
  const query = new URLSearchParams({ per_page: "200" });
  for (const [key, value] of Object.entries(filters)) if (value) query.set(key, value);
  // The server's default order is newest first ("created"); "-created" would mean oldest first
  // there, so the UI keeps its own descending-first convention and translates it here.
  query.set("sort", serverSort(view.sort));
  return `/api/files?${query}`;
}

/// The UI says "-x" for the natural descending order of x (newest, largest, Z–A for names is
/// ascending's reverse); the API's `created` is newest first, `-created` oldest first.
function serverSort(sort) {
  const descending = sort.startsWith("-");
  const key = sort.replace(/^-/, "");
  if (key === "created") return descending ? "created" : "-created";
  return descending ? `-${key}` : key;
}

const dateFormat = new Intl.DateTimeFormat(LANGUAGE, { dateStyle: "medium", timeStyle: "short" });
const shortDate = (secs) => (secs ? dateFormat.format(new Date(secs * 1000)) : STRINGS.never);

function matchesText(file) {
  const text = view.text.trim().toLowerCase();
  if (!text) return true;
  return file.filename.toLowerCase().includes(text) || file.tags.some((t) => t.includes(text));
}

function tagEditor(file, cell, refresh, tagsChanged) {
  const error = errorBox();
  const input = el("input", { value: file.tags.join(", "), autocomplete: "off" });
  const save = el("button", { type: "submit" }, STRINGS.save);
  const form = el("form", {
    class: "inline",
    onsubmit: (event) => {
      event.preventDefault();
      const tags = input.value.split(",").map((t) => t.trim()).filter(Boolean);
      attempt(async () => {
        await api("PUT", `/api/files/${encodeURIComponent(file.id)}/tags`, { tags });
        announce(STRINGS.saved);
        await refresh();
        await tagsChanged();
        document.querySelector(`button[aria-label="${CSS.escape(STRINGS.editTagsOf(file.filename))}"]`)?.focus();
      }, error, save);
    },
  }, field(STRINGS.tagsFor(file.filename), input), save,
  el("button", { type: "button", class: "link", onclick: () => refresh() }, STRINGS.cancel), error);
  cell.replaceChildren(form);
  input.focus();
}

/// A column heading that sorts the list by `key` (name, date, size); aria-sort tells the order.
function sortHeading(key, label, cls, resort) {
  const current = view.sort.replace(/^-/, "") === SORTS[key];
  const descending = view.sort.startsWith("-");
  return el("th", {
    class: cls || false, scope: "col",
    "aria-sort": current ? (descending ? "descending" : "ascending") : false,
  }, el("button", {
    type: "button", class: "sort", "data-sort": key, "aria-label": STRINGS.sortBy(label),
    onclick: () => {
      const natural = key === "name" ? SORTS[key] : `-${SORTS[key]}`;
      view.sort = current ? (descending ? SORTS[key] : `-${SORTS[key]}`) : natural;
      resort();
    },
  }, label));
}

function filesTable(list, progressBars, refresh, filtered, tagsChanged) {
  const items = list.items.filter(matchesText);
  progressBars.clear();
  const error = errorBox();
  const act = (label, action, attrs = {}) =>
    el("button", { class: "link", type: "button", ...attrs, onclick: (e) => attempt(action, error, e.currentTarget) }, label);
  const rows = items.map((f) => {
    const id = encodeURIComponent(f.id);
    const bar = el("progress", { max: "100", value: String(Math.round((f.progress || 0) * 100)), "aria-label": STRINGS.progressOf(f.filename) });
    const status = el("span", { "data-status": f.id }, statusText(f));
    progressBars.set(f.id, { bar, status, known: f.status });
    const actions = el("td", { class: "actions" });
    if (f.status === "completed") {
      actions.append(el("a", { href: `#/file/${id}`, class: "button-link" }, STRINGS.open), " ");
    }
    const owner = f.access === "owner";
    if (owner && (f.status === "queued" || f.status === "processing")) {
      actions.append(act(STRINGS.cancel, async () => { await api("POST", `/api/files/${id}/cancel`); await refresh(); }), " ");
    }
    if (owner && (f.status === "error" || f.status === "cancelled")) {
      actions.append(act(STRINGS.retry, async () => { await api("POST", `/api/files/${id}/retry`); await refresh(); }), " ");
    }
    const name = el("td", { class: "name" });
    const tagCell = el("div", { class: "tags" }, ...f.tags.map((t) => el("span", { class: "tag" }, t)));
    name.append(f.status === "completed" ? el("a", { href: `#/file/${id}`, class: "file-link" }, f.filename) : el("span", {}, f.filename), tagCell);
    if (!owner) name.append(el("span", { class: "muted small" }, STRINGS.shared(f.access)));
    if (f.error) name.append(el("div", { class: "error" }, f.error));
    if (owner) {
      actions.append(act(STRINGS.editTags, () => tagEditor(f, tagCell, refresh, tagsChanged), { "aria-label": STRINGS.editTagsOf(f.filename) }), " ");
      actions.append(act(STRINGS.delete, async () => {
        if (!window.confirm(STRINGS.confirmDelete(f.filename))) return;
        await api("DELETE", `/api/files/${id}`);
        await refresh();
      }));
    }
    status.classList.add("status-pill");
    status.dataset.state = f.status;
    const known = (value, format) => (value === null || value === undefined ? STRINGS.unknown : format(value));
    return el("tr", { "data-file": f.id }, name,
      el("td", { class: "num dur" }, known(f.duration, formatTime)),
      el("td", { class: "lang" }, known(f.language, String)),
      el("td", { class: "num spk" }, known(f.speaker_count, String)),
      el("td", { class: "date" }, el("time", { datetime: new Date(f.created_at * 1000).toISOString(), title: formatDate(f.created_at) }, shortDate(f.created_at))),
      el("td", { class: "status" }, status, " ", bar), el("td", { class: "num size" }, formatSize(f.size)), actions);
  });
  if (!rows.length) return el("div", {}, el("p", { class: "muted" }, filtered || view.text.trim() ? STRINGS.noMatches : STRINGS.noFiles), error);
  const more = list.total > list.items.length ? el("p", { class: "muted" }, STRINGS.showingOf(list.items.length, list.total)) : null;
  return el("div", {}, error, more, el("div", { class: "table-wrap" }, el("table", { class: "files" },
    el("thead", {}, el("tr", {}, sortHeading("name", STRINGS.name, "", refresh),
      el("th", { class: "num dur", scope: "col" }, STRINGS.durationColumn),
      el("th", { class: "lang", scope: "col" }, STRINGS.languageColumn),
      el("th", { class: "num spk", scope: "col" }, STRINGS.speakersColumn),
      sortHeading("date", STRINGS.dateColumn, "date", refresh),
      el("th", { scope: "col" }, STRINGS.status),
      sortHeading("size", STRINGS.size, "num size", refresh),
      el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, STRINGS.actions)))),
    el("tbody", {}, ...rows))));
}

async function filterBar(onChange) {
  // Tags and collections feed the selects; either failing leaves its select with "Any" only.
  const [tags, collections] = await Promise.all([
    api("GET", "/api/tags").then((r) => r.tags).catch(() => []),
    api("GET", "/api/collections").then((r) => r.collections).catch(() => []),
  ]);
  if (filters.tag && !tags.some((t) => t.tag === filters.tag)) tags.push({ tag: filters.tag, count: 0 });
  const status = select({ name: "status" }, [["", STRINGS.any], ...STATUSES.map((s) => [s, STRINGS.statusNames[s]])], filters.status);
  const tag = select({ name: "tag" }, [["", STRINGS.any], ...tags.map((t) => [t.tag, `${t.tag} (${t.count})`])], filters.tag);
  const scope = select({ name: "scope" }, [["own", STRINGS.scopeOwn], ["shared", STRINGS.scopeShared], ["all", STRINGS.scopeAll]], filters.scope);
  const collection = select({ name: "collection" }, [["", STRINGS.any], ...collections.map((c) => [c.id, c.name])], filters.collection);
  const controls = { status, tag, scope, collection };
  for (const [key, control] of Object.entries(controls)) {
    control.addEventListener("change", () => { filters[key] = control.value; onChange(); });
  }
  const clear = el("button", {
    type: "button",
    class: "link",
    onclick: () => {
      Object.assign(filters, { status: "", tag: "", scope: "own", collection: "" });
      for (const [key, control] of Object.entries(controls)) control.value = filters[key];
      onChange();
    },
  }, STRINGS.clearFilters);
  return el("fieldset", { class: "filters" }, el("legend", {}, STRINGS.filters),
    field(STRINGS.filterStatus, status), field(STRINGS.filterTag, tag),
    field(STRINGS.filterScope, scope), field(STRINGS.filterCollection, collection), clear);
}

export async function showFiles(ctx) {
  const area = el("div", { class: "files" });
  const progressBars = new Map();
  // The filter bar is rebuilt when tags change (its tag list comes from the server).
  const barHolder = el("div", {});
  const rebuildBar = async () => { barHolder.replaceChildren(await filterBar(refresh)); };
  let refreshing = null;
  let again = false;
  const isFiltered = () => !!(filters.status || filters.tag || filters.collection || filters.scope !== "own");
  /// Reloads the table; calls made while one is loading coalesce into one more load.
  const refresh = async () => {
    if (refreshing) { again = true; return refreshing; }
    refreshing = (async () => {
      do {
        again = false;
        if (ctx.stale()) return;
        try {
          const list = await api("GET", filesQuery());
          lastList = list;
          if (!ctx.stale()) area.replaceChildren(filesTable(list, progressBars, refresh, isFiltered(), rebuildBar));
        } catch (e) {
          if (sessionEnded(e)) { hooks.signedOut(); return; }
          const error = errorBox();
          error.textContent = e.message;
          area.replaceChildren(error);
        }
      } while (again);
    })();
    try { await refreshing; } finally { refreshing = null; }
  };
  let lastList = await api("GET", filesQuery());
  area.replaceChildren(filesTable(lastList, progressBars, refresh, isFiltered(), rebuildBar));
  // The filter box narrows the listed files as one types (names and tags), without a request.
  const filterText = el("input", {
    type: "search", name: "filter", value: view.text, autocomplete: "off", spellcheck: "false",
    placeholder: STRINGS.filterBoxPlaceholder, "data-shortcut": "filter", "aria-keyshortcuts": "/",
  });
  filterText.addEventListener("input", () => {
    view.text = filterText.value;
    area.replaceChildren(filesTable(lastList, progressBars, refresh, isFiltered(), rebuildBar));
  });
  await rebuildBar();
  // Live status: progress bars move; a status change refreshes the table (not the page, so a
  // file being chosen in the upload form is kept).
  ctx.onEvent((event) => {
    const row = progressBars.get(event.file_id);
    if (event.type === "file.status" && row && event.status === row.known) {
      row.bar.value = Math.round((event.progress || 0) * 100);
      const name = STRINGS.statusNames[event.status] || event.status;
      row.status.textContent = event.stage && event.stage !== event.status ? `${name} (${event.stage})` : name;
      return;
    }
    if (["file.status", "file.completed", "file.error", "file.created", "file.deleted", "resync"].includes(event.type)) {
      refresh();
    }
  });
  return [
    el("h2", { class: "visually-hidden" }, STRINGS.navFiles),
    uploadSection(refresh),
    recordSection(refresh),
    el("section", { "data-view": "files", "aria-labelledby": "files-heading" },
      el("h2", { id: "files-heading" }, STRINGS.files),
      el("div", { class: "list-tools" }, field(STRINGS.filterBox, filterText)), barHolder, area),
  ];
}
