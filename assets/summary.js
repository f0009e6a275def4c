// The summary panel of the file view: the LLM summary with action items, decisions, topics
// and speaker-name suggestions (times are buttons that seek the player), a run / re-run
// button, and "ask this transcript" with the answer's citations as buttons too. Without a
// language model on the server the panel says so instead.

import { STRINGS } from "./strings.js";
import { announce, api, attempt, el, errorBox, formatTime, seek } from "./lib.js";

/// A button that seeks the player to `seconds`.
function timeButton(player, seconds) {
  const label = formatTime(seconds);
  return el("button", {
    type: "button", class: "link time", "aria-label": STRINGS.seekTo(label),
    onclick: () => seek(player, seconds),
  }, label);
}

function itemList(player, heading, items, cls) {
  if (!items || !items.length) return null;
  return el("div", { class: cls },
    el("h4", {}, heading),
    el("ul", {}, ...items.map((item) => el("li", {},
      Number.isFinite(item.time) ? [timeButton(player, item.time), " "] : null,
      item.text,
      item.owner ? el("span", { class: "muted" }, ` (${item.owner})`) : null))));
}

export function summarySection(id, player, file) {
  const canRun = file.access === "owner" || file.access === "editor";
  const body = el("div", { class: "summary-body" }, el("p", { class: "muted" }, STRINGS.loading));
  const error = errorBox();
  const runButton = el("button", { type: "button", class: "summary-run", hidden: true }, STRINGS.summaryRun);
  let timer = null;

  const render = (s) => {
    if (!s.llm_configured && s.status === "none") {
      runButton.hidden = true;
      body.replaceChildren(el("p", { class: "muted summary-hint" }, STRINGS.llmNotConfigured));
      return;
    }
    runButton.hidden = !canRun || !s.llm_configured || s.status === "running";
    runButton.textContent = s.status === "none" ? STRINGS.summaryRun : STRINGS.summaryRerun;
    const nodes = [];
    if (s.status === "none") nodes.push(el("p", { class: "muted" }, STRINGS.summaryNone));
    if (s.status === "running") {
      nodes.push(el("p", { class: "muted", role: "status" }, STRINGS.summaryRunning(s.stage || "", Math.round((s.progress || 0) * 100))));
    }
    if (s.status === "error") nodes.push(el("p", { class: "error" }, STRINGS.summaryFailed(s.error || "")));
    if (s.status === "done") {
      nodes.push(el("p", { class: "summary-text" }, s.summary));
      nodes.push(itemList(player, STRINGS.actionItems, s.action_items, "action-items"));
      nodes.push(itemList(player, STRINGS.decisions, s.decisions, "decisions"));
      nodes.push(itemList(player, STRINGS.topics, s.topics, "topics"));
      if (s.speaker_names && s.speaker_names.length) {
        nodes.push(el("div", { class: "speaker-names" },
          el("h4", {}, STRINGS.speakerNameSuggestions),
          el("ul", {}, ...s.speaker_names.map((n) => el("li", {},
            timeButton(player, n.time), " ", STRINGS.speakerMaybe(n.speaker, n.name),
            el("q", { class: "muted" }, n.evidence),
            canRun ? [" ", useNameButton(n)] : null)))));
      }
      nodes.push(el("p", { class: "muted small" }, STRINGS.summaryModel(s.model || "", s.chunks || 0)));
    }
    body.replaceChildren(...nodes.filter(Boolean));
    clearTimeout(timer);
    // Polled while it runs, as long as the panel is on the page.
    if (s.status === "running") timer = setTimeout(() => { if (section.isConnected) load(); }, 1000);
  };
  // A suggested name is applied as a speaker rename (the transcript view shows it on reload).
  const useNameButton = (n) => {
    const button = el("button", { type: "button", class: "link" }, STRINGS.useName);
    button.addEventListener("click", () => attempt(async () => {
      await api("PATCH", `/api/files/${id}/speakers/${encodeURIComponent(n.speaker)}`, { name: n.name });
      button.replaceWith(el("span", { class: "muted" }, STRINGS.nameUsed));
    }, error, button));
    return button;
  };
  const load = () => api("GET", `/api/files/${id}/summary`)
    .then((s) => { if (s) render(s); })
    .catch((e) => body.replaceChildren(el("p", { class: "muted" }, e.routeMissing ? STRINGS.notAvailable : e.message)));
  runButton.addEventListener("click", () => attempt(async () => {
    render(await api("POST", `/api/files/${id}/summary`));
  }, error, runButton));

  // ---- Ask this transcript ------------------------------------------------------------
  const question = el("input", { type: "text", name: "question", maxlength: "2000", "aria-label": STRINGS.askLabel, placeholder: STRINGS.askPlaceholder });
  const askButton = el("button", { type: "submit" }, STRINGS.ask);
  const askError = errorBox();
  const answer = el("div", { class: "answer", "aria-live": "polite" });
  const form = el("form", { class: "ask" }, question, " ", askButton, askError, answer);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!question.value.trim()) return;
    answer.replaceChildren(el("p", { class: "muted" }, STRINGS.askThinking));
    attempt(async () => {
      const a = await api("POST", `/api/files/${id}/ask`, { question: question.value });
      answer.replaceChildren(
        el("p", { class: "answer-text" }, a.answer),
        a.citations.length
          ? el("ul", { class: "citations" }, ...a.citations.map((c) => el("li", {}, timeButton(player, c.start), " ", c.text)))
          : el("p", { class: "muted" }, STRINGS.askNoCitations));
    }, askError, askButton).then((ok) => { if (!ok) answer.replaceChildren(); });
  });

  const section = el("section", { class: "summary", "aria-labelledby": "summary-heading" },
    el("h3", { id: "summary-heading" }, STRINGS.summaryHeading), runButton, error, body,
    el("h4", {}, STRINGS.askHeading), form, canRun ? templatesEditor() : null);
  load();
  return section;
}

/// The caller's own prompt templates (map and reduce), loaded when opened; empty = default.
function templatesEditor() {
  const map = el("textarea", { rows: "4", name: "map-template" });
  const reduce = el("textarea", { rows: "4", name: "reduce-template" });
  const hint = el("p", { class: "muted small" });
  const error = errorBox();
  const save = el("button", { type: "submit" }, STRINGS.save);
  const reset = el("button", { type: "button", class: "link" }, STRINGS.promptsReset);
  const show = (p) => {
    map.value = p.map;
    reduce.value = p.reduce;
    hint.textContent = STRINGS.promptsHint(p.placeholders.map.map((x) => `{${x}}`).join(" "),
      p.placeholders.reduce.map((x) => `{${x}}`).join(" "));
  };
  const form = el("form", { class: "prompts" },
    el("label", {}, STRINGS.promptMap, map), el("label", {}, STRINGS.promptReduce, reduce),
    hint, error, save, " ", reset);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    attempt(async () => {
      show(await api("PUT", "/api/account/llm-prompts", { map: map.value, reduce: reduce.value }));
      announce(STRINGS.saved);
    }, error, save);
  });
  reset.addEventListener("click", () => attempt(async () => {
    show(await api("PUT", "/api/account/llm-prompts", { map: null, reduce: null }));
    announce(STRINGS.saved);
  }, error, reset));
  const details = el("details", { class: "prompts" }, el("summary", {}, STRINGS.promptsHeading), form);
  details.addEventListener("toggle", () => {
    if (details.open) attempt(async () => show(await api("GET", "/api/account/llm-prompts")), error);
  });
  return details;
}
