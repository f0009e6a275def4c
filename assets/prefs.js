// Per-browser display preferences: the colour theme (system, light or dark; the CSS follows
// prefers-color-scheme unless one is chosen) and the UI language (strings.js), both kept in
// localStorage; plus the controls for them in the header and on the sign-in page.

import { LANGUAGE, LANGUAGES, STRINGS, saveLanguage, savedLanguage } from "./strings.js";
import { el, select } from "./lib.js";

const THEME_KEY = "ot-theme";
const THEMES = ["system", "light", "dark"];

export function savedTheme() {
  try {
    const theme = localStorage.getItem(THEME_KEY);
    return THEMES.includes(theme) ? theme : "system";
  } catch { return "system"; }
}

/// Applies a theme to the document: `data-theme` on <html> (absent for the system's choice).
export function applyTheme(theme = savedTheme()) {
  const root = document.documentElement;
  if (theme === "light" || theme === "dark") root.dataset.theme = theme;
  else delete root.dataset.theme;
}

function saveTheme(theme) {
  try {
    if (theme === "system") localStorage.removeItem(THEME_KEY); else localStorage.setItem(THEME_KEY, theme);
  } catch { /* storage off: the choice lasts for this page only */ }
  applyTheme(theme);
}

/// The theme and language selects, each with its own (visually hidden) label.
export function displayControls() {
  const theme = select({ id: "pref-theme", class: "compact" },
    THEMES.map((t) => [t, STRINGS.themes[t]]), savedTheme());
  theme.addEventListener("change", () => saveTheme(theme.value));
  const language = select({ id: "pref-language", class: "compact", lang: LANGUAGE },
    LANGUAGES.map(([code, name]) => [code, name]), savedLanguage() || LANGUAGE);
  for (const option of language.options) option.lang = option.value;
  language.addEventListener("change", () => {
    saveLanguage(language.value);
    location.reload();
  });
  return el("div", { class: "prefs", role: "group", "aria-label": STRINGS.settings },
    el("label", { for: "pref-theme", class: "visually-hidden" }, STRINGS.theme), theme,
    el("label", { for: "pref-language", class: "visually-hidden" }, STRINGS.uiLanguage), language);
}
