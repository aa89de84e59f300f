import { api } from "../api.js";
import { collectionPicker, cropImage, currentCollection } from "../collections.js";
import { el, showError } from "../dom.js";

const enc = encodeURIComponent;

// People found by clustering a photo library, with corrections (name, merge, move a face, not this person).
export async function render(main) {
  const msg = el("div", { id: "albums-msg" });
  const grid = el("div", { id: "albums", class: "grid" });
  const picker = await collectionPicker(() => refresh());
  const run = el("button", { type: "button", id: "cluster-run", text: "Group faces into people" });
  run.addEventListener("click", async () => {
    msg.replaceChildren(el("p", { class: "muted", text: "clustering…" }));
    try {
      const res = await api.post(`/v1/collections/${enc(currentCollection())}/clusters`, { json: {} });
      msg.replaceChildren(el("p", { class: "ok", id: "cluster-result", text: `${res.persons} people from ${res.faces} faces (${res.algorithm})` }));
      await refresh();
    } catch (err) { showError(msg, err); }
  });

  async function refresh() {
    const coll = currentCollection();
    if (!coll) return;
    try {
      const res = await api.get(`/v1/collections/${enc(coll)}/clusters`);
      const cards = [];
      for (const person of res.people) cards.push(await album(coll, person));
      grid.replaceChildren(...cards);
      if (!cards.length) grid.append(el("p", { class: "muted", text: "no people yet: index photos, then group them" }));
    } catch (err) { showError(grid, err); }
  }

  async function album(coll, p) {
    const label = p.name ?? `person ${p.id}`;
    const faces = [];
    for (const f of p.faces.slice(0, 12)) {
      const img = f.has_crop ? await cropImage(coll, p.id, f.id) : el("span", { class: "muted", text: `face ${f.id}` });
      img.title = "click: not this person";
      img.addEventListener("click", async () => {
        try { await api.post(`/v1/collections/${enc(coll)}/clusters/reject`, { json: { face_id: f.id, person_id: p.id } }); await refresh(); }
        catch (err) { showError(msg, err); }
      });
      faces.push(img);
    }
    const name = el("button", { type: "button", text: "Name", onclick: async () => {
      const value = prompt("Who is this?", p.name ?? "");
      if (!value) return;
      try { await api.patch(`/v1/collections/${enc(coll)}/persons/${p.id}`, { name: value }); await refresh(); }
      catch (err) { showError(msg, err); }
    } });
    const merge = el("button", { type: "button", text: "Same as…", onclick: async () => {
      const into = prompt(`Merge ${label} into which person id?`);
      if (!into) return;
      try { await api.post(`/v1/collections/${enc(coll)}/clusters/merge`, { json: { into: Number(into), others: [p.id] } }); await refresh(); }
      catch (err) { showError(msg, err); }
    } });
    return el("div", { class: "person album", "data-person-id": String(p.id) },
      el("strong", { class: "album-name", text: label }),
      el("div", { class: "muted", text: `${p.face_count} face(s)` }),
      el("div", { class: "grid" }, faces), el("div", { class: "row" }, name, merge));
  }

  main.append(el("section", { class: "card" }, el("h2", { text: "Albums" }), picker, run, msg, grid));
  await refresh();
}
