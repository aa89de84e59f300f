import { api } from "../api.js";
import { collectionPicker, currentCollection } from "../collections.js";
import { drawFaces, loadBitmap } from "../draw.js";
import { el, fileInput, fmt, showError } from "../dom.js";

export async function render(main) {
  const out = el("div", { id: "search-result" });
  const canvas = el("canvas", { class: "photo", id: "search-canvas" });
  const picker = await collectionPicker(() => {});
  const form = el("form", { class: "row", id: "search-form" }, ...fileInput("search-file", "Photo"),
    el("button", { type: "submit", id: "search-run", text: "Who is this?" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = document.getElementById("search-file").files[0];
    const coll = currentCollection();
    if (!file || !coll) return showError(out, "choose a collection and a photo");
    const fd = new FormData();
    fd.append("image", file);
    out.replaceChildren(el("p", { class: "muted", text: "searching…" }));
    try {
      const res = await api.post(`/v1/collections/${encodeURIComponent(coll)}/search`, { form: fd });
      const labels = res.faces.map((f) => (f.identity ? (f.identity.name ?? `person ${f.identity.person_id}`) : "unknown"));
      drawFaces(canvas, await loadBitmap(file), res.faces.map((f) => f.face), labels);
      out.replaceChildren(el("table", { id: "search-table" },
        el("thead", {}, el("tr", {}, ...["#", "identity", "best score", "other candidates"].map((t) => el("th", { text: t })))),
        el("tbody", {}, res.faces.map((f, i) => el("tr", {},
          el("td", { text: String(i + 1) }),
          el("td", { class: f.identity ? "ok identity" : "identity", text: labels[i] }),
          el("td", { text: f.matches.length ? fmt(f.matches[0].score) : "–" }),
          el("td", { text: f.matches.slice(1, 4).map((m) => `${m.name ?? m.person_id} ${fmt(m.score, 2)}`).join(", ") || "–" }))))));
    } catch (err) { showError(out, err); }
  });
  main.append(el("section", { class: "card" }, el("h2", { text: "Search" }), picker, form, out, canvas));
}
