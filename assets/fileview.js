// The file view: player beside the transcript (current word highlighted, click a word to seek),
// speakers (colours, names, rename, voice profiles and suggestions), inline segment edits,
// waveform, comments at a time, analytics and the export menu.

import { STRINGS } from "./strings.js";
import {
  api, announce, attempt, el, errorBox, field, formatTime, seek, speakerClass, state,
} from "./lib.js";
import { playerControls } from "./player.js";
import { summarySection } from "./summary.js";

function backLink() {
  return el("a", { href: "#/files", class: "back" }, `← ${STRINGS.back}`);
}

export async function showFile(ctx, fileId) {
  const id = encodeURIComponent(fileId);
  const file = await api("GET", `/api/files/${id}`);
  if (file.status !== "completed") {
    return [backLink(), el("h2", {}, file.filename), el("p", { class: "muted" }, STRINGS.notReady(STRINGS.statusNames[file.status] || file.status))];
  }
  const transcript = await api("GET", `/api/files/${id}/transcript`);
  const canEdit = file.access === "owner" || file.access === "editor";
  const isVideo = (file.media_type || "").startsWith("video/");
  const player = el(isVideo ? "video" : "audio", {
    controls: true, preload: "metadata", src: `/api/files/${id}/media`, "aria-label": STRINGS.player,
  });
  const startAt = Number(ctx.params.get("t"));

  // ---- Speakers -------------------------------------------------------------------------
  const speakers = new Map();
  const speakerLabels = new Map(); // speaker id -> label nodes in the transcript
  const setSpeakers = (list) => {
    speakers.clear();
    (list || []).forEach((s, index) => speakers.set(s.id, { ...s, cls: speakerClass(s, index) }));
  };
  setSpeakers(transcript.speakers);
  const controls = playerControls(player, { fileId: id, isVideo, language: transcript.language, speakers });
  const speakerName = (sid) => {
    const s = speakers.get(sid);
    return s ? (s.name || s.label || s.id) : sid;
  };
  const speakerPanel = el("section", { class: "speakers", "aria-labelledby": "speakers-heading" });
  const refreshLabels = () => {
    for (const [sid, nodes] of speakerLabels) {
      const s = speakers.get(sid);
      for (const node of nodes) {
        node.textContent = `${speakerName(sid)}: `;
        node.className = `speaker-name ${s ? s.cls : ""}`;
      }
    }
    controls.speakersChanged(speakers);
  };
  const reloadSpeakers = async () => {
    const fresh = await api("GET", `/api/files/${id}/transcript`);
    setSpeakers(fresh.speakers);
    renderSpeakerPanel();
    refreshLabels();
  };

  function speakerRow(s) {
    const error = errorBox();
    const row = el("li", { class: `speaker ${s.cls}`, "data-speaker": s.id });
    const show = () => {
      const parts = [el("span", { class: "swatch", "aria-hidden": "true" }), el("strong", {}, s.name || s.label || s.id)];
      if (s.name && s.label && s.name !== s.label) parts.push(el("span", { class: "muted small" }, ` (${s.label})`));
      if (s.profile_id) parts.push(el("span", { class: "muted small profile" }, " · ", STRINGS.profileLinked(s.name || s.label)));
      const actions = el("span", { class: "speaker-actions" });
      if (canEdit) {
        actions.append(el("button", {
          type: "button", class: "link", "aria-label": STRINGS.renameSpeaker(s.name || s.label), onclick: edit,
        }, STRINGS.rename));
        if (!s.profile_id) {
          actions.append(" ", el("button", {
            type: "button", class: "link", "aria-label": STRINGS.makeProfileFor(s.name || s.label),
            onclick: (e) => attempt(async () => {
              const name = s.name || s.label;
              await api("POST", `/api/files/${id}/speakers/${encodeURIComponent(s.id)}/profile`, { name }, { feature: "profiles" });
              announce(STRINGS.profileCreated(name));
              await reloadSpeakers();
            }, error, e.currentTarget),
          }, STRINGS.makeProfile));
        }
      }
      const suggestion = s.suggestion;
      const suggestionNode = suggestion && canEdit ? el("div", { class: "suggestion" },
        STRINGS.suggestion(suggestion.name, suggestion.similarity || 0), " ",
        ...[[true, STRINGS.accept, STRINGS.acceptSuggestion], [false, STRINGS.reject, STRINGS.rejectSuggestion]].map(([accept, text, label]) =>
          el("button", {
            type: "button", class: accept ? "small" : "small secondary", "aria-label": label(suggestion.name),
            onclick: (e) => attempt(async () => {
              await api("POST", `/api/files/${id}/speakers/${encodeURIComponent(s.id)}/suggestion`, { accept }, { feature: "profiles" });
              await reloadSpeakers();
            }, error, e.currentTarget),
          }, text))) : null;
      row.replaceChildren(el("div", { class: "speaker-line" }, ...parts, " ", actions), suggestionNode || "", error);
    };
    const edit = () => {
      const input = el("input", { value: s.name || "", placeholder: s.label || "", autocomplete: "off" });
      const save = el("button", { type: "submit", class: "small" }, STRINGS.save);
      row.replaceChildren(el("form", {
        class: "inline",
        onsubmit: (event) => {
          event.preventDefault();
          attempt(async () => {
            const name = input.value.trim() || null;
            const updated = await api("PATCH", `/api/files/${id}/speakers/${encodeURIComponent(s.id)}`, { name });
            Object.assign(s, updated || { name });
            s.name = updated ? updated.name : name;
            show();
            refreshLabels();
            announce(STRINGS.saved);
            row.querySelector("button")?.focus();
          }, error, save);
        },
      }, field(STRINGS.speakerNameFor(s.label || s.id), input), save,
      el("button", { type: "button", class: "link", onclick: () => { show(); row.querySelector("button")?.focus(); } }, STRINGS.cancel)), error);
      input.focus();
    };
    show();
    return row;
  }

  // The owner may find speakers again with another count, without transcribing again.
  function rediarizeForm() {
    if (file.access !== "owner") return null;
    const error = errorBox();
    const count = el("input", { type: "number", min: "1", max: "20", id: "rediarize-count", inputmode: "numeric" });
    const form = el("form", {
      class: "inline-form", "data-view": "rediarize",
      onsubmit: (e) => {
        e.preventDefault();
        const body = { stages: ["diarize"] };
        if (count.value) body.num_speakers = Number(count.value);
        attempt(async () => {
          await api("POST", `/api/files/${id}/reprocess`, body);
          announce(STRINGS.rediarizeQueued);
          location.hash = "#/files";
        }, error, e.submitter);
      },
    }, field(STRINGS.rediarizeCount, count), el("button", { type: "submit", class: "secondary small" }, STRINGS.rediarize), error);
    return form;
  }

  function renderSpeakerPanel() {
    const heading = el("h3", { id: "speakers-heading" }, STRINGS.speakers);
    if (!speakers.size) {
      speakerPanel.replaceChildren(heading, el("p", { class: "muted" }, STRINGS.noSpeakers), rediarizeForm() || "");
      return;
    }
    speakerPanel.replaceChildren(heading, el("ul", { class: "speaker-list" }, ...[...speakers.values()].map(speakerRow)), rediarizeForm() || "");
  }
  renderSpeakerPanel();

  // ---- Transcript -----------------------------------------------------------------------
  const body = el("div", { class: "transcript", "data-view": "transcript", "aria-label": STRINGS.transcript });
  const wordsBySegment = new Map();
  let flatWords = null; // sorted by start, rebuilt after an edit
  const allWords = () => {
    if (!flatWords) flatWords = [...wordsBySegment.values()].flat().sort((a, b) => a.start - b.start);
    return flatWords;
  };

  function renderSegment(segment) {
    const node = el("div", { class: "segment", "data-segment": String(segment.id) });
    const spk = segment.speaker ? speakers.get(segment.speaker) : null;
    if (spk) node.classList.add(spk.cls);
    const time = formatTime(segment.start);
    const head = el("div", { class: "segment-head" },
      el("button", { class: "link time", type: "button", "aria-label": STRINGS.seekTo(time), onclick: () => seek(player, segment.start) }, time));
    if (segment.speaker) {
      const label = el("span", { class: `speaker-name ${spk ? spk.cls : ""}` }, `${speakerName(segment.speaker)}: `);
      if (!speakerLabels.has(segment.speaker)) speakerLabels.set(segment.speaker, new Set());
      speakerLabels.get(segment.speaker).add(label);
      head.append(label);
    }
    const text = el("p", { class: "segment-text" });
    const words = [];
    const pieces = timedWords(segment);
    if (pieces.some((p) => p.word)) {
      for (const { text: token, word } of pieces) {
        if (!word) { text.append(token, " "); continue; }
        const span = el("span", { class: "word", tabindex: "0", role: "button", "data-start": String(word.start) }, token);
        span.addEventListener("click", () => seek(player, word.start));
        span.addEventListener("keydown", (e) => {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); seek(player, word.start); }
        });
        words.push({ span, start: word.start, end: word.end });
        text.append(span, " ");
      }
    } else {
      text.append(segment.text);
    }
    if (segment.edited) {
      text.append(" ", el("span", { class: "edited muted small", title: STRINGS.editedFrom(segment.original_text || "") }, `(${STRINGS.edited})`));
    }
    wordsBySegment.set(segment.id, words);
    flatWords = null;
    node.append(head, text);
    if (canEdit) {
      const error = errorBox();
      head.append(el("button", {
        type: "button", class: "link edit", "aria-label": STRINGS.editSegment(time),
        onclick: () => {
          const area = el("textarea", { rows: "3" }, segment.text);
          const save = el("button", { type: "submit", class: "small" }, STRINGS.save);
          const form = el("form", {
            class: "segment-edit",
            onsubmit: (event) => {
              event.preventDefault();
              attempt(async () => {
                const updated = await api("PATCH", `/api/files/${id}/segments/${segment.id}`, { text: area.value });
                Object.assign(segment, updated);
                const fresh = renderSegment(segment);
                node.replaceWith(fresh);
                announce(STRINGS.saved);
                fresh.querySelector("button.edit")?.focus();
              }, error, save);
            },
          }, field(STRINGS.segmentText, area), el("div", {}, save, " ",
            el("button", { type: "button", class: "link", onclick: () => { form.replaceWith(text); node.querySelector("button.edit")?.focus(); } }, STRINGS.cancel)), error);
          text.replaceWith(form);
          area.focus();
        },
      }, STRINGS.edit));
      node.append(error);
    }
    return node;
  }
  for (const segment of transcript.segments) body.append(renderSegment(segment));

  // Current word: binary search by start time (a 4-hour transcript has tens of thousands).
  let current = null;
  const highlight = () => {
    const t = player.currentTime;
    const words = allWords();
    let lo = 0, hi = words.length - 1, found = null;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (words[mid].start <= t) { found = words[mid]; lo = mid + 1; } else hi = mid - 1;
    }
    if (found && !(t < found.end)) found = null;
    if (found !== current) {
      if (current) current.span.classList.remove("current");
      if (found) found.span.classList.add("current");
      current = found;
    }
  };
  player.addEventListener("timeupdate", highlight);

  if (Number.isFinite(startAt) && startAt > 0) {
    player.addEventListener("loadedmetadata", () => {
      player.currentTime = startAt;
      const target = [...transcript.segments].reverse().find((s) => s.start <= startAt + 0.01);
      const node = target && body.querySelector(`[data-segment="${target.id}"]`);
      if (node) { node.classList.add("target"); node.scrollIntoView({ block: "center" }); }
    }, { once: true });
  }

  // ---- Waveform (hidden until the server has one) ----------------------------------------
  const canvas = el("canvas", {
    class: "waveform", hidden: true, tabindex: "0", role: "slider", "aria-label": STRINGS.waveform,
    "aria-valuemin": "0", "aria-valuenow": "0",
  });
  api("GET", `/api/files/${id}/waveform`, undefined, { feature: "waveform" }).then((wave) => {
    if (!wave || !Array.isArray(wave.peaks) || !wave.peaks.length || ctx.stale()) return;
    drawWaveform(canvas, player, wave, transcript.duration || file.duration || 0);
  }).catch(() => { /* no waveform: stays hidden */ });

  // ---- Export menu ----------------------------------------------------------------------
  const withSpeakers = el("input", { type: "checkbox", checked: true });
  const links = Object.entries(STRINGS.exportFormats).map(([format, label]) =>
    el("a", { href: `/api/files/${id}/export?format=${format}`, "data-format": format, download: "" }, label));
  withSpeakers.addEventListener("change", () => {
    for (const link of links) {
      link.href = `/api/files/${id}/export?format=${link.dataset.format}${withSpeakers.checked ? "" : "&speakers=false"}`;
    }
  });
  const exportMenu = el("section", { class: "export", "aria-labelledby": "export-heading" },
    el("h3", { id: "export-heading" }, STRINGS.export),
    el("div", { class: "export-links" }, ...links.flatMap((l) => [l, " "])),
    el("label", { class: "check" }, withSpeakers, STRINGS.exportWithSpeakers));

  const side = el("div", { class: "media-col" }, el("div", { class: "player-card" }, player, controls.node, canvas),
    speakerPanel, exportMenu, summarySection(id, player, file), commentsSection(ctx, id, player, file), analyticsSection(id));
  return [
    backLink(),
    el("h2", {}, file.filename),
    el("div", { class: isVideo ? "fileview with-video" : "fileview" }, side,
      el("div", { class: "text-col" },
        el("section", { "aria-labelledby": "transcript-heading" }, el("h3", { id: "transcript-heading" }, STRINGS.transcript), body))),
  ];
}

const normal = (t) => t.trim().toLowerCase();

/// The segment's text as pieces, each with its word timing where one is known. An edited
/// segment keeps the timings of the words it still has (matched in order, a few words of
/// slack), so unchanged words stay clickable; new words are plain text.
function timedWords(segment) {
  const words = segment.words || [];
  if (!segment.edited) return words.map((w) => ({ text: w.text.trim(), word: w }));
  const pieces = [];
  let next = 0;
  for (const token of segment.text.split(/\s+/).filter(Boolean)) {
    let match = -1;
    for (let k = next; k < Math.min(words.length, next + 4); k++) {
      if (normal(words[k].text) === normal(token)) { match = k; break; }
    }
    if (match >= 0) { pieces.push({ text: token, word: words[match] }); next = match + 1; }
    else pieces.push({ text: token, word: null });
  }
  return pieces;
}

function drawWaveform(canvas, player, wave, duration) {
  const peaks = wave.peaks;
  const total = duration || peaks.length * (wave.seconds_per_peak || 0);
  if (!total) return;
  canvas.hidden = false;
  canvas.setAttribute("aria-valuemax", String(Math.round(total)));
  const draw = () => {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.floor(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.floor(canvas.clientHeight * ratio));
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const g = canvas.getContext("2d");
    const styles = getComputedStyle(canvas);
    g.clearRect(0, 0, width, height);
    const played = Math.floor((player.currentTime / total) * width);
    for (let x = 0; x < width; x++) {
      const from = Math.floor((x / width) * peaks.length);
      const to = Math.max(from + 1, Math.floor(((x + 1) / width) * peaks.length));
      let peak = 0;
      for (let i = from; i < to && i < peaks.length; i++) peak = Math.max(peak, peaks[i]);
      const h = Math.max(1, peak * height);
      g.fillStyle = x <= played ? styles.getPropertyValue("--wave-played") || "#2457c5" : styles.getPropertyValue("--wave") || "#9aa5b1";
      g.fillRect(x, (height - h) / 2, 1, h);
    }
  };
  const seekTo = (t) => seek(player, Math.min(Math.max(0, t), total));
  canvas.addEventListener("click", (e) => {
    const box = canvas.getBoundingClientRect();
    seekTo(((e.clientX - box.left) / box.width) * total);
  });
  canvas.addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight") { e.preventDefault(); seekTo(player.currentTime + 5); }
    if (e.key === "ArrowLeft") { e.preventDefault(); seekTo(player.currentTime - 5); }
  });
  player.addEventListener("timeupdate", () => {
    canvas.setAttribute("aria-valuenow", String(Math.round(player.currentTime)));
    canvas.setAttribute("aria-valuetext", formatTime(player.currentTime));
    draw();
  });
  window.addEventListener("resize", draw);
  requestAnimationFrame(draw);
}

function commentsSection(ctx, id, player, file) {
  const section = el("section", { class: "comments", "aria-labelledby": "comments-heading" });
  const list = el("ul", { class: "comment-list" });
  const error = errorBox();
  const text = el("textarea", { rows: "2", name: "comment" });
  const add = el("button", { type: "submit" }, STRINGS.addCommentAt(formatTime(0)));
  let shown = -1;
  player.addEventListener("timeupdate", () => {
    const s = Math.floor(player.currentTime);
    if (s !== shown) { shown = s; add.textContent = STRINGS.addCommentAt(formatTime(s)); }
  });
  const render = (comments) => {
    comments.sort((a, b) => a.time - b.time);
    list.replaceChildren(...comments.map((c) => {
      const time = formatTime(c.time);
      const item = el("li", { "data-comment": c.id },
        el("button", { type: "button", class: "link time", "aria-label": STRINGS.seekTo(time), onclick: () => seek(player, c.time) }, time),
        el("strong", {}, c.author), " ", el("span", { class: "comment-text" }, c.text));
      if (c.user_id === state.user.id || file.access === "owner") {
        item.append(" ", el("button", {
          type: "button", class: "link", "aria-label": STRINGS.deleteComment(time),
          onclick: (e) => attempt(async () => {
            await api("DELETE", `/api/files/${id}/comments/${encodeURIComponent(c.id)}`);
            await load();
          }, error, e.currentTarget),
        }, STRINGS.delete));
      }
      return item;
    }));
    if (!comments.length) list.replaceChildren(el("li", { class: "muted" }, STRINGS.noComments));
  };
  const load = async () => {
    const result = await api("GET", `/api/files/${id}/comments`);
    if (!ctx.stale()) render(result.comments || []);
  };
  const form = el("form", {
    class: "stack",
    onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        await api("POST", `/api/files/${id}/comments`, { time: Math.round(player.currentTime * 100) / 100, text: text.value });
        text.value = "";
        announce(STRINGS.saved);
        await load();
      }, error, add);
    },
  }, field(STRINGS.comment, text), add, error);
  section.append(el("h3", { id: "comments-heading" }, STRINGS.comments), list, form);
  attempt(load, error);
  return section;
}

function analyticsSection(id) {
  const content = el("div", {}, el("p", { class: "muted" }, STRINGS.loading));
  const details = el("details", { class: "analytics" }, el("summary", {}, STRINGS.analytics), content);
  const pct = (x) => `${Math.round((x || 0) * 100)}%`;
  const num = (x) => (Number.isFinite(x) ? (Math.round(x * 10) / 10).toString() : STRINGS.none);
  // Fetched each time the panel opens, so it reflects edits made since.
  const load = () => api("GET", `/api/files/${id}/analytics`).then((a) => {
    const overall = [
      [STRINGS.duration, formatTime(a.duration)], [STRINGS.talkTime, formatTime(a.talk_time)],
      [STRINGS.words, num(a.words)], [STRINGS.wordsPerMinute, num(a.words_per_minute)],
      [STRINGS.turns, num(a.turns)], [STRINGS.interruptions, num(a.interruptions)],
      [STRINGS.questions, num(a.questions)], [STRINGS.silence, pct(a.silence_ratio)],
    ];
    const nodes = [el("dl", { class: "stats" }, ...overall.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))];
    if (a.speakers && a.speakers.length) {
      nodes.push(el("div", { class: "table-wrap" }, el("table", { class: "compact" },
        el("thead", {}, el("tr", {}, ...[STRINGS.speaker, STRINGS.talkTime, STRINGS.share, STRINGS.words, STRINGS.wordsPerMinute, STRINGS.turns, STRINGS.questions].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...a.speakers.map((s) => el("tr", {},
          el("td", {}, s.name || s.speaker), el("td", {}, formatTime(s.talk_time)), el("td", {}, pct(s.share)),
          el("td", {}, num(s.words)), el("td", {}, num(s.words_per_minute)), el("td", {}, num(s.turns)), el("td", {}, num(s.questions))))))));
    }
    content.replaceChildren(...nodes);
  }).catch((e) => {
    content.replaceChildren(el("p", { class: "muted" }, e.routeMissing ? STRINGS.notAvailable : e.message));
  });
  details.addEventListener("toggle", () => { if (details.open) load(); });
  return details;
}
