// Administration: users (create, disable, role, reset password), the job queue (retry,
// cancel), system health from /api/ready and, when the server has it, /api/admin/status.

import { STRINGS } from "./strings.js";
import { api, announce, attempt, el, errorBox, field, formatDate, formatSize, formatTime, select, state } from "./lib.js";

export async function showAdmin(ctx) {
  const [users, jobs] = await Promise.all([api("GET", "/api/admin/users"), api("GET", "/api/admin/jobs")]);
  const names = new Map(users.map((u) => [u.id, u.username]));
  return [
    el("h2", {}, STRINGS.adminHeading),
    usersSection(ctx, users),
    jobsSection(ctx, jobs, names),
    await healthSection(),
    await statusSection(),
  ];
}

function usersSection(ctx, users) {
  const error = errorBox();
  const rows = users.map((u) => {
    const self = u.id === state.user.id;
    const patch = (body) => api("PATCH", `/api/admin/users/${encodeURIComponent(u.id)}`, body);
    const role = select({ name: "role", "aria-label": STRINGS.roleFor(u.username), disabled: self },
      Object.entries(STRINGS.roleNames), u.role);
    role.addEventListener("change", () => attempt(async () => { await patch({ role: role.value }); announce(STRINGS.saved); }, error)
      .then((ok) => { if (!ok) role.value = u.role; else u.role = role.value; }));
    const actions = el("td", { class: "actions" });
    if (!self) {
      actions.append(el("button", {
        type: "button", class: "link", "aria-label": `${u.disabled ? STRINGS.enable : STRINGS.disable} ${u.username}`,
        onclick: (e) => attempt(async () => { await patch({ disabled: !u.disabled }); ctx.refresh(); }, error, e.currentTarget),
      }, u.disabled ? STRINGS.enable : STRINGS.disable), " ");
    }
    actions.append(el("button", {
      type: "button", class: "link", "aria-label": `${STRINGS.resetPassword}: ${u.username}`,
      onclick: () => {
        const input = el("input", { type: "password", autocomplete: "new-password", minlength: "8", required: true });
        const save = el("button", { type: "submit", class: "small" }, STRINGS.save);
        actions.replaceChildren(el("form", {
          class: "inline",
          onsubmit: (event) => {
            event.preventDefault();
            attempt(async () => {
              await api("POST", `/api/admin/users/${encodeURIComponent(u.id)}/password`, { password: input.value });
              announce(STRINGS.saved);
              ctx.refresh();
            }, error, save);
          },
        }, field(STRINGS.resetPasswordFor(u.username), input), save,
        el("button", { type: "button", class: "link", onclick: () => ctx.refresh() }, STRINGS.cancel)));
        input.focus();
      },
    }, STRINGS.resetPassword));
    return el("tr", { "data-user": u.username }, el("td", { class: "name" }, u.username), el("td", {}, role),
      el("td", {}, u.disabled ? STRINGS.disabled : STRINGS.enabled), el("td", {}, formatDate(u.created_at)), actions);
  });
  const username = el("input", { name: "new_username", required: true, autocomplete: "off" });
  const password = el("input", { name: "new_password", type: "password", required: true, minlength: "8", autocomplete: "new-password" });
  const role = select({ name: "new_role" }, Object.entries(STRINGS.roleNames), "user");
  const create = el("button", { type: "submit" }, STRINGS.createUser);
  const form = el("form", {
    class: "inline",
    onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        const made = await api("POST", "/api/admin/users", { username: username.value.trim(), password: password.value, role: role.value });
        announce(STRINGS.userCreated(made.username));
        ctx.refresh();
      }, error, create);
    },
  }, field(STRINGS.username, username), field(STRINGS.password, password), field(STRINGS.roleColumn, role), create);
  return el("section", { "aria-labelledby": "users-heading", "data-view": "admin-users" },
    el("h3", { id: "users-heading" }, STRINGS.usersHeading), error,
    el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, STRINGS.username), el("th", {}, STRINGS.roleColumn), el("th", {}, STRINGS.status),
        el("th", {}, STRINGS.created), el("th", {}, el("span", { class: "visually-hidden" }, STRINGS.actions)))),
      el("tbody", {}, ...rows))),
    el("h4", {}, STRINGS.newUser), form);
}

function jobsSection(ctx, jobs, names) {
  const error = errorBox();
  const items = [...(jobs.items || [])].sort((a, b) => (b.updated_at || 0) - (a.updated_at || 0));
  const rows = items.map((j) => {
    const id = encodeURIComponent(j.file_id);
    const actions = el("td", { class: "actions" });
    const act = (label, path) => el("button", {
      type: "button", class: "link", "aria-label": `${label} ${j.file_id}`,
      onclick: (e) => attempt(async () => { await api("POST", `/api/admin/jobs/${id}/${path}`); ctx.refresh(); }, error, e.currentTarget),
    }, label);
    if (j.state === "queued" || j.state === "running") actions.append(act(STRINGS.cancel, "cancel"));
    if (j.state === "failed" || j.state === "cancelled") actions.append(act(STRINGS.retry, "retry"));
    return el("tr", { "data-job": j.file_id },
      el("td", { class: "name" }, j.filename ? el("span", {}, j.filename) : el("code", {}, j.file_id.slice(0, 8)), " ", el("span", { class: "muted small" }, j.owner_username || names.get(j.owner_id) || "")),
      el("td", {}, j.state, j.error ? el("div", { class: "error small" }, j.error) : null),
      el("td", {}, j.stage || STRINGS.none, " ", el("progress", { max: "100", value: String(Math.round((j.progress || 0) * 100)), "aria-label": `${STRINGS.progress} ${j.file_id}` })),
      el("td", {}, String(j.attempts ?? 0)), el("td", {}, formatDate(j.updated_at)), actions);
  });
  return el("section", { "aria-labelledby": "jobs-heading", "data-view": "admin-jobs" },
    el("h3", { id: "jobs-heading" }, STRINGS.jobsHeading),
    jobs.counts ? el("p", { class: "muted" }, STRINGS.jobCounts(jobs.counts)) : null, error,
    rows.length ? el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ...[STRINGS.jobFile, STRINGS.jobState, STRINGS.stage, STRINGS.attempts, STRINGS.updated].map((h) => el("th", {}, h)),
        el("th", {}, el("span", { class: "visually-hidden" }, STRINGS.actions)))),
      el("tbody", {}, ...rows))) : el("p", { class: "muted" }, STRINGS.noJobs));
}

function checksTable(checks) {
  return el("div", { class: "table-wrap" }, el("table", { class: "checks" },
    el("thead", {}, el("tr", {}, el("th", {}, STRINGS.check), el("th", {}, STRINGS.status), el("th", {}, STRINGS.detail))),
    el("tbody", {}, ...checks.map((c) => el("tr", { "data-check": c.name },
      el("td", {}, c.name), el("td", { class: c.ok ? "ok" : "error" }, c.ok ? STRINGS.checkOk : STRINGS.checkFailing),
      el("td", { class: "name" }, c.detail || ""))))));
}

async function healthSection() {
  const section = el("section", { "aria-labelledby": "health-heading", "data-view": "admin-health" },
    el("h3", { id: "health-heading" }, STRINGS.healthHeading));
  try {
    const ready = await api("GET", "/api/ready");
    section.append(checksTable(ready.checks || []));
  } catch (e) {
    // 503 still carries the checks: show which one fails.
    if (e.data && Array.isArray(e.data.checks)) section.append(el("p", { class: "error", role: "alert" }, e.message), checksTable(e.data.checks));
    else section.append(el("p", { class: "error", role: "alert" }, e.message));
  }
  return section;
}

async function statusSection() {
  const section = el("section", { "aria-labelledby": "status-heading", "data-view": "admin-status" },
    el("h3", { id: "status-heading" }, STRINGS.statusHeading));
  let status;
  try {
    status = await api("GET", "/api/admin/status", undefined, { feature: "admin-status" });
  } catch (e) {
    section.append(el("p", { class: "muted" }, e.routeMissing ? STRINGS.adminStatusUnavailable : e.message));
    return section;
  }
  const rows = [];
  if (status.version) rows.push([STRINGS.version, status.version]);
  if (Number.isFinite(status.uptime_secs)) rows.push([STRINGS.uptime, formatTime(status.uptime_secs)]);
  const provider = status.execution_provider || (status.runtime && (status.runtime.provider || (status.runtime.loaded ? null : STRINGS.modelNotLoaded)));
  if (provider) rows.push([STRINGS.executionProvider, String(provider)]);
  if (status.disk) {
    const total = status.disk.total_bytes ? ` / ${formatSize(status.disk.total_bytes)}` : "";
    rows.push([STRINGS.diskFree, `${formatSize(status.disk.free_bytes)}${total}`]);
    if (Number.isFinite(status.disk.blob_bytes)) rows.push([STRINGS.mediaStored, `${formatSize(status.disk.blob_bytes)} (${status.disk.blob_files})`]);
  }
  if (status.jobs) rows.push([STRINGS.jobsHeading, STRINGS.jobCounts({ queued: 0, running: 0, done: 0, failed: 0, cancelled: 0, ...status.jobs })]);
  section.append(el("dl", { class: "stats" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
  if (Array.isArray(status.models) && status.models.length) {
    section.append(el("h4", {}, STRINGS.models), el("ul", { class: "plain-list" }, ...status.models.map((m) =>
      el("li", {}, typeof m === "string" ? m : [m.name, m.kind ? ` (${m.kind})` : null, m.size_bytes ? ` ${formatSize(m.size_bytes)}` : null, Array.isArray(m.problems) && m.problems.length ? ` — ${m.problems.join("; ")}` : null].filter(Boolean).join("")))));
  }
  if (Array.isArray(status.checks)) section.append(checksTable(status.checks));
  return section;
}
