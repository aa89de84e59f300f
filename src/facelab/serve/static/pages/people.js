import { api } from "../api.js";
import { collectionPicker, cropImage, currentCollection } from "../collections.js";
import { el, fileInput, showError } from "../dom.js";

const enc = encodeURIComponent;

export async function render(main) {
  const list = el("div", { id: "people-list", class: "grid" });
  const msg = el("div", { id: "people-msg" });
  const picker = await collectionPicker(() => refresh());
  const enroll = el("form", { class: "row", id: "enroll-form" },
    el("label", { for: "enroll-name", text: "Name" }), el("input", { id: "enroll-name", required: true, maxlength: "200" }),
    el("label", { for: "enroll-external", text: "External id" }), el("input", { id: "enroll-external", maxlength: "200" }),
    ...fileInput("enroll-files", "Photos (1–20)", true),
    el("button", { type: "submit", id: "enroll-run", text: "Enroll" }));
  enroll.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const coll = currentCollection();
    const files = document.getElementById("enroll-files").files;
    if (!coll || !files.length) return showError(msg, "choose a collection and photos");
    const fd = new FormData();
    fd.append("name", document.getElementById("enroll-name").value);
    const ext = document.getElementById("enroll-external").value.trim();
    if (ext) fd.append("external_id", ext);
    for (const f of files) fd.append("images", f);
    msg.replaceChildren(el("p", { class: "muted", text: "enrolling…" }));
    try {
      const res = await api.post(`/v1/collections/${enc(coll)}/persons`, { form: fd });
      const rejected = res.rejected.map((r) => `${r.image}: ${r.reasons.join(", ")}`).join("; ");
      msg.replaceChildren(el("p", { id: "enroll-result", class: "ok", text:
        `enrolled ${res.person.name} with ${res.face_ids.length} face(s)${rejected ? " — rejected " + rejected : ""}` }));
      enroll.reset();
      await refresh();
    } catch (err) {
      const details = (err.details && err.details.rejected) || [];
      showError(msg, err);
      if (details.length) msg.append(el("p", { class: "error", text: details.map((r) => `${r.image}: ${r.reasons.join(", ")}`).join("; ") }));
    }
  });

  async function refresh() {
    const coll = currentCollection();
    if (!coll) return list.replaceChildren(el("p", { class: "muted", text: "create a collection first" }));
    try {
      const res = await api.get(`/v1/collections/${enc(coll)}/persons?limit=100`);
      list.replaceChildren(...res.persons.map((p) => personCard(coll, p)));
      if (!res.persons.length) list.append(el("p", { class: "muted", text: "nobody yet" }));
    } catch (err) { showError(list, err); }
  }

  function personCard(coll, p) {
    const label = p.name ?? `person ${p.id}`;
    const faces = el("div", { class: "grid" });
    const rename = el("button", { type: "button", text: "Rename", onclick: async () => {
      const name = prompt("New name", p.name ?? "");
      if (name === null) return;
      try { await api.patch(`/v1/collections/${enc(coll)}/persons/${p.id}`, { name }); await refresh(); }
      catch (err) { showError(msg, err); }
    } });
    const merge = el("button", { type: "button", text: "Merge into…", onclick: async () => {
      const into = prompt(`Merge ${label} into which person id?`);
      if (!into) return;
      try { await api.post(`/v1/collections/${enc(coll)}/persons/${Number(into)}/merge`, { json: { others: [p.id] } }); await refresh(); }
      catch (err) { showError(msg, err); }
    } });
    const del = el("button", { type: "button", class: "delete-person", text: "Delete", onclick: async () => {
      if (!confirm(`Delete ${label} and all their face data?`)) return;
      try { await api.del(`/v1/collections/${enc(coll)}/persons/${p.id}`); await refresh(); }
      catch (err) { showError(msg, err); }
    } });
    const show = el("button", { type: "button", text: "Faces", onclick: async () => {
      try {
        const res = await api.get(`/v1/collections/${enc(coll)}/persons/${p.id}/faces`);
        const items = [];
        for (const f of res.faces) items.push(f.has_crop ? await cropImage(coll, p.id, f.id) : el("span", { class: "muted", text: `face ${f.id}` }));
        faces.replaceChildren(...items);
      } catch (err) { showError(faces, err); }
    } });
    return el("div", { class: "person", "data-person-id": String(p.id) },
      el("strong", { class: "person-name", text: label }),
      el("div", { class: "muted", text: `${p.face_count} face(s)${p.external_id ? " · " + p.external_id : ""}${p.kind === "cluster" ? " · unnamed" : ""}` }),
      el("div", { class: "row" }, show, rename, merge, del), faces);
  }

  main.append(el("section", { class: "card" }, el("h2", { text: "People" }), picker, enroll, msg, list));
  await refresh();
}
