// Account settings: change password, sign out everywhere, API tokens (create: shown once; list;
// revoke), the own retention rule with a preview of what it will delete, and notifications
// (browser and webhook, from notify.js).

import { STRINGS } from "./strings.js";
import { api, announce, attempt, el, errorBox, field, formatDate, hooks } from "./lib.js";
import { notificationsSection } from "./notify.js";
import { totpSection } from "./totp.js";

export async function showAccount(ctx) {
  const tokens = await api("GET", "/api/auth/tokens");

  // Password
  const pwError = errorBox();
  const pwDone = el("p", { class: "ok", role: "status" });
  const current = el("input", { type: "password", name: "current_password", autocomplete: "current-password", required: true });
  const next = el("input", { type: "password", name: "new_password", autocomplete: "new-password", required: true, minlength: "8" });
  const change = el("button", { type: "submit" }, STRINGS.changePassword);
  const passwordForm = el("form", {
    class: "stack",
    onsubmit: (event) => {
      event.preventDefault();
      pwDone.textContent = "";
      attempt(async () => {
        await api("POST", "/api/auth/password", { current_password: current.value, new_password: next.value });
        current.value = "";
        next.value = "";
        pwDone.textContent = STRINGS.passwordChanged;
      }, pwError, change);
    },
  }, field(STRINGS.currentPassword, current), field(STRINGS.newPassword, next), change, pwError, pwDone);
  const everywhere = el("button", {
    type: "button", class: "secondary",
    onclick: (e) => attempt(async () => {
      await api("POST", "/api/auth/logout-all");
      hooks.signedOut();
    }, pwError, e.currentTarget),
  }, STRINGS.signOutEverywhere);

  // Tokens
  const tokenError = errorBox();
  const revealed = el("div", { class: "revealed", role: "status" });
  const tokenName = el("input", { name: "token_name", required: true, maxlength: "100", autocomplete: "off" });
  const create = el("button", { type: "submit" }, STRINGS.createToken);
  const tokenForm = el("form", {
    class: "inline",
    onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        const made = await api("POST", "/api/auth/tokens", { name: tokenName.value.trim() });
        tokenName.value = "";
        await showTokens();
        const value = el("code", { class: "token", "data-token": "" }, made.token);
        const copy = el("button", {
          type: "button", class: "small secondary",
          onclick: async () => {
            try { await navigator.clipboard.writeText(made.token); announce(STRINGS.copied); } catch {
              // No clipboard (plain http, or refused): select the text so Ctrl+C works.
              const range = document.createRange();
              range.selectNodeContents(value);
              getSelection().removeAllRanges();
              getSelection().addRange(range);
            }
          },
        }, STRINGS.copy);
        revealed.replaceChildren(el("p", {}, STRINGS.tokenShownOnce), el("p", {}, value, " ", copy));
      }, tokenError, create);
    },
  }, field(STRINGS.tokenName, tokenName), create);
  const tokenList = el("div", {});
  const showTokens = async (list) => {
    const items = list || await api("GET", "/api/auth/tokens");
    if (!items.length) { tokenList.replaceChildren(el("p", { class: "muted" }, STRINGS.noTokens)); return; }
    tokenList.replaceChildren(el("div", { class: "table-wrap" }, el("table", { class: "tokens" },
      el("thead", {}, el("tr", {}, el("th", {}, STRINGS.tokenName), el("th", {}, STRINGS.created), el("th", {}, STRINGS.lastUsed),
        el("th", {}, el("span", { class: "visually-hidden" }, STRINGS.actions)))),
      el("tbody", {}, ...items.map((t) => el("tr", { "data-token-id": t.id },
        el("td", { class: "name" }, t.name), el("td", {}, formatDate(t.created_at)), el("td", {}, formatDate(t.last_used_at)),
        el("td", { class: "actions" }, el("button", {
          type: "button", class: "link", "aria-label": STRINGS.revokeToken(t.name),
          onclick: (e) => attempt(async () => {
            await api("DELETE", `/api/auth/tokens/${encodeURIComponent(t.id)}`);
            revealed.replaceChildren();
            announce(STRINGS.saved);
            await showTokens();
          }, tokenError, e.currentTarget),
        }, STRINGS.revoke))))))));
  };
  await showTokens(tokens);
  const retention = await retentionSection();
  const notifications = await notificationsSection();
  const me = await api("GET", "/api/auth/me");

  return [
    el("h2", {}, STRINGS.accountHeading),
    el("section", { "aria-labelledby": "password-heading" }, el("h3", { id: "password-heading" }, STRINGS.changePassword), passwordForm,
      el("p", {}, everywhere)),
    totpSection(me),
    el("section", { "aria-labelledby": "tokens-heading" }, el("h3", { id: "tokens-heading" }, STRINGS.tokensHeading),
      el("p", { class: "muted" }, STRINGS.tokensHint), tokenForm, tokenError, revealed, tokenList),
    retention,
    notifications,
  ];
}

async function retentionSection() {
  const error = errorBox();
  const days = (name) => el("input", { type: "number", name, min: "1", max: "36500", step: "1" });
  const media = days("media_days");
  const files = days("transcript_days");
  const summary = el("p", { class: "muted", role: "status" });
  const planned = el("div", { "data-view": "retention-preview" });
  const show = async (rule) => {
    media.value = rule.own?.media_days ?? "";
    files.value = rule.own?.transcript_days ?? "";
    summary.textContent = STRINGS.retentionEffective(rule.effective.media_days, rule.effective.transcript_days);
    const preview = await api("GET", "/api/retention/preview");
    planned.replaceChildren(...(preview.files.length ? [el("p", {}, STRINGS.retentionPlanned(preview.files.length)),
      el("ul", { class: "plain-list" }, ...preview.files.slice(0, 20).map((f) =>
        el("li", { "data-file": f.file_id }, `${f.filename}: ${STRINGS.retentionAction[f.action] || f.action}, ${formatDate(f.due_at)}`)))] : []));
  };
  const number = (input) => (input.value === "" ? null : Number(input.value));
  const save = el("button", { type: "submit" }, STRINGS.save);
  const form = el("form", {
    class: "inline",
    onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        const rule = await api("PUT", "/api/account/retention", { media_days: number(media), transcript_days: number(files) });
        await show(rule);
        announce(STRINGS.saved);
      }, error, save);
    },
  }, field(STRINGS.retentionMediaDays, media), field(STRINGS.retentionFileDays, files), save);
  await show(await api("GET", "/api/account/retention"));
  return el("section", { "aria-labelledby": "retention-heading", "data-view": "account-retention" },
    el("h3", { id: "retention-heading" }, STRINGS.retentionHeading),
    el("p", { class: "muted" }, STRINGS.retentionHint), form, error, summary, planned);
}
