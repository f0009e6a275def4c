// The file view's player controls: skip back/forward, playback speed (kept per browser) and,
// on video, a captions track (the WebVTT export, whose cues carry `<v Speaker>` voice tags)
// with each speaker's subtitles in the speaker's colour. Registers the player for the
// keyboard shortcuts (shortcuts.js).

import { STRINGS } from "./strings.js";
import { el, select } from "./lib.js";
import { SKIP_SECONDS, SPEEDS, keyTarget } from "./shortcuts.js";

const SPEED_KEY = "ot-speed";
// Caption colours by speaker colour index: light enough to read on the dark cue background.
const CUE_COLOURS = ["#5fb4ff", "#ff9a4d", "#3ee0a0", "#ff8fd0", "#ffd23f", "#7fdcff", "#c09bff", "#e0e0e0"];

function savedSpeed() {
  try {
    const speed = Number(localStorage.getItem(SPEED_KEY));
    return SPEEDS.includes(speed) ? speed : 1;
  } catch { return 1; }
}

/// The voice name as the VTT export writes it (whitespace collapsed, no `>`).
const voiceName = (name) => String(name).split(/\s+/).filter(Boolean).join(" ").replace(/>/g, "");

/// Controls for `media`; `speakers` are the transcript's (with `.cls` = spk-N). Returns
/// `{ node, speakersChanged(speakers) }`; call the latter after a rename so captions follow.
export function playerControls(media, { fileId, isVideo, language, speakers }) {
  const setSpeed = (rate) => {
    media.playbackRate = rate;
    media.defaultPlaybackRate = rate;
    speed.value = String(rate);
    try { localStorage.setItem(SPEED_KEY, String(rate)); } catch { /* this page only */ }
  };
  const speed = select({ id: "player-speed", class: "compact", "data-control": "speed" },
    SPEEDS.map((s) => [String(s), STRINGS.speedValue(s)]), String(savedSpeed()));
  speed.addEventListener("change", () => setSpeed(Number(speed.value)));
  // A new source resets the rate; apply the saved one once the media is known.
  media.addEventListener("loadedmetadata", () => setSpeed(Number(speed.value)));
  setSpeed(Number(speed.value));

  const skip = (by) => {
    const end = Number.isFinite(media.duration) ? media.duration : Infinity;
    media.currentTime = Math.min(Math.max(0, media.currentTime + by), end);
  };
  const back = el("button", { type: "button", class: "secondary small", "aria-label": STRINGS.skipBack(SKIP_SECONDS),
    title: STRINGS.skipBack(SKIP_SECONDS), "aria-keyshortcuts": "j", onclick: () => skip(-SKIP_SECONDS) }, STRINGS.skipBackShort(SKIP_SECONDS));
  const forward = el("button", { type: "button", class: "secondary small", "aria-label": STRINGS.skipForward(SKIP_SECONDS),
    title: STRINGS.skipForward(SKIP_SECONDS), "aria-keyshortcuts": "l", onclick: () => skip(SKIP_SECONDS) }, STRINGS.skipForwardShort(SKIP_SECONDS));

  const bar = el("div", { class: "player-bar", role: "group", "aria-label": STRINGS.player }, back, forward,
    el("label", { for: "player-speed", class: "inline-label" }, STRINGS.playbackSpeed), speed);

  let captions = null;
  const sheet = typeof CSSStyleSheet === "function" && "adoptedStyleSheets" in document ? new CSSStyleSheet() : null;
  const colourCues = (list) => {
    if (!sheet) return;
    const rules = [...list.values()].map((s) => {
      const n = Number(String(s.cls).replace("spk-", "")) || 0;
      return `::cue(v[voice="${CSS.escape(voiceName(s.name || s.label || s.id))}"]) { color: ${CUE_COLOURS[n % 8]}; }`;
    });
    sheet.replaceSync(rules.join("\n"));
    if (!document.adoptedStyleSheets.includes(sheet)) document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  };
  const addTrack = () => {
    const showing = !captions || captions.track.mode !== "hidden";
    captions?.remove();
    captions = el("track", {
      kind: "captions", label: STRINGS.captions, srclang: language || false, default: showing,
      // A new element loads the export afresh (API answers are Cache-Control: no-store).
      src: `/api/files/${fileId}/export?format=vtt`,
    });
    media.append(captions);
    captions.track.mode = showing ? "showing" : "hidden";
    toggle.checked = showing;
  };
  const toggle = el("input", { type: "checkbox", id: "player-captions", checked: true, "data-control": "captions" });
  toggle.addEventListener("change", () => { if (captions) captions.track.mode = toggle.checked ? "showing" : "hidden"; });
  if (isVideo) {
    bar.append(el("label", { class: "check" }, toggle, STRINGS.captionsShow));
    colourCues(speakers);
    addTrack();
  }

  keyTarget.player = {
    media,
    setSpeed,
    toggleCaptions: () => {
      if (!captions) return false;
      toggle.checked = !toggle.checked;
      toggle.dispatchEvent(new Event("change"));
      return true;
    },
  };
  return {
    node: bar,
    speakersChanged: (list) => {
      if (!isVideo) return;
      colourCues(list);
      addTrack();
    },
  };
}
