// The audit log for administrators: filters (user, action prefix, from, to), newest first,
// paged, and a CSV export of the same filters.

import { STRINGS } from "./strings.js";
import { api, attempt, el, errorBox, field, formatDate } from "./lib.js";

const PER_PAGE = 50;

function dayStart(value) {
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? String(Math.floor(ms / 1000)) : null;
}

export async function showAudit() {
  const error = errorBox();
  const user = el("input", { name: "audit_user", autocomplete: "off" });
  const action = el("input", { name: "audit_action", autocomplete: "off", placeholder: STRINGS.auditActionPlaceholder });
  const since = el("input", { name: "audit_since", type: "date" });
  const until = el("input", { name: "audit_until", type: "date" });
  const results = el("div", { "data-view": "audit-entries" });
  const exportLink = el("a", { class: "button-link", download: "audit.csv" }, STRINGS.auditExport);
  let page = 1;

  const filters = () => {
    const query = new URLSearchParams();
    if (user.value.trim()) query.set("user", user.value.trim());
    if (action.value.trim()) query.set("action", action.value.trim());
    const from = since.value && dayStart(since.value);
    if (from) query.set("since", from);
    const to = until.value && dayStart(until.value);
    if (to) query.set("until", String(Number(to) + 86_399));
    return query;
  };

  const load = async () => {
    const query = filters();
    exportLink.setAttribute("href", `/api/admin/audit.csv?${query}`);
    query.set("page", String(page));
    query.set("per_page", String(PER_PAGE));
    const data = await api("GET", `/api/admin/audit?${query}`);
    const pager = el("p", { class: "pager" },
      el("button", { type: "button", class: "secondary small", disabled: page <= 1, onclick: () => { page -= 1; attempt(load, error); } }, STRINGS.auditNewer),
      " ", el("span", {}, STRINGS.auditPage(page)), " ",
      el("button", { type: "button", class: "secondary small", disabled: !data.has_more, onclick: () => { page += 1; attempt(load, error); } }, STRINGS.auditOlder));
    if (!data.entries.length) {
      results.replaceChildren(el("p", { class: "muted" }, STRINGS.auditEmpty), pager);
      return;
    }
    results.replaceChildren(el("div", { class: "table-wrap" }, el("table", { class: "audit" },
      el("thead", {}, el("tr", {}, ...[STRINGS.auditTime, STRINGS.auditActor, STRINGS.auditAction, STRINGS.auditTarget, STRINGS.auditAddress, STRINGS.detail]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, ...data.entries.map((e) => el("tr", { "data-audit": e.action },
        el("td", {}, formatDate(e.time)), el("td", { class: "name" }, e.actor_name || e.actor_id || ""),
        el("td", {}, el("code", {}, e.action)), el("td", { class: "name" }, e.target || ""),
        el("td", {}, e.ip || ""), el("td", { class: "name" }, e.detail || "")))))), pager);
  };

  const apply = el("button", { type: "submit" }, STRINGS.auditFilter);
  const form = el("form", {
    class: "inline",
    onsubmit: (event) => { event.preventDefault(); page = 1; attempt(load, error, apply); },
  }, field(STRINGS.auditUser, user), field(STRINGS.auditActionPrefix, action), field(STRINGS.auditSince, since),
  field(STRINGS.auditUntil, until), apply, " ", exportLink);
  await load();
  return [el("h2", {}, STRINGS.auditHeading), form, error, results];
}
