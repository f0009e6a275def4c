// Speaker voice profiles: list, rename, delete. Hidden behind "not available" until the
// server has the routes.

import { STRINGS } from "./strings.js";
import { api, announce, attempt, el, errorBox, field, formatDate } from "./lib.js";

export async function showProfiles(ctx) {
  const heading = el("h2", {}, STRINGS.profilesHeading);
  let profiles;
  try {
    profiles = (await api("GET", "/api/profiles", undefined, { feature: "profiles" })).profiles || [];
  } catch (e) {
    if (e.routeMissing) return [heading, el("p", { class: "muted" }, STRINGS.profilesUnavailable)];
    throw e;
  }
  const error = errorBox();
  const rows = profiles.map((p) => {
    const nameCell = el("td", { class: "name" }, p.name);
    const actions = el("td", { class: "actions" });
    const showActions = () => actions.replaceChildren(
      el("button", {
        type: "button", class: "link", "aria-label": `${STRINGS.rename} ${p.name}`,
        onclick: () => {
          const input = el("input", { value: p.name, autocomplete: "off", required: true });
          const save = el("button", { type: "submit", class: "small" }, STRINGS.save);
          nameCell.replaceChildren(el("form", {
            class: "inline",
            onsubmit: (event) => {
              event.preventDefault();
              attempt(async () => {
                await api("PATCH", `/api/profiles/${encodeURIComponent(p.id)}`, { name: input.value.trim() }, { feature: "profiles" });
                announce(STRINGS.saved);
                ctx.refresh();
              }, error, save);
            },
          }, field(STRINGS.profileName, input), save,
          el("button", { type: "button", class: "link", onclick: () => nameCell.replaceChildren(p.name) }, STRINGS.cancel)));
          input.focus();
        },
      }, STRINGS.rename), " ",
      el("button", {
        type: "button", class: "link", "aria-label": `${STRINGS.delete} ${p.name}`,
        onclick: (e) => attempt(async () => {
          if (!window.confirm(STRINGS.confirmDelete(p.name))) return;
          await api("DELETE", `/api/profiles/${encodeURIComponent(p.id)}`, undefined, { feature: "profiles" });
          ctx.refresh();
        }, error, e.currentTarget),
      }, STRINGS.delete));
    showActions();
    const files = Array.isArray(p.files) ? p.files.length : (p.files || 0);
    return el("tr", {}, nameCell, el("td", {}, STRINGS.profileFiles(files)), el("td", {}, formatDate(p.created_at)), actions);
  });
  return [heading, el("p", { class: "muted" }, STRINGS.profilesHint), error,
    rows.length ? el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, STRINGS.profileName), el("th", {}, STRINGS.navFiles), el("th", {}, STRINGS.created),
        el("th", {}, el("span", { class: "visually-hidden" }, STRINGS.actions)))),
      el("tbody", {}, ...rows))) : el("p", { class: "muted" }, STRINGS.noProfiles)];
}
