// Search across transcripts: query, mode (keyword, semantic, hybrid), filters; each hit shows
// its highlight (built from text nodes and <mark> elements) and opens the file at its moment.

import { STRINGS } from "./strings.js";
import { api, el, errorBox, field, formatTime, highlightNodes, select } from "./lib.js";

const PER_PAGE = 20;
const FILTERS = ["speaker", "tag", "collection", "language", "media_type", "date_from", "date_to"];

export async function showSearch(ctx) {
  const params = ctx.params;
  const [tags, collections] = await Promise.all([
    api("GET", "/api/tags").then((r) => r.tags).catch(() => []),
    api("GET", "/api/collections").then((r) => r.collections).catch(() => []),
  ]);
  const q = el("input", { type: "search", name: "q", value: params.get("q") || "", required: true, autocomplete: "off" });
  const mode = select({ name: "mode" }, Object.entries(STRINGS.modes), params.get("mode") || "keyword");
  const controls = {
    speaker: el("input", { name: "speaker", value: params.get("speaker") || "", autocomplete: "off" }),
    tag: select({ name: "tag" }, [["", STRINGS.any], ...tags.map((t) => [t.tag, t.tag])], params.get("tag") || ""),
    collection: select({ name: "collection" }, [["", STRINGS.any], ...collections.map((c) => [c.id, c.name])], params.get("collection") || ""),
    language: el("input", { name: "language", size: "6", value: params.get("language") || "", autocomplete: "off" }),
    media_type: select({ name: "media_type" }, [["", STRINGS.mediaAny], ["audio", STRINGS.mediaAudio], ["video", STRINGS.mediaVideo]], params.get("media_type") || ""),
    date_from: el("input", { type: "date", name: "date_from", value: params.get("date_from") || "" }),
    date_to: el("input", { type: "date", name: "date_to", value: params.get("date_to") || "" }),
  };
  const labels = {
    speaker: STRINGS.speakerFilter, tag: STRINGS.filterTag, collection: STRINGS.filterCollection,
    language: STRINGS.languageFilter, media_type: STRINGS.mediaType, date_from: STRINGS.dateFrom, date_to: STRINGS.dateTo,
  };
  const results = el("div", { class: "results", "aria-live": "polite" });
  const error = errorBox();
  const page = Math.max(1, Number(params.get("page")) || 1);

  // The query lives in the location, so Back returns to the results.
  const go = (pageNumber) => {
    const next = new URLSearchParams({ q: q.value.trim(), mode: mode.value });
    for (const key of FILTERS) if (controls[key].value) next.set(key, controls[key].value);
    if (pageNumber > 1) next.set("page", String(pageNumber));
    ctx.navigate(`#/search?${next}`);
  };
  const form = el("form", {
    class: "search-form",
    role: "search",
    onsubmit: (event) => { event.preventDefault(); if (q.value.trim()) go(1); },
  },
    el("div", { class: "search-main" }, field(STRINGS.query, q), field(STRINGS.mode, mode),
      el("button", { type: "submit" }, STRINGS.searchButton)),
    el("details", { class: "options", open: FILTERS.some((k) => params.get(k)) },
      el("summary", {}, STRINGS.filters),
      el("div", { class: "grid" }, ...FILTERS.map((key) => field(labels[key], controls[key])))),
    error);

  if (params.get("q")) {
    const query = new URLSearchParams({ q: params.get("q"), mode: params.get("mode") || "keyword", page: String(page), per_page: String(PER_PAGE) });
    for (const key of FILTERS) if (params.get(key)) query.set(key, params.get(key));
    try {
      const found = await api("GET", `/api/search?${query}`, undefined, { feature: "search" });
      results.replaceChildren(...renderResults(found, page, go));
    } catch (e) {
      if (e.status === 401) throw e; // the router signs out
      if (e.routeMissing) results.replaceChildren(el("p", { class: "muted" }, STRINGS.searchUnavailable));
      else error.textContent = e.message;
    }
  }
  return [el("h2", {}, STRINGS.searchHeading), form, results];
}

function renderResults(found, page, go) {
  const names = new Map((found.files || []).map((f) => [f.file_id, f.filename]));
  const hits = found.hits || [];
  if (!hits.length) return [el("p", { class: "muted" }, STRINGS.noResults)];
  const list = el("ol", { class: "hits", start: String((page - 1) * (found.per_page || PER_PAGE) + 1) });
  for (const hit of hits) {
    const name = names.get(hit.file_id) || hit.file_id;
    const time = formatTime(hit.start);
    const href = `#/file/${encodeURIComponent(hit.file_id)}?t=${encodeURIComponent(String(hit.start))}`;
    list.append(el("li", { class: "hit" },
      el("a", { href, class: "hit-link" }, STRINGS.openAt(name, time)),
      hit.speaker ? el("span", { class: "muted small" }, ` · ${hit.speaker}`) : null,
      el("p", { class: "highlight" }, ...highlightNodes(hit.highlight || hit.text || ""))));
  }
  const nodes = [el("p", { class: "muted" }, STRINGS.searchResults(found.total ?? hits.length)), list];
  const pages = Math.ceil((found.total || 0) / (found.per_page || PER_PAGE));
  if (pages > 1) {
    nodes.push(el("nav", { class: "pager", "aria-label": STRINGS.searchHeading },
      page > 1 ? el("button", { type: "button", class: "link", onclick: () => go(page - 1) }, STRINGS.previousPage) : null, " ",
      page < pages ? el("button", { type: "button", class: "link", onclick: () => go(page + 1) }, STRINGS.nextPage) : null));
  }
  return nodes;
}
