// The TOTP second factor in the web UI: the code prompt of the second sign-in step, and the
// setup / removal section (on the account page, and alone when the site requires it before
// anything else).

import { STRINGS } from "./strings.js";
import { api, attempt, el, errorBox, field } from "./lib.js";

/// The second sign-in step: a TOTP code, or a recovery code (letters make it one).
export function totpPrompt(challenge, onSignedIn) {
  const error = errorBox();
  const code = el("input", { name: "totp_code", autocomplete: "one-time-code", required: true, maxlength: "16", inputmode: "text" });
  const submit = el("button", { type: "submit" }, STRINGS.verify);
  const form = el("form", {
    class: "stack",
    onsubmit: (event) => {
      event.preventDefault();
      const typed = code.value.trim();
      const body = /[a-z]/i.test(typed) ? { challenge, recovery_code: typed } : { challenge, code: typed };
      attempt(async () => onSignedIn(await api("POST", "/api/auth/login/totp", body)), error, submit);
    },
  }, field(STRINGS.totpCode, code, STRINGS.totpCodeHint), submit, error);
  return { form, focus: () => code.focus() };
}

/// Setup (secret, otpauth URI, confirm with a code, recovery codes shown once) or removal.
export function totpSection(user, onEnabled) {
  const section = el("section", { "aria-labelledby": "totp-heading", "data-section": "totp" });
  const error = errorBox();
  const render = (enabled, extra = []) => {
    section.replaceChildren(el("h3", { id: "totp-heading" }, STRINGS.totpHeading),
      el("p", { class: "muted", "data-totp-state": enabled ? "on" : "off" }, enabled ? STRINGS.totpOn : STRINGS.totpOff),
      ...extra, error);
  };
  const startButton = () => el("button", {
    type: "button",
    onclick: (e) => attempt(async () => {
      const setup = await api("POST", "/api/account/totp/setup");
      const code = el("input", { name: "totp_confirm", autocomplete: "one-time-code", inputmode: "numeric", required: true, maxlength: "7" });
      const confirm = el("button", { type: "submit" }, STRINGS.totpEnable);
      const form = el("form", {
        class: "stack",
        onsubmit: (event) => {
          event.preventDefault();
          attempt(async () => {
            const done = await api("POST", "/api/account/totp/confirm", { code: code.value.trim() });
            const codes = el("ul", { class: "recovery-codes" }, ...done.recovery_codes.map((c) => el("li", {}, el("code", {}, c))));
            render(true, [el("p", { role: "status" }, STRINGS.totpRecoveryShownOnce), codes,
              onEnabled ? el("button", { type: "button", onclick: () => onEnabled() }, STRINGS.continueToApp) : removeForm()]);
          }, error, confirm);
        },
      },
      el("p", {}, STRINGS.totpScan),
      setup.qr_svg ? el("img", { class: "totp-qr", alt: STRINGS.totpQrAlt, width: 240, height: 240,
        src: "data:image/svg+xml;charset=utf-8," + encodeURIComponent(setup.qr_svg) }) : null,
      el("p", {}, STRINGS.totpSecret, " ", el("code", { "data-totp-secret": "" }, setup.secret)),
      el("p", { class: "small" }, el("a", { href: setup.otpauth_uri }, STRINGS.totpOpenApp)),
      field(STRINGS.totpCode, code), confirm);
      render(false, [form]);
      code.focus();
    }, error, e.currentTarget),
  }, STRINGS.totpSetUp);
  const removeForm = () => {
    const password = el("input", { type: "password", name: "totp_password", autocomplete: "current-password", required: true });
    const remove = el("button", { type: "submit", class: "secondary" }, STRINGS.totpRemove);
    return el("form", {
      class: "stack",
      onsubmit: (event) => {
        event.preventDefault();
        attempt(async () => {
          await api("DELETE", "/api/account/totp", { password: password.value });
          render(false, [startButton()]);
        }, error, remove);
      },
    }, field(STRINGS.currentPassword, password), remove);
  };
  if (user.source && user.source !== "local") {
    render(false, [el("p", {}, STRINGS.totpDirectory)]);
  } else if (user.totp_enabled) {
    render(true, [removeForm()]);
  } else {
    render(false, [startButton()]);
  }
  return section;
}
