// Keyboard shortcuts: `?` lists them in a dialog, `/` focuses the page's filter box, and the
// player keys (k/Space play or pause, j/l and the arrows skip 5 s, < and > change the speed,
// c toggles captions) act on the player of the file view. Keys typed into a text field,
// or pressed with Ctrl/Alt/Meta, are left alone.

import { STRINGS } from "./strings.js";
import { el } from "./lib.js";

export const SKIP_SECONDS = 5;
export const SPEEDS = [0.5, 0.75, 1, 1.25, 1.5, 1.75, 2];

/// The player the keys act on: set by the file view (`{ media, setSpeed, toggleCaptions }`).
export const keyTarget = { player: null };

let dialog = null;

export function openShortcuts() {
  if (!dialog || !dialog.isConnected) {
    dialog = el("dialog", { class: "shortcuts", "aria-labelledby": "shortcuts-heading" },
      el("h2", { id: "shortcuts-heading" }, STRINGS.shortcutsHeading),
      el("p", { class: "muted small" }, STRINGS.shortcutsHint),
      el("table", { class: "compact" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, STRINGS.shortcutKey), el("th", { scope: "col" }, STRINGS.shortcutAction))),
        el("tbody", {}, ...STRINGS.shortcuts.map(([keys, action]) => el("tr", {},
          el("td", {}, ...keys.split(", ").flatMap((k, i) => [i ? " " : null, el("kbd", {}, k)])), el("td", {}, action))))),
      el("form", { method: "dialog" }, el("button", { type: "submit", class: "secondary" }, STRINGS.close)));
    document.body.append(dialog);
  }
  if (!dialog.open) dialog.showModal();
}

/// A button that opens the list (for the header; `?` does the same).
export function shortcutsButton() {
  return el("button", {
    type: "button", class: "icon", title: STRINGS.shortcutsButton, "aria-label": STRINGS.shortcutsButton,
    "aria-keyshortcuts": "?", onclick: openShortcuts,
  }, "?");
}

const typing = (t) => t instanceof HTMLElement
  && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
// Elements whose own Space/arrow behaviour wins (buttons, words, sliders, the media controls).
const ownKeys = (t) => t instanceof HTMLElement
  && (/^(BUTTON|A|SUMMARY|AUDIO|VIDEO|CANVAS)$/.test(t.tagName) || t.getAttribute("role") === "button");

function playerKey(event, player) {
  const media = player.media;
  const skip = (by) => {
    const end = Number.isFinite(media.duration) ? media.duration : Infinity;
    media.currentTime = Math.min(Math.max(0, media.currentTime + by), end);
  };
  switch (event.key) {
    case "k":
    case " ":
      if (event.key === " " && ownKeys(event.target)) return false;
      if (media.paused) media.play()?.catch(() => {}); else media.pause();
      return true;
    case "j": skip(-SKIP_SECONDS); return true;
    case "l": skip(SKIP_SECONDS); return true;
    case "ArrowLeft":
    case "ArrowRight":
      if (ownKeys(event.target)) return false;
      skip(event.key === "ArrowLeft" ? -SKIP_SECONDS : SKIP_SECONDS);
      return true;
    case "<":
    case ">": {
      const at = SPEEDS.findIndex((s) => s >= media.playbackRate - 0.01);
      const next = SPEEDS[Math.min(SPEEDS.length - 1, Math.max(0, (at < 0 ? 2 : at) + (event.key === ">" ? 1 : -1)))];
      player.setSpeed(next);
      return true;
    }
    case "c": return player.toggleCaptions();
    default: return false;
  }
}

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  if (typing(event.target)) return;
  if (event.key === "?") { event.preventDefault(); openShortcuts(); return; }
  if (dialog?.open) return;
  if (event.key === "/") {
    const box = document.querySelector("[data-shortcut=filter]");
    if (box) { event.preventDefault(); box.focus(); }
    return;
  }
  const player = keyTarget.player;
  if (player && player.media.isConnected && playerKey(event, player)) event.preventDefault();
});
