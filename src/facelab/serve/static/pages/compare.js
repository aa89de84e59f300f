import { api } from "../api.js";
import { drawFaces, loadBitmap } from "../draw.js";
import { el, fileInput, fmt, showError } from "../dom.js";

export async function render(main) {
  const out = el("div", { id: "compare-result" });
  const c1 = el("canvas", { class: "photo", id: "compare-a" });
  const c2 = el("canvas", { class: "photo", id: "compare-b" });
  const form = el("form", { class: "row", id: "compare-form" },
    ...fileInput("compare-source", "Photo A"), ...fileInput("compare-target", "Photo B"),
    el("button", { type: "submit", text: "Compare" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const a = document.getElementById("compare-source").files[0];
    const b = document.getElementById("compare-target").files[0];
    if (!a || !b) return showError(out, "choose two photos");
    const fd = new FormData();
    fd.append("source", a);
    fd.append("target", b);
    out.replaceChildren(el("p", { class: "muted", text: "working…" }));
    try {
      const r = await api.post("/v1/compare", { form: fd });
      drawFaces(c1, await loadBitmap(a), [r.source_face]);
      drawFaces(c2, await loadBitmap(b), [r.target_face]);
      const verdict = r.matched === null ? "no threshold known" : r.matched ? "same person" : "different people";
      out.replaceChildren(el("p", { id: "compare-verdict", class: r.matched ? "ok" : "", text:
        `similarity ${fmt(r.similarity, 4)} (threshold ${fmt(r.threshold, 3)}): ${verdict}` }));
    } catch (err) { showError(out, err); }
  });
  main.append(el("section", { class: "card" }, el("h2", { text: "Compare" }), form, out, el("div", { class: "grid" }, c1, c2)));
}
