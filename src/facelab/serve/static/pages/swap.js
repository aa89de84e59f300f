import { api } from "../api.js";
import { el, fileInput, showError } from "../dom.js";

export async function render(main) {
  const out = el("div", { id: "swap-result" });
  const form = el("form", { class: "row", id: "swap-form" },
    ...fileInput("swap-target", "Target photo"), ...fileInput("swap-source", "Identity photo"),
    el("button", { type: "submit", text: "Swap" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const t = document.getElementById("swap-target").files[0];
    const s = document.getElementById("swap-source").files[0];
    if (!t || !s) return showError(out, "choose two photos");
    const fd = new FormData();
    fd.append("target", t);
    fd.append("source", s);
    out.replaceChildren(el("p", { class: "muted", text: "working…" }));
    try {
      const res = await api.post("/v1/swap", { form: fd, raw: true });
      const url = URL.createObjectURL(await res.blob());
      out.replaceChildren(el("img", { id: "swap-image", class: "photo", src: url, alt: "swapped result" }));
    } catch (err) { showError(out, err); }
  });
  main.append(el("section", { class: "card" }, el("h2", { text: "Swap demo" }),
    el("p", { class: "muted", text: "Needs an inswapper-style model given to the server with --swap-model and a 512-d recogniser pack." }),
    form, out));
}
