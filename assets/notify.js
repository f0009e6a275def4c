// Notifications: browser notifications while a tab is open (opt-in, per browser, from the
// WebSocket's job events), and the account page's webhook settings and delivery history.

import { STRINGS } from "./strings.js";
import { api, announce, attempt, el, errorBox, field, formatDate, state } from "./lib.js";

const PREFERENCE = "ot-browser-notifications";

function supported() {
  return typeof window.Notification === "function";
}

function enabled() {
  return supported() && localStorage.getItem(PREFERENCE) === "on" && Notification.permission === "granted";
}

/// Called with every WebSocket event (the server sends only the signed-in user's files).
export async function notifyFromEvent(event) {
  if (!enabled() || !state.user) return;
  if (event.type !== "file.completed" && event.type !== "file.error") return;
  let name = event.file_id;
  try {
    name = (await api("GET", `/api/files/${encodeURIComponent(event.file_id)}`)).filename || name;
  } catch { /* the file may be gone already; its id will do */ }
  const done = event.type === "file.completed";
  const shown = new Notification(done ? STRINGS.notifyCompleted(name) : STRINGS.notifyFailed(name), {
    body: done ? STRINGS.notifyCompletedBody : (event.error || STRINGS.notifyFailedBody),
    tag: `ot-${event.file_id}`,
    icon: "/favicon.svg",
  });
  shown.onclick = () => {
    window.focus();
    location.hash = `#/file/${encodeURIComponent(event.file_id)}`;
    shown.close();
  };
}

/// The opt-in checkbox: asks the browser for permission when it is turned on.
function browserToggle() {
  const status = el("p", { class: "muted", role: "status" });
  const box = el("input", { type: "checkbox", name: "browser_notifications" });
  const describe = () => {
    if (!supported()) {
      box.disabled = true;
      status.textContent = STRINGS.notifyUnsupported;
    } else if (Notification.permission === "denied") {
      box.checked = false;
      box.disabled = true;
      status.textContent = STRINGS.notifyDenied;
    } else {
      box.checked = enabled();
      status.textContent = box.checked ? STRINGS.notifyOn : STRINGS.notifyOff;
    }
  };
  box.addEventListener("change", async () => {
    if (box.checked) {
      const permission = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
      localStorage.setItem(PREFERENCE, permission === "granted" ? "on" : "off");
    } else {
      localStorage.setItem(PREFERENCE, "off");
    }
    describe();
  });
  describe();
  return el("div", { class: "stack" }, el("label", { class: "check" }, box, " ", STRINGS.notifyToggle), status);
}

/// The account page's section: browser notifications, the webhook, its recent deliveries.
export async function notificationsSection() {
  const error = errorBox();
  const revealed = el("div", { class: "revealed", role: "status" });
  const url = el("input", { type: "url", name: "webhook_url", required: true, maxlength: "2048", autocomplete: "off", placeholder: STRINGS.webhookUrlPlaceholder });
  const secret = el("input", { type: "password", name: "webhook_secret", minlength: "16", maxlength: "256", autocomplete: "new-password" });
  const save = el("button", { type: "submit" }, STRINGS.webhookSave);
  const remove = el("button", { type: "button", class: "secondary" }, STRINGS.webhookRemove);
  const current = el("p", { class: "muted" });
  const history = el("div", {});

  const load = async () => {
    const found = await api("GET", "/api/account/webhook");
    const hook = found.url ? found : null;
    url.value = hook ? hook.url : "";
    remove.hidden = !hook;
    current.textContent = hook ? STRINGS.webhookCurrent(formatDate(hook.updated_at)) : STRINGS.webhookNone;
    const items = await api("GET", "/api/account/webhook/deliveries");
    if (!items.length) { history.replaceChildren(el("p", { class: "muted" }, STRINGS.webhookNoDeliveries)); return; }
    const attempts = (d) => d.attempts.map((a) => `${formatDate(a.at)}: ${a.status ?? a.error ?? ""}`).join("; ");
    const stateText = (d) => (STRINGS.webhookStates[d.state] || d.state)
      + (d.next_attempt_at ? ` (${STRINGS.webhookNext(formatDate(d.next_attempt_at))})` : "");
    const rows = items.map((d) => el("tr", { "data-delivery-id": d.id },
      el("td", {}, d.event), el("td", { class: "name" }, d.filename), el("td", {}, stateText(d)), el("td", {}, attempts(d))));
    const head = el("thead", {}, el("tr", {}, el("th", {}, STRINGS.webhookEvent), el("th", {}, STRINGS.webhookFile),
      el("th", {}, STRINGS.webhookState), el("th", {}, STRINGS.webhookAttempts)));
    history.replaceChildren(el("div", { class: "table-wrap" }, el("table", { class: "deliveries" }, head, el("tbody", {}, ...rows))));
  };

  const form = el("form", {
    class: "stack",
    onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        const body = { url: url.value.trim() };
        if (secret.value) body.secret = secret.value;
        const saved = await api("PUT", "/api/account/webhook", body);
        secret.value = "";
        revealed.replaceChildren();
        if (saved.secret) {
          revealed.replaceChildren(el("p", {}, STRINGS.webhookSecretShownOnce), el("p", {}, el("code", { class: "token" }, saved.secret)));
        }
        announce(STRINGS.saved);
        await load();
      }, error, save);
    },
  }, field(STRINGS.webhookUrl, url), field(STRINGS.webhookSecret, secret, STRINGS.webhookSecretHint), el("p", {}, save, " ", remove));
  remove.addEventListener("click", (e) => attempt(async () => {
    await api("DELETE", "/api/account/webhook");
    revealed.replaceChildren();
    announce(STRINGS.saved);
    await load();
  }, error, e.currentTarget));
  await load();

  return el("section", { "aria-labelledby": "notify-heading" },
    el("h3", { id: "notify-heading" }, STRINGS.notifyHeading),
    browserToggle(),
    el("h4", {}, STRINGS.webhookHeading),
    el("p", { class: "muted" }, STRINGS.webhookHint),
    current, form, error, revealed,
    el("h4", {}, STRINGS.webhookDeliveries), history);
}
