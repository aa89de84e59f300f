import { api } from "../api.js";
import { drawFaces, loadBitmap } from "../draw.js";
import { el, fileInput, fmt, showError } from "../dom.js";

export async function render(main) {
  const out = el("div", { id: "detect-result" });
  const canvas = el("canvas", { id: "detect-canvas", class: "photo" });
  const form = el("form", { class: "row", id: "detect-form" },
    ...fileInput("detect-file", "Photo"),
    el("label", {}, el("input", { type: "checkbox", id: "detect-analyze" }), " all models (landmarks, attributes)"),
    el("button", { type: "submit", id: "detect-run", text: "Find faces" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = document.getElementById("detect-file").files[0];
    if (!file) return showError(out, "choose a photo first");
    out.replaceChildren(el("p", { class: "muted", text: "working…" }));
    const fd = new FormData();
    fd.append("image", file);
    const route = document.getElementById("detect-analyze").checked ? "/v1/analyze" : "/v1/detect";
    try {
      const res = await api.post(route, { form: fd });
      drawFaces(canvas, await loadBitmap(file), res.faces);
      out.replaceChildren(
        el("p", { id: "detect-count", class: "ok", text: `${res.faces.length} face(s) in ${res.image.width}×${res.image.height}` }),
        faceTable(res.faces));
    } catch (err) { showError(out, err); }
  });
  main.append(el("section", { class: "card" }, el("h2", { text: "Detect" }), form, out, canvas));
}

export function faceTable(faces) {
  const rows = faces.map((f, i) => el("tr", {},
    el("td", { text: String(i + 1) }),
    el("td", { text: `${Math.round(f.box.x1)},${Math.round(f.box.y1)} – ${Math.round(f.box.x2)},${Math.round(f.box.y2)}` }),
    el("td", { text: fmt(f.score) }),
    el("td", { text: f.quality ? fmt(f.quality.score, 2) : "–" }),
    el("td", { text: describe(f.attributes || {}) })));
  return el("table", { id: "face-table" },
    el("thead", {}, el("tr", {}, ...["#", "box", "score", "quality", "attributes"].map((t) => el("th", { text: t })))),
    el("tbody", {}, rows));
}

function describe(attrs) {
  const parts = [];
  if (attrs.sex) parts.push(attrs.sex);
  if (attrs.age !== undefined) parts.push(`age ${attrs.age}`);
  if (attrs.liveness) parts.push(attrs.liveness.is_live ? "live" : "spoof?");
  if (attrs.pose) parts.push(`pose ${attrs.pose.map((v) => Math.round(v)).join("/")}`);
  return parts.join(", ") || "–";
}
