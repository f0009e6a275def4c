// OpenTranscribe web UI: the shell (header, navigation, hash router), first-run setup, sign-in
// and the WebSocket of live events. Pages live in their own modules.
// No inline script (CSP); every user-provided string is set with textContent, never innerHTML.

import { LANGUAGE, STRINGS } from "./strings.js";
import { api, el, errorBox, hooks, sessionEnded, state } from "./lib.js";
import { showFiles } from "./files.js";
import { showFile } from "./fileview.js";
import { showSearch } from "./search.js";
import { showCollection, showCollections } from "./collections.js";
import { showProfiles } from "./profiles.js";
import { showAccount } from "./account.js";
import { showAdmin } from "./admin.js";
import { showAudit } from "./audit.js";
import { notifyFromEvent } from "./notify.js";
import { applyTheme, displayControls } from "./prefs.js";
import { shortcutsButton } from "./shortcuts.js";

applyTheme();
document.documentElement.lang = LANGUAGE;
import { totpPrompt, totpSection } from "./totp.js";

const root = document.getElementById("app");

const ROUTES = [
  { name: "files", pattern: /^\/?(files)?$/, page: showFiles, nav: STRINGS.navFiles, href: "#/files" },
  { name: "file", pattern: /^\/file\/([^/]+)$/, page: showFile },
  { name: "search", pattern: /^\/search$/, page: showSearch, nav: STRINGS.navSearch, href: "#/search" },
  { name: "collections", pattern: /^\/collections$/, page: showCollections, nav: STRINGS.navCollections, href: "#/collections" },
  { name: "collection", pattern: /^\/collections\/([^/]+)$/, page: showCollection, navAs: "collections" },
  { name: "profiles", pattern: /^\/profiles$/, page: showProfiles, nav: STRINGS.navProfiles, href: "#/profiles" },
  { name: "account", pattern: /^\/account$/, page: showAccount, nav: STRINGS.navAccount, href: "#/account" },
  { name: "admin", pattern: /^\/admin$/, page: showAdmin, nav: STRINGS.navAdmin, href: "#/admin", admin: true },
  { name: "audit", pattern: /^\/audit$/, page: showAudit, nav: STRINGS.navAudit, href: "#/audit", admin: true },
];

/// Renders a page without the signed-in shell (setup, sign-in, fatal errors).
function renderBare(...nodes) {
  const main = el("main", { id: "content", tabindex: "-1", class: "bare" },
    el("div", { class: "bare-top" }, el("h1", {}, STRINGS.title), displayControls()), ...nodes);
  root.replaceChildren(main);
  return main;
}

function header(current) {
  const nav = el("nav", { "aria-label": STRINGS.navLabel });
  const list = el("ul", {});
  for (const route of ROUTES) {
    if (!route.nav || (route.admin && state.user?.role !== "admin")) continue;
    const active = current === route.name;
    list.append(el("li", {}, el("a", { href: route.href, "aria-current": active ? "page" : false }, route.nav)));
  }
  nav.append(list);
  const signOut = el("button", {
    class: "link",
    type: "button",
    onclick: async () => {
      try { await api("POST", "/api/auth/logout"); } catch { /* gone already: signed out either way */ }
      signedOut();
    },
  }, STRINGS.signOut);
  return el("header", {},
    el("a", { class: "brand", href: "#/files" }, STRINGS.title),
    nav,
    el("div", { class: "tools" }, displayControls(), shortcutsButton(),
      el("span", { class: "who" }, el("span", { class: "visually-hidden" }, STRINGS.signedInAs("")), state.user.username), signOut));
}

let navigation = 0;
/// Live events from the WebSocket go to the page being shown (set by each page).
const live = { handler: null };

/// Shows the page the location hash names. Pages get (context, ...captures) and return nodes.
async function route({ focus = true } = {}) {
  if (!state.user) return;
  const token = ++navigation;
  const raw = location.hash.replace(/^#/, "");
  const [path, query = ""] = raw.split("?");
  const params = new URLSearchParams(query);
  let found = ROUTES.find((r) => r.pattern.test(path));
  if (!found || (found.admin && state.user.role !== "admin")) found = ROUTES[0];
  const captures = path.match(found.pattern).slice(1).map((c) => c && decodeURIComponent(c));
  live.handler = null;
  const context = {
    params,
    stale: () => token !== navigation,
    onEvent: (fn) => { if (token === navigation) live.handler = fn; },
    navigate: (hash) => { if (location.hash === hash) route(); else location.hash = hash; },
    refresh: () => route({ focus: false }),
  };
  let nodes;
  try {
    nodes = await found.page(context, ...captures);
  } catch (e) {
    if (token !== navigation) return;
    if (sessionEnded(e)) { signedOut(); return; }
    const error = errorBox();
    error.textContent = e.routeMissing ? STRINGS.notAvailable : e.message;
    nodes = [error, el("button", { class: "link", type: "button", onclick: () => location.reload() }, STRINGS.reload)];
  }
  if (token !== navigation || !nodes) return;
  const main = el("main", { id: "content", tabindex: "-1" }, ...[nodes].flat());
  root.replaceChildren(header(found.navAs || found.name), main);
  const heading = main.querySelector("h2");
  document.title = heading ? `${heading.textContent} · ${STRINGS.title}` : STRINGS.title;
  if (focus && heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
  connectEvents();
}

/// The session ended (expired, signed out elsewhere): back to the sign-in form.
function signedOut() {
  state.csrf = null;
  state.user = null;
  live.handler = null;
  navigation++;
  if (socket) { const closing = socket; socket = null; closing.onclose = null; closing.close(); }
  showSignIn();
}
hooks.signedOut = signedOut;

function credentialsForm(heading, hint, buttonText, onSubmit, passwordKind = "current-password", extra = null) {
  const error = errorBox();
  const user = el("input", { name: "username", autocomplete: "username", required: true });
  const pass = el("input", { name: "password", type: "password", autocomplete: passwordKind, required: true, minlength: "8" });
  const submit = el("button", { type: "submit" }, buttonText);
  const form = el("form", {
    class: "stack",
    onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      submit.disabled = true;
      try { await onSubmit(user.value, pass.value); } catch (e) { error.textContent = e.message; }
      if (submit.isConnected) submit.disabled = false;
    },
  },
    el("label", {}, STRINGS.username, user),
    el("label", {}, STRINGS.password, pass),
    submit, error);
  renderBare(el("h2", {}, heading), hint ? el("p", { class: "muted" }, hint) : null, form, extra);
  document.title = `${heading} · ${STRINGS.title}`;
  user.focus();
}

/// A completed sign-in (password, second factor): the session, or the TOTP setup first.
async function signedIn(result) {
  state.csrf = result.csrf_token;
  state.user = result.user;
  if (result.totp_enrolment_required) { showEnrolment(result.user); return; }
  await route();
}

async function signIn(username, password) {
  const result = await api("POST", "/api/auth/login", { username, password });
  if (result.totp_required) {
    const prompt = totpPrompt(result.challenge, signedIn);
    renderBare(el("h2", {}, STRINGS.signInHeading), prompt.form);
    prompt.focus();
    return;
  }
  await signedIn(result);
}

/// The site requires TOTP and this account has none: only its setup is open.
function showEnrolment(user) {
  renderBare(el("h2", {}, STRINGS.totpHeading), el("p", {}, STRINGS.totpRequired),
    totpSection(user, () => route()));
}

async function showSignIn() {
  let providers = null;
  try { providers = await api("GET", "/api/auth/providers"); } catch { /* password sign-in only */ }
  const oidc = providers && providers.oidc
    ? el("p", {}, el("a", { class: "button-link", href: "/api/auth/oidc/start", "data-oidc": "" }, STRINGS.signInWith(providers.oidc.display_name)))
    : null;
  credentialsForm(STRINGS.signInHeading, "", STRINGS.signIn, signIn, "current-password", oidc);
}

function showSetup() {
  credentialsForm(STRINGS.setupHeading, STRINGS.setupHint, STRINGS.create, async (username, password) => {
    await api("POST", "/api/auth/register", { username, password });
    await signIn(username, password);
  }, "new-password");
}

let socket = null;

/// Live status over the WebSocket; reconnects after a drop while signed in.
function connectEvents() {
  if (socket || !state.user) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const current = new WebSocket(`${scheme}//${location.host}/api/ws`);
  socket = current;
  current.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    notifyFromEvent(event).catch(() => {});
    if (live.handler) live.handler(event);
  };
  current.onclose = () => {
    if (socket !== current) return;
    socket = null;
    setTimeout(connectEvents, 3000);
  };
}

window.addEventListener("hashchange", () => route());

// The skip link moves focus to the page content without touching the location (the router's).
const skip = document.getElementById("skip");
skip.textContent = STRINGS.skipToContent;
skip.addEventListener("click", (event) => {
  event.preventDefault();
  document.getElementById("content")?.focus();
});

async function start() {
  let me = null;
  try {
    me = await api("GET", "/api/auth/me");
  } catch (e) {
    if (e.status !== 401) {
      const error = errorBox();
      error.textContent = e.message;
      renderBare(error, el("button", { class: "link", type: "button", onclick: () => location.reload() }, STRINGS.reload));
      return;
    }
  }
  if (me) {
    state.user = me;
    state.csrf = me.csrf_token || null;
    if (me.totp_enrolment_required) { showEnrolment(me); return; }
    await route({ focus: false });
    return;
  }
  // Not signed in: offer setup when there is no user yet, sign-in otherwise.
  try {
    const ready = await api("GET", "/api/auth/setup-needed");
    if (ready.setup_needed) { showSetup(); return; }
  } catch { /* fall through to sign-in */ }
  showSignIn();
}

start();
