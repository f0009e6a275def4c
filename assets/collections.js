// Collections: list and create; one collection: rename, delete, add/remove files, share with a
// username as viewer or editor, remove members.

import { STRINGS } from "./strings.js";
import { api, announce, attempt, el, errorBox, field, select } from "./lib.js";
import { filters } from "./files.js";

export async function showCollections(ctx) {
  const { collections } = await api("GET", "/api/collections");
  const error = errorBox();
  const name = el("input", { name: "name", required: true, maxlength: "200", autocomplete: "off" });
  const description = el("input", { name: "description", autocomplete: "off" });
  const create = el("button", { type: "submit" }, STRINGS.createCollection);
  const form = el("form", {
    class: "stack",
    onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        const made = await api("POST", "/api/collections", { name: name.value.trim(), description: description.value.trim() });
        announce(STRINGS.saved);
        ctx.navigate(`#/collections/${encodeURIComponent(made.id)}`);
      }, error, create);
    },
  }, field(STRINGS.collectionName, name), field(STRINGS.description, description), create, error);
  const list = collections.length
    ? el("ul", { class: "cards" }, ...collections.map((c) => el("li", {},
      el("a", { href: `#/collections/${encodeURIComponent(c.id)}` }, c.name), " ",
      el("span", { class: "muted small" }, `${STRINGS.fileCount(c.file_count)} · ${c.role}`),
      c.description ? el("p", { class: "muted" }, c.description) : null)))
    : el("p", { class: "muted" }, STRINGS.noCollections);
  return [el("h2", {}, STRINGS.collectionsHeading), list,
    el("section", { "aria-labelledby": "new-collection" }, el("h3", { id: "new-collection" }, STRINGS.newCollection), form)];
}

export async function showCollection(ctx, cid) {
  const id = encodeURIComponent(cid);
  const collection = await api("GET", `/api/collections/${id}`);
  const isOwner = collection.role === "owner";
  const error = errorBox();
  const back = el("a", { href: "#/collections", class: "back" }, `← ${STRINGS.backToCollections}`);
  const showInList = el("button", {
    type: "button", class: "link",
    onclick: () => { Object.assign(filters, { status: "", tag: "", scope: "all", collection: cid }); ctx.navigate("#/files"); },
  }, STRINGS.showFiles);

  const nodes = [back, el("h2", {}, collection.name)];
  if (collection.description) nodes.push(el("p", { class: "muted" }, collection.description));
  nodes.push(el("p", {}, el("span", { class: "muted" }, `${STRINGS.role}: ${collection.role} · ${STRINGS.fileCount(collection.file_count)} `), showInList), error);

  // Files
  const fileRows = (collection.files || []).map((f) => el("li", {},
    f.status === "completed" ? el("a", { href: `#/file/${encodeURIComponent(f.id)}` }, f.filename) : el("span", {}, f.filename),
    " ", el("span", { class: "muted small" }, STRINGS.statusNames[f.status] || f.status), " ",
    isOwner ? el("button", {
      type: "button", class: "link", "aria-label": STRINGS.removeFromCollection(f.filename),
      onclick: (e) => attempt(async () => {
        await api("DELETE", `/api/collections/${id}/files/${encodeURIComponent(f.id)}`);
        ctx.refresh();
      }, error, e.currentTarget),
    }, STRINGS.remove) : null));
  const filesSection = el("section", { "aria-labelledby": "collection-files" },
    el("h3", { id: "collection-files" }, STRINGS.collectionFiles),
    fileRows.length ? el("ul", { class: "plain-list" }, ...fileRows) : el("p", { class: "muted" }, STRINGS.collectionEmpty));
  if (isOwner) {
    // Only the caller's own files can go in (the owner shares them through the collection).
    const own = await api("GET", "/api/files?per_page=200&scope=own").then((r) => r.items).catch(() => []);
    const inside = new Set((collection.files || []).map((f) => f.id));
    const candidates = own.filter((f) => !inside.has(f.id));
    if (candidates.length) {
      const choice = select({ name: "file" }, candidates.map((f) => [f.id, f.filename]), candidates[0].id);
      const add = el("button", { type: "submit", class: "small" }, STRINGS.addToCollection);
      filesSection.append(el("form", {
        class: "inline",
        onsubmit: (event) => {
          event.preventDefault();
          attempt(async () => {
            await api("PUT", `/api/collections/${id}/files/${encodeURIComponent(choice.value)}`);
            announce(STRINGS.saved);
            ctx.refresh();
          }, error, add);
        },
      }, field(STRINGS.addFile, choice), add));
    }
  }
  nodes.push(filesSection);

  // Members and sharing
  const members = collection.members || [];
  const membersSection = el("section", { "aria-labelledby": "collection-members" },
    el("h3", { id: "collection-members" }, STRINGS.members),
    members.length ? el("ul", { class: "plain-list members" }, ...members.map((m) => el("li", {},
      el("strong", {}, m.username), " ", el("span", { class: "muted small" }, m.role), " ",
      isOwner ? el("button", {
        type: "button", class: "link", "aria-label": STRINGS.removeMember(m.username),
        onclick: (e) => attempt(async () => {
          await api("DELETE", `/api/collections/${id}/shares/${encodeURIComponent(m.user_id)}`);
          ctx.refresh();
        }, error, e.currentTarget),
      }, STRINGS.remove) : null))) : el("p", { class: "muted" }, STRINGS.noMembers));
  if (isOwner) {
    const username = el("input", { name: "username", required: true, autocomplete: "off" });
    const role = select({ name: "role" }, Object.entries(STRINGS.roles), "viewer");
    const share = el("button", { type: "submit", class: "small" }, STRINGS.shareButton);
    membersSection.append(el("form", {
      class: "inline",
      onsubmit: (event) => {
        event.preventDefault();
        attempt(async () => {
          await api("PUT", `/api/collections/${id}/shares`, { username: username.value.trim(), role: role.value });
          announce(STRINGS.saved);
          ctx.refresh();
        }, error, share);
      },
    }, field(STRINGS.shareWith, username), field(STRINGS.shareRole, role), share));
  }
  nodes.push(membersSection);

  // Rename and delete
  if (isOwner) {
    const name = el("input", { name: "name", value: collection.name, required: true, autocomplete: "off" });
    const description = el("input", { name: "description", value: collection.description || "", autocomplete: "off" });
    const exempt = el("input", { type: "checkbox", name: "retention_exempt" });
    exempt.checked = Boolean(collection.retention_exempt);
    const save = el("button", { type: "submit", class: "small" }, STRINGS.saveCollection);
    const remove = el("button", {
      type: "button", class: "danger small",
      onclick: (e) => attempt(async () => {
        if (!window.confirm(STRINGS.confirmDelete(collection.name))) return;
        await api("DELETE", `/api/collections/${id}`);
        if (filters.collection === cid) filters.collection = "";
        ctx.navigate("#/collections");
      }, error, e.currentTarget),
    }, STRINGS.delete);
    nodes.push(el("section", { "aria-labelledby": "collection-edit" },
      el("h3", { id: "collection-edit" }, STRINGS.edit),
      el("form", {
        class: "stack",
        onsubmit: (event) => {
          event.preventDefault();
          attempt(async () => {
            await api("PATCH", `/api/collections/${id}`, { name: name.value.trim(), description: description.value.trim(), retention_exempt: exempt.checked });
            announce(STRINGS.saved);
            ctx.refresh();
          }, error, save);
        },
      }, field(STRINGS.collectionName, name), field(STRINGS.description, description),
      el("label", {}, exempt, " ", STRINGS.retentionExempt), el("div", {}, save, " ", remove))));
  }
  return nodes;
}
