// A collection picker shared by the gallery pages (Search, People, Albums, Index jobs).
import { api } from "./api.js";
import { el } from "./dom.js";

let current = null;

export function currentCollection() { return current; }

export async function collectionPicker(onChange) {
  const select = el("select", { id: "collection" });
  const name = el("input", { id: "new-collection", placeholder: "new collection id", maxlength: "64" });
  const crops = el("input", { type: "checkbox", id: "new-collection-crops", checked: true });
  const make = el("button", { type: "button", id: "create-collection", text: "Create" });
  const status = el("span", { class: "muted" });
  async function reload(selected) {
    const res = await api.get("/v1/collections?limit=100");
    select.replaceChildren(...res.collections.map((c) => el("option", { value: c.id, text: `${c.id} (${c.counts.persons} people, ${c.counts.faces} faces)` })));
    if (selected) select.value = selected;
    else if (current && res.collections.some((c) => c.id === current)) select.value = current;
    current = select.value || null;
    if (current) onChange(current);
  }
  select.addEventListener("change", () => { current = select.value; onChange(current); });
  make.addEventListener("click", async () => {
    try {
      await api.post("/v1/collections", { json: { id: name.value.trim(), save_face_crops: crops.checked } });
      status.textContent = "created";
      await reload(name.value.trim());
      name.value = "";
    } catch (err) { status.textContent = `${err.message} (${err.code})`; }
  });
  const box = el("form", { class: "row", id: "collection-form" },
    el("label", { for: "collection", text: "Collection" }), select,
    name, el("label", {}, crops, " keep face crops"), make, status);
  box.addEventListener("submit", (ev) => ev.preventDefault());
  box.reload = reload;
  try { await reload(); } catch (err) { status.textContent = `${err.message} (${err.code})`; }
  return box;
}

export async function cropImage(collection, personId, faceId) {
  const blob = await api.blob(`/v1/collections/${encodeURIComponent(collection)}/persons/${personId}/faces/${faceId}/image`);
  return el("img", { class: "thumb", src: URL.createObjectURL(blob), alt: `face ${faceId}` });
}
